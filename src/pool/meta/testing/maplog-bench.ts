/**
 * Map log measurement (README.md "Map log", figures): the write path's cost with and without the
 * log, its bytes per grain, a checkpoint's bytes per grain, and the time to rebuild the maps.
 * A measurement, not a test. Run: node node_modules/vite-node/vite-node.mjs
 *   src/pool/meta/testing/maplog-bench.ts [grains] [rounds] [--nosync]
 */
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RefcountApplier } from "../applier.js";
import { MetaStore } from "../store.js";
import { xorshift32 } from "./helpers.js";

const GRAINS = Number(process.argv[2] ?? 131072);
const ROUNDS = Number(process.argv[3] ?? 2);
const NOSYNC = process.argv.includes("--nosync");
const QD = 32;
const RANDOM = Math.min(GRAINS, 20000);
const fingerprint = (n: number) => createHash("sha256").update(`bench:${n}`).digest();
const loc = (n: number) => ({
  containerId: Math.floor(n / 8192),
  offset: (n % 8192) * 2300,
  storedLength: 2300,
  logicalLength: 4096,
});
let rand = xorshift32(12345);

async function lanes(total: number, op: (i: number) => Promise<unknown>) {
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  let next = 0;
  await Promise.all(
    Array.from({ length: QD }, async () => {
      while (next < total) await op(next++);
    }),
  );
  const cpu = process.cpuUsage(c0);
  return {
    s: Number(process.hrtime.bigint() - t0) / 1e9,
    cpuUs: cpu.user + cpu.system,
  };
}

function logBytes(dir: string, ext: string) {
  return readdirSync(dir)
    .filter((f) => f.endsWith(ext))
    .reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

async function once(withLog: boolean) {
  const root = mkdtempSync(join(tmpdir(), "sanmux-maplog-bench-"));
  try {
    const logDir = join(root, "maplog");
    const store = await MetaStore.open({
      path: join(root, "meta"),
      noSync: NOSYNC,
      ...(withLog ? { mapLog: { dir: logDir, checkpointMinBytes: 2 ** 40 } } : {}),
    });
    await store.createVolume(1, 1);
    const applier = new RefcountApplier(store, { intervalMs: 50, highWater: 2048 });
    applier.start();
    rand = xorshift32(12345);
    const calls = Math.ceil(GRAINS / 32);
    const uniq = await lanes(calls, (i) =>
      store.writeGrains(
        1,
        Array.from({ length: 32 }, (_, j) => {
          const g = i * 32 + j;
          return { grain: g, fingerprint: fingerprint(g), chunk: loc(g) };
        }),
      ),
    );
    await store.flush();
    const uniqLog = withLog ? logBytes(logDir, ".log") : 0;
    const rnd = await lanes(RANDOM, () =>
      store.writeGrains(1, [{ grain: rand(GRAINS), fingerprint: fingerprint(rand(GRAINS)) }]),
    );
    await store.flush();
    const allLog = withLog ? logBytes(logDir, ".log") : 0;
    await applier.stop({ drain: true });
    const out: Record<string, number> = {
      uniqueGrainsPerS: GRAINS / uniq.s,
      uniqueUsPerCall: (uniq.s * 1e6) / calls,
      uniqueCpuUsPerCall: uniq.cpuUs / calls,
      randomPerS: RANDOM / rnd.s,
      randomCpuUsPerCall: rnd.cpuUs / RANDOM,
    };
    if (withLog) {
      out.logBytesPerUniqueGrain = uniqLog / GRAINS;
      out.logBytesPerRandomWrite = (allLog - uniqLog) / RANDOM;
      // Rebuild from the log alone (checkpoint 0 + every record).
      let t0 = Date.now();
      const r1 = await MetaStore.open({
        path: join(root, "r1"),
        noSync: NOSYNC,
        mapLog: { dir: logDir, rebuild: true },
      });
      const rep1 = await r1.replayMapLog();
      out.replayMsLogOnly = Date.now() - t0;
      out.replayRecords = rep1.records;
      await r1.close();
      // Checkpoint, then rebuild from it.
      t0 = Date.now();
      const ck = await store.checkpointNow();
      out.checkpointMs = Date.now() - t0;
      out.checkpointBytesPerGrain = (ck?.bytes ?? 0) / GRAINS;
      out.logBytesAfterCheckpoint = logBytes(logDir, ".log");
      t0 = Date.now();
      const r2 = await MetaStore.open({
        path: join(root, "r2"),
        noSync: NOSYNC,
        mapLog: { dir: logDir, rebuild: true },
      });
      await r2.replayMapLog();
      out.replayMsFromCheckpoint = Date.now() - t0;
      t0 = Date.now();
      await r2.repair();
      out.repairMs = Date.now() - t0;
      await r2.close();
    }
    await store.close();
    return out;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

for (let r = 0; r < ROUNDS; r++) {
  for (const withLog of [false, true]) {
    const o = await once(withLog);
    console.log(
      JSON.stringify({
        log: withLog,
        grains: GRAINS,
        nosync: NOSYNC,
        ...Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Math.round(v * 10) / 10])),
      }),
    );
  }
}
