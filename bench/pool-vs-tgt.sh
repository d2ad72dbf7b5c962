#!/usr/bin/env bash
# The pool (sanmux's default backend) beside tgt (file-backed LUNs), in one run: unique-data
# sequential write (qemu-img convert of a random file to a fresh LUN), duplicate-data write (the
# same file to a second fresh LUN), 128 KiB sequential reads and 4 KiB random reads of what was
# written (iscsi-perf); ratios sanmux/tgt; for sanmux also the metadata bytes per unique grain and
# the server's peak RSS. With BIG=1, a last phase writes BIG_GIB (8) GiB of unique data to sanmux
# alone and reports its peak RSS and metadata after it. See bench/README.md, "Pool".
#
#   bash bench/pool-vs-tgt.sh                    # 2 GiB, 2 rounds (~4 min here)
#   BENCH_MIB=1024 ROUNDS=3 bash bench/pool-vs-tgt.sh
#   BIG=1 bash bench/pool-vs-tgt.sh              # + 8 GiB written to sanmux (~3 more min)
#   ROUNDS=0 BIG=1 bash bench/pool-vs-tgt.sh    # the 8 GiB phase alone
#   SANMUX_CLI=/elsewhere/dist/cli/main.js bash bench/pool-vs-tgt.sh   # another build
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

BENCH_MIB="${BENCH_MIB:-2048}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-5}"
BIG="${BIG:-0}"
BIG_GIB="${BIG_GIB:-8}"
SANMUX_PORT="${SANMUX_PORT:-3261}"
TGT_PORT="${TGT_PORT:-3262}"
TGT_CONTROL_PORT="${TGT_CONTROL_PORT:-$TGT_PORT}"
STARTUP_TIMEOUT="${STARTUP_TIMEOUT:-60}"
SANMUX_CLI="${SANMUX_CLI:-$ROOT/dist/cli/main.js}"
SANMUX_IQN="iqn.2026-11.io.sanmux:pool-bench"
TGT_IQN="iqn.2026-11.io.sanmux:tgt-pool-bench"
INITIATOR="iqn.2026-11.io.sanmux:bench-initiator"
MiB=$((1024 * 1024))
GRAIN=4096

say() { echo "[pool-vs-tgt] $*" >&2; }
die() {
  say "ERROR: $*"
  exit 1
}

node scripts/ensure-test-tools.mjs >&2
command -v tgtd >/dev/null 2>&1 || die "tgtd is missing (apt-get install -y tgt)"
[[ -f "$SANMUX_CLI" ]] || die "$SANMUX_CLI missing: npm run build (or set SANMUX_CLI)"
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_busy "$TGT_PORT" && die "127.0.0.1:$TGT_PORT is in use (set TGT_PORT)"
port_busy "$SANMUX_PORT" && die "127.0.0.1:$SANMUX_PORT is in use (set SANMUX_PORT)"

WORK="$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/sanmux-pool-bench.XXXXXX")"
TGTD_PID=""
SANMUX_PID=""
tgtadm_() { tgtadm -C "$TGT_CONTROL_PORT" --lld iscsi "$@"; }

stop_sanmux() {
  [[ -n "$SANMUX_PID" ]] || return 0
  if kill -0 "$SANMUX_PID" 2>/dev/null; then
    kill -TERM "$SANMUX_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SANMUX_PID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$SANMUX_PID" 2>/dev/null && kill -KILL "$SANMUX_PID" 2>/dev/null
  fi
  wait "$SANMUX_PID" 2>/dev/null || true
  SANMUX_PID=""
}
stop_tgt() {
  [[ -n "$TGTD_PID" ]] || return 0
  if kill -0 "$TGTD_PID" 2>/dev/null; then
    tgtadm_ --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
    tgtadm_ --op delete --mode system >/dev/null 2>&1 || true
    for _ in $(seq 25); do kill -0 "$TGTD_PID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$TGTD_PID" 2>/dev/null && kill -KILL "$TGTD_PID" 2>/dev/null
  fi
  wait "$TGTD_PID" 2>/dev/null || true
  rm -f "/var/run/tgtd/socket.$TGT_CONTROL_PORT" "/var/run/tgtd/socket.$TGT_CONTROL_PORT.lock"
  TGTD_PID=""
}
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_sanmux
  stop_tgt
  if [[ "${KEEP_TMP:-0}" == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_port() { # PORT PID NAME LOG [READY_REGEX]
  local port=$1 pid=$2 name=$3 logf=$4 ready=${5:-}
  local deadline=$((SECONDS + STARTUP_TIMEOUT))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || { tail -n 40 "$logf" >&2; return 1; }
    if [[ -z "$ready" ]] || grep -q "$ready" "$logf" 2>/dev/null; then
      port_busy "$port" && return 0
    fi
    sleep 0.2
  done
  say "$name did not listen on 127.0.0.1:$port"
  tail -n 40 "$logf" >&2
  return 1
}

# start_tgt DIR SIZE_BYTES: LUNs 1 and 2 (LUN 0 is tgt's controller), sparse files.
start_tgt() {
  local dir=$1 size=$2
  mkdir -p "$dir"
  truncate -s "$size" "$dir/lun1.img" "$dir/lun2.img"
  tgtd -f -C "$TGT_CONTROL_PORT" --iscsi "portal=127.0.0.1:$TGT_PORT" >"$dir/tgtd.log" 2>&1 &
  TGTD_PID=$!
  local deadline=$((SECONDS + STARTUP_TIMEOUT))
  until tgtadm_ --op show --mode target >/dev/null 2>&1; do
    kill -0 "$TGTD_PID" 2>/dev/null || die "tgtd exited during startup"
    ((SECONDS < deadline)) || die "tgtd's management socket did not come up"
    sleep 0.1
  done
  tgtadm_ --op new --mode target --tid 1 --targetname "$TGT_IQN"
  tgtadm_ --op new --mode logicalunit --tid 1 --lun 1 --backing-store "$dir/lun1.img"
  tgtadm_ --op new --mode logicalunit --tid 1 --lun 2 --backing-store "$dir/lun2.img"
  tgtadm_ --op bind --mode target --tid 1 --initiator-address ALL
  wait_port "$TGT_PORT" "$TGTD_PID" tgtd "$dir/tgtd.log" || die "tgtd did not start"
}

# start_sanmux DIR SIZE_MIB: volumes a (LUN 0) and b (LUN 1) in the pool (the default backend).
start_sanmux() {
  local dir=$1 mib=$2
  mkdir -p "$dir/data"
  cat >"$dir/sanmux.yaml" <<EOF
target: $SANMUX_IQN
agents:
  - name: bench
    initiators: [$INITIATOR]
volumes:
  - { name: a, size: ${mib}MiB, block_size: 512 }
  - { name: b, size: ${mib}MiB, block_size: 512 }
mappings:
  - { agent: bench, lun: 0, volume: a, mode: rw }
  - { agent: bench, lun: 1, volume: b, mode: rw }
EOF
  SANMUX_MASTER_KEY="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    node "$SANMUX_CLI" serve --data "$dir/data" --config "$dir/sanmux.yaml" \
    --portal "127.0.0.1:$SANMUX_PORT" >"$dir/sanmux.log" 2>&1 &
  SANMUX_PID=$!
  wait_port "$SANMUX_PORT" "$SANMUX_PID" sanmux "$dir/sanmux.log" '"msg":"listening"' ||
    die "sanmux did not start"
  # Which AES-GCM / HMAC code the pool runs on (native addon or node:crypto): it decides the CPU.
  say "sanmux $(grep -o '"crypto":"[^"]*"' "$dir/sanmux.log" | head -n1)"
  # The read cache's size (config pool.cache_size; default an eighth of the memory): reads that
  # come back to what was read before are served from it (docs/performance.md "Read cache").
  say "sanmux read cache $(grep -o '"byVolume":[0-9]*,"byChunk":[0-9]*' "$dir/sanmux.log" | head -n1)"
}

opts() { # opts NAME LUN → qemu --image-opts string
  local port iqn
  if [[ $1 == tgt ]]; then port=$TGT_PORT iqn=$TGT_IQN; else port=$SANMUX_PORT iqn=$SANMUX_IQN; fi
  echo "driver=iscsi,transport=tcp,portal=127.0.0.1:$port,target=$iqn,lun=$2,initiator-name=$INITIATOR"
}
url() { # url NAME LUN
  if [[ $1 == tgt ]]; then echo "iscsi://127.0.0.1:$TGT_PORT/$TGT_IQN/$2"; else echo "iscsi://127.0.0.1:$SANMUX_PORT/$SANMUX_IQN/$2"; fi
}

# convert NAME LUN FILE → MiB/s of qemu-img convert (ends with its SYNCHRONIZE CACHE).
convert() {
  local name=$1 lun=$2 file=$3 bytes t0 t1
  bytes=$(stat -c %s "$file")
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086 # CONVERT_FLAGS: words
  qemu-img convert -n -f raw -t none ${CONVERT_FLAGS:-} --target-image-opts "$file" "$(opts "$name" "$lun")" >&2 ||
    die "qemu-img convert to $name LUN $lun failed"
  t1=$(date +%s.%N)
  awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.1f", b / 1048576 / (z - a) }'
}

# perf NAME LUN DEPTH BLOCKS [-r] → IOPS average of iscsi-perf over DURATION s.
perf() {
  local name=$1 lun=$2 depth=$3 blocks=$4 out
  shift 4
  out=$(timeout $((DURATION + 30)) iscsi-perf -i "$INITIATOR" -m "$depth" -b "$blocks" -t "$DURATION" "$@" "$(url "$name" "$lun")" 2>&1) ||
    true
  grep -o 'iops average [0-9]*' <<<"$out" | tail -n1 | awk '{ print $3 }' | grep . ||
    die "iscsi-perf on $name LUN $lun failed: $(tail -n3 <<<"$out")"
}

# CPU time of the sanmux server so far (all threads), in clock ticks (USER_HZ, 100 per second).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SANMUX_PID/stat"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
meta_stats() { node bench/pool-lmdb-stats.mjs "$1/data/pool/meta"; }
# Bytes stored in containers (the pool's physical bytes on disk).
container_bytes() { du -sb "$1/data/pool/devices" | awk '{ print $1 }'; }
# Bytes of the map log (segments + checkpoint, src/pool/meta/README.md "Map log"): what makes the
# block maps rebuildable; on disk beside the LMDB figures, reported apart from them.
maplog_bytes() { du -sb "$1/data/pool/maplog" 2>/dev/null | awk '{ print $1 }'; }

# Every round starts with the page cache dropped (as root), so that each starts from the same
# memory state. On this VM (virtio-balloon free page reporting) memory that the guest has not
# used lately costs a host fault on first touch: a page cache grown over earlier rounds' files
# made sanmux's cold reads 4x slower (643 against 2341 MiB/s with 9 GiB of other files cached),
# and tgt's buffered writes run at 200-230 or 330-555 MiB/s depending on it (bench/README.md).
drop_page_cache() {
  sync
  if [[ -w /proc/sys/vm/drop_caches ]]; then
    echo 1 >/proc/sys/vm/drop_caches
  else
    say "cannot drop the page cache (not root): rounds may differ more"
  fi
}

say "$(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); ${BENCH_MIB} MiB of random data, ${ROUNDS} round(s), reads ${DURATION} s"
SRC="$WORK/random.bin"
((ROUNDS > 0)) && head -c $((BENCH_MIB * MiB)) /dev/urandom >"$SRC"
GRAINS=$((BENCH_MIB * MiB / GRAIN))

declare -A R   # R[test,target,round]
declare -A CPU # CPU[test,round]: sanmux server CPU ticks during the phase
RESULTS="$WORK/results.txt"
: >"$RESULTS"
META_LINE=""
for round in $(seq "$ROUNDS"); do
  # Alternate who goes first in each phase from round to round.
  if ((round % 2)); then order=(tgt sanmux); else order=(sanmux tgt); fi
  RDIR="$WORK/round$round"
  drop_page_cache
  start_tgt "$RDIR/tgt" $((BENCH_MIB * MiB))
  start_sanmux "$RDIR/sanmux" "$BENCH_MIB"
  cat "$SRC" >/dev/null # source in the page cache for both
  for t in "${order[@]}"; do
    if [[ $t == tgt ]]; then lun=1; else lun=0; fi
    c0=$(cpu_ticks)
    R[unique,$t,$round]=$(convert "$t" "$lun" "$SRC")
    [[ $t == sanmux ]] && CPU[unique,$round]=$(($(cpu_ticks) - c0))
    say "round $round: $t unique write ${R[unique,$t,$round]} MiB/s"
  done
  if [[ -z "$META_LINE" ]]; then
    META1=$(meta_stats "$RDIR/sanmux")
    MAPLOG1=$(maplog_bytes "$RDIR/sanmux")
  fi
  for t in "${order[@]}"; do
    if [[ $t == tgt ]]; then lun=2; else lun=1; fi
    c0=$(cpu_ticks)
    R[dup,$t,$round]=$(convert "$t" "$lun" "$SRC")
    [[ $t == sanmux ]] && CPU[dup,$round]=$(($(cpu_ticks) - c0))
    say "round $round: $t duplicate write ${R[dup,$t,$round]} MiB/s"
  done
  # The first second of reading the second LUN, never read before: sanmux's read cache is cold
  # (its figure is the pool's own read path: LMDB, pread, GCM). Reported, no floor.
  for t in "${order[@]}"; do
    if [[ $t == tgt ]]; then lun=2; else lun=1; fi
    iops=$(DURATION=1 perf "$t" "$lun" 8 256)
    R[coldread,$t,$round]=$(awk -v i="$iops" 'BEGIN { printf "%.1f", i * 131072 / 1048576 }')
    say "round $round: $t seq read, first second, 2nd LUN ${R[coldread,$t,$round]} MiB/s"
  done
  for t in "${order[@]}"; do
    if [[ $t == tgt ]]; then lun=1; else lun=0; fi
    iops=$(perf "$t" "$lun" 8 256)
    R[seqread,$t,$round]=$(awk -v i="$iops" 'BEGIN { printf "%.1f", i * 131072 / 1048576 }')
    say "round $round: $t seq read ${R[seqread,$t,$round]} MiB/s"
  done
  for t in "${order[@]}"; do
    if [[ $t == tgt ]]; then lun=1; else lun=0; fi
    R[randread,$t,$round]=$(perf "$t" "$lun" 32 8 -r)
    say "round $round: $t rand read ${R[randread,$t,$round]} IOPS"
  done
  HWM[round]=$(hwm_kib "$SANMUX_PID")
  if [[ -z "$META_LINE" ]]; then
    META_LINE=$(meta_stats "$RDIR/sanmux")
    MAPLOG2=$(maplog_bytes "$RDIR/sanmux")
    PHYS=$(container_bytes "$RDIR/sanmux")
  fi
  stop_sanmux
  stop_tgt
  rm -rf "$RDIR"
done

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
row() { # row TEST LABEL UNIT FLOOR
  local test=$1 label=$2 unit=$3 floor=$4 tg sx tgs sxs
  tgs=$(for r in $(seq "$ROUNDS"); do echo "${R[$test,tgt,$r]}"; done)
  sxs=$(for r in $(seq "$ROUNDS"); do echo "${R[$test,sanmux,$r]}"; done)
  tg=$(median <<<"$tgs")
  sx=$(median <<<"$sxs")
  awk -v l="$label" -v u="$unit" -v t="$tg" -v s="$sx" -v f="$floor" -v ts="$(tr '\n' ' ' <<<"$tgs")" -v ss="$(tr '\n' ' ' <<<"$sxs")" \
    'BEGIN { r = s / t; printf "| %s | %s | %s | %s | %.2f | %s %s | %s / %s |\n", l, u, t, s, r, (r >= f ? "≥" : "<"), f, ts, ss }'
}
perGrain() { # perGrain JSON FIELD
  node -e 'const j = JSON.parse(process.argv[1]); const g = Number(process.argv[2]); const f = process.argv[3];
    const v = f.includes(".") ? f.split(".").reduce((o, k) => o[k], j) : j[f]; console.log((v / g).toFixed(1))' "$1" "$GRAINS" "$2"
}

((ROUNDS > 0)) && {
  echo
  echo "sanmux pool vs tgt $(tgtd --version 2>/dev/null | head -n1) ($(nproc) CPUs, load now $(cut -d' ' -f1-3 /proc/loadavg)); ${BENCH_MIB} MiB random data; qemu-img convert ${CONVERT_FLAGS:-(in-order writes)}; median of ${ROUNDS} round(s)"
  echo
  echo "| test | unit | tgt | sanmux | sanmux/tgt | floor | rounds tgt / sanmux |"
  echo "| --- | --- | ---: | ---: | ---: | --- | --- |"
  row unique "unique write (qemu-img convert)" MiB/s 0.5
  row dup "duplicate write (same data, 2nd LUN)" MiB/s 1.0
  row seqread "128 KiB seq read QD8 (iscsi-perf)" MiB/s 0.8
  row randread "4 KiB rand read QD32 (iscsi-perf)" IOPS 0.8
  row coldread "128 KiB seq read QD8, 1st second of the 2nd LUN (no floor: sanmux cache cold)" MiB/s 0
  echo
  echo "sanmux metadata per unique grain ($GRAINS grains), round 1 (floor ≤ 150 B, on LMDB pages in use):"
  echo
  echo "| after | LMDB pages in use | LMDB file size | fp | map | journal + dead | map log (apart) |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  for pair in "unique write|${MAPLOG1:-0}|$META1" "both writes|${MAPLOG2:-0}|$META_LINE"; do
    j=${pair#*|*|}
    ml=${pair#*|}
    ml=${ml%%|*}
    echo "| ${pair%%|*} | $(perGrain "$j" usedBytes) B | $(perGrain "$j" fileBytes) B | $(perGrain "$j" dbs.fp.bytes) B | $(perGrain "$j" dbs.map.bytes) B | $(node -e 'const j=JSON.parse(process.argv[1]);console.log(((j.dbs.journal.bytes+j.dbs.dead.bytes)/Number(process.argv[2])).toFixed(1))' "$j" "$GRAINS") B | $(awk -v b="$ml" -v g="$GRAINS" 'BEGIN { printf "%.1f", b / g }') B |"
  done
  echo
  echo "sanmux server CPU per grain written (all threads; what load hardly changes), per round: unique $(for r in $(seq "$ROUNDS"); do awk -v t="${CPU[unique,$r]}" -v g="$GRAINS" 'BEGIN { printf "%.1f µs ", t * 10000 / g }'; done)/ duplicate $(for r in $(seq "$ROUNDS"); do awk -v t="${CPU[dup,$r]}" -v g="$GRAINS" 'BEGIN { printf "%.1f µs ", t * 10000 / g }'; done)"
  echo
  echo "sanmux containers: $(awk -v p="$PHYS" -v b=$((BENCH_MIB * MiB)) 'BEGIN { printf "%.3f", p / b }')× the unique data; peak RSS (VmHWM) per round: $(for r in $(seq "$ROUNDS"); do printf '%s MiB ' $((HWM[r] / 1024)); done)"
} | tee -a "$RESULTS"

if [[ "$BIG" == 1 ]]; then
  say "big phase: ${BIG_GIB} GiB of unique data to sanmux alone"
  rm -f "$SRC"
  BDIR="$WORK/big"
  drop_page_cache
  start_sanmux "$BDIR" $((BIG_GIB * 1024))
  BIGSRC="$WORK/big.bin"
  head -c $((BIG_GIB * 1024 * MiB)) /dev/urandom >"$BIGSRC"
  rate=$(convert sanmux 0 "$BIGSRC")
  hwm=$(hwm_kib "$SANMUX_PID")
  j=$(meta_stats "$BDIR")
  phys=$(container_bytes "$BDIR")
  mlog=$(maplog_bytes "$BDIR")
  GRAINS=$((BIG_GIB * 1024 * MiB / GRAIN))
  {
    echo
    echo "big: ${BIG_GIB} GiB unique written to sanmux at $rate MiB/s; peak RSS (VmHWM) $((hwm / 1024)) MiB (floor < 1024 MiB);" \
      "metadata $(perGrain "$j" usedBytes) B/grain in use (fp $(perGrain "$j" dbs.fp.bytes), map $(perGrain "$j" dbs.map.bytes), journal $(perGrain "$j" dbs.journal.bytes)), $(perGrain "$j" fileBytes) B/grain file size;" \
      "map log $(awk -v b="${mlog:-0}" -v g="$GRAINS" 'BEGIN { printf "%.1f", b / g }') B/grain;" \
      "containers $(awk -v p="$phys" -v b=$((BIG_GIB * 1024 * MiB)) 'BEGIN { printf "%.3f", p / b }')× the data"
  } | tee -a "$RESULTS"
  stop_sanmux
  rm -f "$BIGSRC"
fi
