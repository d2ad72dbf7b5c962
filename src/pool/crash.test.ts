import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { masterKeyFromBytes } from "../crypto/index.js";
import { Pool } from "./pool.js";
import { MARKER_GRAIN, parseSector, tempPool } from "./testing/helpers.js";

const CHILD = fileURLToPath(new URL("./testing/crash-child.ts", import.meta.url));
const VITE_NODE = fileURLToPath(
  new URL("../../node_modules/vite-node/vite-node.mjs", import.meta.url),
);

interface Acknowledged {
  synced: number;
  fua: number;
}

/** Run the worker until it acknowledged `minAcks` markers, wait `extraMs`, SIGKILL it. */
function runAndKill(
  dir: string,
  keyHex: string,
  seed: number,
  minAcks: number,
  extraMs: number,
): Promise<Acknowledged> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [VITE_NODE, CHILD, dir, keyHex, String(seed)], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    const acks: Acknowledged = { synced: 0, fua: 0 };
    let count = 0;
    let armed = false;
    child.stdout.setEncoding("utf8").on("data", (s: string) => {
      out += s;
      const lines = out.split("\n");
      out = lines.pop() ?? "";
      for (const line of lines) {
        const m = /^(synced|fua) (\d+)$/.exec(line);
        if (m === null) continue;
        acks[m[1] as keyof Acknowledged] = Number(m[2]);
        count++;
      }
      if (!armed && count >= minAcks) {
        armed = true;
        setTimeout(() => child.kill("SIGKILL"), extraMs);
      }
    });
    child.stderr.setEncoding("utf8").on("data", (s: string) => {
      err += s;
    });
    child.on("exit", (code, signal) => {
      if (signal === "SIGKILL") resolve(acks);
      else reject(new Error(`crash worker exited by itself (${code}): ${err}`));
    });
    setTimeout(() => child.kill("SIGKILL"), 90_000).unref();
  });
}

/** Every grain reads as zeros or one whole version (4096) / valid sectors (512), never garbage. */
async function verify(pool: Pool, acks: Acknowledged): Promise<void> {
  for (const name of ["big", "small"]) {
    const v = pool.volume(name)!;
    const all = await v.read(0, v.blockCount());
    for (let g = 0; g < 512; g++) {
      const grain = all.subarray(g * 4096, (g + 1) * 4096);
      const sectors = Array.from({ length: 8 }, (_, k) =>
        parseSector(grain.subarray(k * 512, (k + 1) * 512)),
      );
      for (const [k, s] of sectors.entries()) {
        expect(s, `${name} grain ${g} sector ${k}`).not.toBe("garbage");
        if (typeof s === "object") expect(s.sector).toBe(k);
      }
      if (name === "big") {
        // Whole-grain writes only: a grain is one version or zeros, never torn.
        const versions = new Set(sectors.map((s) => (typeof s === "object" ? s.version : s)));
        expect(versions.size, `big grain ${g} is torn`).toBe(1);
      }
    }
  }
  const big = await pool.volume("big")!.read(MARKER_GRAIN, 1);
  const small = await pool.volume("small")!.read(MARKER_GRAIN * 8, 1);
  const b = parseSector(big.subarray(0, 512));
  const s = parseSector(small.subarray(0, 512));
  if (acks.synced > 0) expect(typeof b === "object" && b.version >= acks.synced).toBe(true);
  if (acks.fua > 0) expect(typeof s === "object" && s.version >= acks.fua).toBe(true);
}

describe("pool crash consistency under SIGKILL", () => {
  it("reads every grain as old or new content, keeps what flush and FUA acknowledged", async () => {
    const t = await tempPool();
    const dir = join(t.dir, "pool");
    await t.pool.close();
    const keyHex = t.keyBytes.toString("hex");
    try {
      const delays = [0, 7, 35, 120];
      for (const [i, delay] of delays.entries()) {
        const acks = await runAndKill(dir, keyHex, 77 + i, 3, delay);
        const pool = await Pool.open({ dir, masterKey: masterKeyFromBytes(t.keyBytes) });
        try {
          await verify(pool, acks);
          const check = await pool.check();
          expect(check.audit.leaks.count + check.audit.miscounts.count).toBe(0);
          expect(check.audit.damage.count + check.audit.orphans.count).toBe(0);
          expect(check.missingContainers).toEqual([]);
          expect((await pool.scrub()).damaged).toEqual([]);
        } finally {
          await pool.close();
        }
      }
    } finally {
      rmSync(t.dir, { recursive: true, force: true });
    }
  });
});
