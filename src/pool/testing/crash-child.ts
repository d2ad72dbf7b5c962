/**
 * Crash-test worker for the pool (run with vite-node by crash.test.ts, then killed with SIGKILL
 * at a random moment): concurrent writes (4096- and 512-byte volumes, so read-modify-writes
 * too), unmaps, copies by reference and GC with compaction, with tiny containers so that seals,
 * compactions and container deletions happen all the time. Every sector it writes is self-describing (`versioned`), so the
 * parent can tell any version from garbage. After every 5th round it writes a marker grain,
 * flushes and prints `synced <version>`; every 7th round it writes one with FUA and prints
 * `fua <version>`. Versions grow across restarts (they start from the clock).
 *
 * Usage: crash-child.ts <dir> <key hex> <seed>
 */
import { pino } from "pino";
import { masterKeyFromBytes } from "../../crypto/index.js";
import { createLogger } from "../../util/log.js";
import { xorshift32 } from "../meta/testing/helpers.js";
import { Pool } from "../pool.js";
import { MARKER_GRAIN, versioned } from "./helpers.js";

const [dir, keyHex, seedArg] = process.argv.slice(2);
if (!dir || !keyHex) throw new Error("usage: crash-child.ts <dir> <key hex> <seed>");
const rand = xorshift32(Number(seedArg ?? 1)); // reproducible per seed

const pool = await Pool.open({
  dir,
  masterKey: masterKeyFromBytes(Buffer.from(keyHex, "hex")),
  sealBytes: 96 * 1024,
  // SANMUX_CRASH_LOG=1: the pool's log on stderr, for debugging a failure.
  logger:
    process.env.SANMUX_CRASH_LOG === "1"
      ? createLogger({ level: "debug", destination: pino.destination(2) })
      : undefined,
});
const big = await pool.ensureVolume({ name: "big", size: 4 * 1024 * 1024, blockSize: 4096 });
const small = await pool.ensureVolume({ name: "small", size: 4 * 1024 * 1024, blockSize: 512 });
process.stdout.write("ready\n");

const GRAINS = 512;
let version = Date.now() * 1000; // unique across restarts of the worker
for (let round = 1; ; round++) {
  const ops: Promise<unknown>[] = [];
  for (let i = 0; i < 12; i++) {
    const kind = rand(20);
    const first = rand(GRAINS - 8);
    const n = 1 + rand(8);
    if (kind < 12) {
      const v = rand(2) === 0 ? big : small;
      const grains = Array.from({ length: n }, () =>
        versioned(rand(4) === 0 ? rand(3) : version++),
      );
      ops.push(v.write((first * 4096) / v.blockSize, Buffer.concat(grains)));
    } else if (kind < 15) {
      // A sector inside a grain of the 512-byte volume: read-modify-write.
      const sector = rand(8);
      const grain = versioned(version++);
      ops.push(small.write(first * 8 + sector, grain.subarray(sector * 512, (sector + 1) * 512)));
    } else if (kind < 17) {
      const v = rand(2) === 0 ? big : small;
      ops.push(v.unmap((first * 4096) / v.blockSize, (n * 4096) / v.blockSize));
    } else if (kind < 19) {
      const from = rand(GRAINS - 8);
      ops.push(big.copyFrom(big, from, first, n));
    } else {
      // Compaction too (containers a fifth dead or more), in batches of a few records, so that
      // kills land between a batch's copies, its relocation and the container's deletion.
      ops.push(pool.gc({ minDeadFraction: rand(2) === 0 ? 0.5 : 0.2, batchBytes: 12 * 1024 }));
    }
  }
  await Promise.all(ops);
  if (round % 5 === 0) {
    const marker = version++;
    await big.write(MARKER_GRAIN, versioned(marker));
    await pool.flush();
    process.stdout.write(`synced ${marker}\n`);
  }
  if (round % 7 === 0) {
    const marker = version++;
    await small.write(MARKER_GRAIN * 8, versioned(marker), { fua: true });
    process.stdout.write(`fua ${marker}\n`);
  }
}
