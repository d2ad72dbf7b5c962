#!/usr/bin/env bash
# sanmux alone, phase by phase, as bench/pool-vs-tgt.sh drives it: a fresh pool with volumes a
# (LUN 0) and b (LUN 1), MIB MiB of random data written to a (unique) then to b (duplicate) with
# qemu-img convert, then the 128 KiB sequential reads of READS. For each phase: MiB/s and the
# server's CPU time (all threads), and for reads the rate of every second and the CPU per command:
# what to compare between two builds when a change is about one phase (bench/README.md, "Pool,
# phase by phase"). A measurement, not a test.
#
#   bash bench/pool-phases.sh                          # 1024 MiB; reads "1:1 0:5 0:5"
#   READS="0:5 0:5 1:5" MIB=512 bash bench/pool-phases.sh
#   CACHE_MIB=0 bash bench/pool-phases.sh              # pool.cache_size 0: every read is cold
#   SANMUX_CLI=/elsewhere/dist/cli/main.js bash bench/pool-phases.sh   # another build
#
# READS: LUN:SECONDS words, in order (LUN 0 is a, 1 is b). NODE_OPTIONS reaches the server (e.g.
# --cpu-prof, --perf-basic-prof for `perf record -p`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MIB="${MIB:-1024}"
READS="${READS:-1:1 0:5 0:5}"
PORT="${PORT:-3263}"
SANMUX_CLI="${SANMUX_CLI:-$ROOT/dist/cli/main.js}"
IQN="iqn.2026-11.io.sanmux:pool-phases"
INITIATOR="iqn.2026-11.io.sanmux:phases-initiator"

say() { echo "[pool-phases] $*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}

node scripts/ensure-test-tools.mjs >&2
[[ -f "$SANMUX_CLI" ]] || die "$SANMUX_CLI missing: npm run build (or set SANMUX_CLI)"
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "127.0.0.1:$PORT is in use (set PORT)"

WORK="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/sanmux-pool-phases.XXXXXX")"
PID=""
cleanup() {
  if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/data"
{
  echo "target: $IQN"
  echo "agents:"
  echo "  - name: bench"
  echo "    initiators: [$INITIATOR]"
  echo "volumes:"
  echo "  - { name: a, size: ${MIB}MiB, block_size: 512 }"
  echo "  - { name: b, size: ${MIB}MiB, block_size: 512 }"
  echo "mappings:"
  echo "  - { agent: bench, lun: 0, volume: a, mode: rw }"
  echo "  - { agent: bench, lun: 1, volume: b, mode: rw }"
  if [[ -n "${CACHE_MIB:-}" ]]; then
    echo "pool:"
    if ((CACHE_MIB == 0)); then echo "  cache_size: off"; else echo "  cache_size: ${CACHE_MIB}MiB"; fi
  fi
} >"$WORK/sanmux.yaml"
head -c $((MIB * 1024 * 1024)) /dev/urandom >"$WORK/random.bin"

SANMUX_MASTER_KEY="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
  node "$SANMUX_CLI" serve --data "$WORK/data" --config "$WORK/sanmux.yaml" \
  --portal "127.0.0.1:$PORT" >"$WORK/sanmux.log" 2>&1 &
PID=$!
for _ in $(seq 300); do
  grep -q '"msg":"listening"' "$WORK/sanmux.log" 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || { tail -n 20 "$WORK/sanmux.log" >&2; die "sanmux exited"; }
  sleep 0.2
done
grep -q '"msg":"listening"' "$WORK/sanmux.log" || die "sanmux did not start"
say "server pid $PID, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), $MIB MiB, reads: $READS"

# Server CPU time so far (all threads), in clock ticks (USER_HZ, 100 per second).
ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }

for lun in 0 1; do
  what=unique
  ((lun == 1)) && what=duplicate
  c0=$(ticks)
  t0=$(date +%s.%N)
  qemu-img convert -n -f raw -t none --target-image-opts "$WORK/random.bin" \
    "driver=iscsi,transport=tcp,portal=127.0.0.1:$PORT,target=$IQN,lun=$lun,initiator-name=$INITIATOR" ||
    die "qemu-img convert to LUN $lun failed"
  t1=$(date +%s.%N)
  c1=$(ticks)
  awk -v m="$MIB" -v a="$t0" -v b="$t1" -v c=$((c1 - c0)) -v w="$what" -v l="$lun" \
    'BEGIN { printf "%-9s write, LUN %d: %7.1f MiB/s, server CPU %6.2f s (%.1f µs per grain)\n", w, l, m / (b - a), c / 100, c * 10000 / (m * 256) }'
done

for spec in $READS; do
  lun=${spec%%:*}
  secs=${spec##*:}
  c0=$(ticks)
  out=$(iscsi-perf -i "$INITIATOR" -t "$secs" -b 256 -m 8 "iscsi://127.0.0.1:$PORT/$IQN/$lun" 2>&1) ||
    die "iscsi-perf on LUN $lun failed: $(tail -n 3 <<<"$out")"
  c1=$(ticks)
  iops=$(grep -o 'iops average [0-9]*' <<<"$out" | tail -n 1 | awk '{ print $3 }')
  # iscsi-perf prints a line per second ("iops current N"); the last, partial second is not.
  per=$(grep -o 'iops current [0-9]*' <<<"$out" | awk '{ printf "%d ", $3 / 8 }' || true)
  awk -v i="$iops" -v c=$((c1 - c0)) -v s="$secs" -v l="$lun" -v p="$per" \
    'BEGIN { printf "read LUN %d, %d s: %7.1f MiB/s, %5.1f µs server CPU per command; per second: %sMiB/s\n", l, s, i / 8, c * 10000 / (i * s), p }'
done
echo "peak RSS (VmHWM) $(awk '/^VmHWM:/ { print int($2 / 1024) }' "/proc/$PID/status") MiB"
