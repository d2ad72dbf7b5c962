#!/usr/bin/env bash
# Benchmarks sanmux against Linux's user-space iSCSI target (tgt) on this machine, side by side:
# starts tgtd on 127.0.0.1:$TGT_PORT and sanmux on 127.0.0.1:$SANMUX_PORT, each with a LUN of the
# same size, then runs bench/measure.mjs against both, alternating. See bench/README.md.
#
#   npm run bench                 # builds, then runs this
#   TGT_ONLY=1 bash bench/vs-tgt.sh
#   SANMUX_ONLY=1 ROUNDS=7 DURATION=10 bash bench/vs-tgt.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SANMUX_PORT="${SANMUX_PORT:-3261}"
TGT_PORT="${TGT_PORT:-3262}"
SANMUX_IQN="iqn.2026-11.io.sanmux:bench"
SANMUX_LUN=0
TGT_IQN="iqn.2026-11.io.sanmux:tgt-bench"
TGT_LUN=1 # tgt reserves LUN 0 for its controller device
INITIATOR="iqn.2026-11.io.sanmux:bench-initiator"
SIZE_BYTES=$((1024 * 1024 * 1024)) # must match "size: 1GiB" in the sanmux config below
# tgtd's management socket is /var/run/tgtd/socket.<N>; use our own N so that a tgtd started by
# the system (N=0) or another run is left alone.
TGT_CONTROL_PORT="${TGT_CONTROL_PORT:-$TGT_PORT}"
STARTUP_TIMEOUT="${STARTUP_TIMEOUT:-60}"

RUN_TGT=1
RUN_SANMUX=1
if [[ "${TGT_ONLY:-0}" == 1 && "${SANMUX_ONLY:-0}" == 1 ]]; then
  echo "vs-tgt: TGT_ONLY=1 and SANMUX_ONLY=1 together leave nothing to measure" >&2
  exit 2
fi
[[ "${TGT_ONLY:-0}" == 1 ]] && RUN_SANMUX=0
[[ "${SANMUX_ONLY:-0}" == 1 ]] && RUN_TGT=0

say() { echo "[vs-tgt] $*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}

# ---------------------------------------------------------------------------------------------
# Tools: libiscsi-bin, qemu-utils and qemu-block-extra (shared with the test suite), and tgt.
node scripts/ensure-test-tools.mjs >&2
if ((RUN_TGT)) && ! command -v tgtd >/dev/null 2>&1; then
  if [[ "$(id -u)" != 0 ]]; then
    die "tgtd is missing; install Debian's tgt package (apt-get install -y tgt) or run with SANMUX_ONLY=1"
  fi
  say "installing tgt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q tgt >&2 || { apt-get update -q >&2 && apt-get install -y -q tgt >&2; }
  command -v tgtd >/dev/null 2>&1 || die "tgtd still missing after installing tgt"
fi
if ((RUN_SANMUX)) && [[ ! -f dist/cli/main.js ]]; then
  say "dist/cli/main.js missing; running npm run build"
  npm run build >&2 || die "npm run build failed"
  [[ -f dist/cli/main.js ]] || die "the build produced no dist/cli/main.js (sanmux's CLI)"
fi

port_busy() { # true when something accepts connections on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
((RUN_TGT)) && port_busy "$TGT_PORT" && die "127.0.0.1:$TGT_PORT is already in use (set TGT_PORT)"
((RUN_SANMUX)) && port_busy "$SANMUX_PORT" && die "127.0.0.1:$SANMUX_PORT is already in use (set SANMUX_PORT)"

# ---------------------------------------------------------------------------------------------
WORK="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/sanmux-bench.XXXXXX")"
TGTD_PID=""
SANMUX_PID=""
TGT_STARTED=0
MEASURE_PID=""

tgtadm_() { tgtadm -C "$TGT_CONTROL_PORT" --lld iscsi "$@"; }

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  if [[ -n "$MEASURE_PID" ]] && kill -0 "$MEASURE_PID" 2>/dev/null; then
    kill -TERM "$MEASURE_PID" 2>/dev/null # it kills its own iscsi-perf / qemu-img
    wait "$MEASURE_PID" 2>/dev/null
  fi
  if [[ -n "$SANMUX_PID" ]] && kill -0 "$SANMUX_PID" 2>/dev/null; then
    kill -TERM "$SANMUX_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$SANMUX_PID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$SANMUX_PID" 2>/dev/null && { say "sanmux did not stop on SIGTERM; killing it"; kill -KILL "$SANMUX_PID"; }
    wait "$SANMUX_PID" 2>/dev/null
  fi
  if [[ -n "$TGTD_PID" ]] && kill -0 "$TGTD_PID" 2>/dev/null; then
    # tgtd ignores SIGTERM; it stops on "delete system" once its targets are gone.
    if ((TGT_STARTED)); then
      tgtadm_ --op delete --mode target --tid 1 --force >/dev/null 2>&1
      tgtadm_ --op delete --mode system >/dev/null 2>&1
    fi
    for _ in $(seq 25); do kill -0 "$TGTD_PID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$TGTD_PID" 2>/dev/null && kill -KILL "$TGTD_PID"
    wait "$TGTD_PID" 2>/dev/null
  fi
  if [[ -n "$TGTD_PID" ]]; then
    rm -f "/var/run/tgtd/socket.$TGT_CONTROL_PORT" "/var/run/tgtd/socket.$TGT_CONTROL_PORT.lock"
  fi
  if [[ "${KEEP_TMP:-0}" == 1 ]]; then
    say "kept $WORK (logs and backing files)"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_port() { # wait_port PORT PID NAME LOG [READY_REGEX]
  local port=$1 pid=$2 name=$3 logf=$4 ready=${5:-}
  local deadline=$((SECONDS + STARTUP_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "$name exited during startup; its log:"
      tail -n 40 "$logf" >&2
      return 1
    fi
    if [[ -n "$ready" ]] && grep -q "$ready" "$logf" 2>/dev/null; then
      port_busy "$port" && return 0
    elif port_busy "$port"; then
      return 0
    fi
    sleep 0.2
  done
  say "$name did not listen on 127.0.0.1:$port within ${STARTUP_TIMEOUT}s; its log:"
  tail -n 40 "$logf" >&2
  return 1
}

TARGETS_JSON=""
add_target() { # add_target NAME PORT IQN LUN PID LOG
  local t
  t=$(printf '{"name":"%s","portal":"127.0.0.1:%s","iqn":"%s","lun":%s,"pid":%s,"log":"%s"}' "$@")
  TARGETS_JSON="${TARGETS_JSON:+$TARGETS_JSON,}$t"
}

start_tgt() {
  truncate -s "$SIZE_BYTES" "$WORK/tgt-lun.img" # sparse, like a fresh sanmux volume
  # -f: foreground (logs to stderr). It warns about RDMA, oom_score_adj and nr_open in a container;
  # harmless.
  tgtd -f -C "$TGT_CONTROL_PORT" --iscsi "portal=127.0.0.1:$TGT_PORT" >"$WORK/tgtd.log" 2>&1 &
  TGTD_PID=$!
  local deadline=$((SECONDS + STARTUP_TIMEOUT))
  until tgtadm_ --op show --mode target >/dev/null 2>&1; do
    kill -0 "$TGTD_PID" 2>/dev/null || { cat "$WORK/tgtd.log" >&2; die "tgtd exited during startup"; }
    ((SECONDS < deadline)) || die "tgtd's management socket did not come up"
    sleep 0.1
  done
  TGT_STARTED=1
  tgtadm_ --op new --mode target --tid 1 --targetname "$TGT_IQN"
  tgtadm_ --op new --mode logicalunit --tid 1 --lun "$TGT_LUN" --backing-store "$WORK/tgt-lun.img"
  tgtadm_ --op bind --mode target --tid 1 --initiator-address ALL
  wait_port "$TGT_PORT" "$TGTD_PID" tgtd "$WORK/tgtd.log" || die "tgtd did not start"
  say "tgtd $(tgtd --version 2>/dev/null | head -n1 || true) pid $TGTD_PID on 127.0.0.1:$TGT_PORT"
  add_target tgt "$TGT_PORT" "$TGT_IQN" "$TGT_LUN" "$TGTD_PID" "$WORK/tgtd.log"
}

start_sanmux() {
  mkdir -p "$WORK/sanmux-data"
  cat >"$WORK/sanmux.yaml" <<EOF
target: $SANMUX_IQN
agents:
  - name: bench
    initiators: [$INITIATOR]
volumes:
  - { name: bench, size: 1GiB, block_size: 512 }
mappings:
  - { agent: bench, lun: $SANMUX_LUN, volume: bench, mode: rw }
EOF
  node dist/cli/main.js serve --data "$WORK/sanmux-data" --config "$WORK/sanmux.yaml" \
    --portal "127.0.0.1:$SANMUX_PORT" >"$WORK/sanmux.log" 2>&1 &
  SANMUX_PID=$!
  wait_port "$SANMUX_PORT" "$SANMUX_PID" sanmux "$WORK/sanmux.log" '"msg":"listening"' ||
    die "sanmux did not start"
  say "sanmux $(git describe --always --dirty 2>/dev/null || echo '?') pid $SANMUX_PID on 127.0.0.1:$SANMUX_PORT"
  add_target sanmux "$SANMUX_PORT" "$SANMUX_IQN" "$SANMUX_LUN" "$SANMUX_PID" "$WORK/sanmux.log"
}

# (Not "((RUN_TGT)) && start_tgt": bash ignores set -e inside a function called from a && list.)
if ((RUN_TGT)); then start_tgt; fi
if ((RUN_SANMUX)); then start_sanmux; fi

say "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); measuring: ROUNDS=${ROUNDS:-5} DURATION=${DURATION:-5}s"
rc=0
# In the background with `wait`, so that a SIGTERM/SIGINT sent to this script runs the cleanup at
# once instead of after the whole measurement (bash delays traps while a foreground child runs).
BENCH_TARGETS="[$TARGETS_JSON]" BENCH_INITIATOR="$INITIATOR" BENCH_SIZE="$SIZE_BYTES" \
  node bench/measure.mjs &
MEASURE_PID=$!
wait "$MEASURE_PID" || rc=$?
MEASURE_PID=""
if ((rc != 0)); then
  say "some measurements failed (exit $rc); rerun with KEEP_TMP=1 to keep the servers' logs in $WORK"
  if [[ -n "$SANMUX_PID" ]]; then
    say "sanmux log tail:"
    tail -n 20 "$WORK/sanmux.log" >&2 || true
  fi
fi
exit "$rc"
