/**
 * End-to-end: snapshots and clones through real initiators (qemu-io, and libiscsi through
 * test/tools/iscsi-probe.c for the sense code), driven by the `sanmux snapshot` commands against
 * the running server and live config reloads:
 *
 * - agent A writes a pattern, `sanmux snapshot create`, A overwrites it;
 * - a reload maps the snapshot read-only to agent B: B reads the old pattern while A reads the
 *   new one; B's writes get DATA PROTECT / WRITE PROTECTED (07h/27h/00h);
 * - a mapping of a snapshot that does not exist fails the reload, naming the mapping;
 * - `sanmux snapshot clone` and a reload mapping the clone read-write to B: B writes it, and
 *   neither A's volume nor the snapshot changes;
 * - a mapped snapshot cannot be deleted; unmapped, it can;
 * - with the server stopped, the same commands work on the data directory.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildProbe,
  CLI,
  iscsiImageOpts,
  type RunningSanmux,
  startSanmux,
  TEST_MASTER_KEY,
  tool,
} from "../helpers/sanmux.js";

const run = promisify(execFile);
const TARGET = "iqn.2026-11.io.sanmux:snapshots-e2e";
const INITIATOR = (agent: string) => `iqn.2026-11.test:${agent}`;

const AGENTS = `target: ${TARGET}
agents:
  - { name: a, initiators: [${INITIATOR("a")}] }
  - { name: b, initiators: [${INITIATOR("b")}] }
`;
const BASE = `${AGENTS}volumes:
  - { name: vol1, size: 64MiB }
mappings:
  - { agent: a, lun: 0, volume: vol1 }
`;
const WITH_SNAPSHOT = `${BASE}  - { agent: b, lun: 2, volume: vol1, snapshot: nightly }\n`;
const WITH_MISSING = `${BASE}  - { agent: b, lun: 3, volume: vol1, snapshot: weekly }\n`;
const WITH_CLONE = `${AGENTS}volumes:
  - { name: vol1, size: 64MiB }
  - { name: vol1c, size: 64MiB }
mappings:
  - { agent: a, lun: 0, volume: vol1 }
  - { agent: b, lun: 2, volume: vol1, snapshot: nightly }
  - { agent: b, lun: 4, volume: vol1c }
`;
const CLONE_ONLY = `${AGENTS}volumes:
  - { name: vol1, size: 64MiB }
  - { name: vol1c, size: 64MiB }
mappings:
  - { agent: a, lun: 0, volume: vol1 }
  - { agent: b, lun: 4, volume: vol1c }
`;

let server: RunningSanmux;
let work: string;
let probe: string;

function qemuOpts(agent: string, lun: number): string {
  return iscsiImageOpts(server.port, TARGET, lun, INITIATOR(agent));
}

async function qemuIo(agent: string, lun: number, command: string, readOnly = false) {
  return tool(
    "qemu-io",
    [...(readOnly ? ["-r"] : []), "--image-opts", "-c", command, qemuOpts(agent, lun)],
    120_000,
  );
}

async function expectPattern(agent: string, lun: number, pattern: number, readOnly = false) {
  const r = await qemuIo(agent, lun, `read -P ${pattern} 0 8M`, readOnly);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout + r.stderr).not.toMatch(/Pattern verification failed|error/i);
}

async function write(agent: string, lun: number, pattern: number) {
  const r = await qemuIo(agent, lun, `write -P ${pattern} 0 8M`);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout + r.stderr).not.toMatch(/error/i);
}

async function sanmux(...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args, "--data", server.dataDir], {
      env: { ...process.env, SANMUX_MASTER_KEY: TEST_MASTER_KEY },
    });
    return { code: 0, out: r.stdout + r.stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, out: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

async function reload(config: string): Promise<{ code: number; out: string }> {
  await writeFile(path.join(server.dataDir, "test-config.yaml"), config);
  return sanmux("reload", "--json");
}

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), "sanmux-snapshots-e2e-"));
  probe = await buildProbe(work);
  server = await startSanmux({ config: BASE, extraArgs: ["--no-watch"] });
}, 60_000);

afterAll(async () => {
  expect(await server?.stop()).toBe(0);
  await server?.cleanup();
  await rm(work, { recursive: true, force: true });
});

describe("snapshots and clones through real initiators", () => {
  it("maps a snapshot read-only to another agent: old data, writes refused", async () => {
    await write("a", 0, 0xaa);
    const created = await sanmux("snapshot", "create", "vol1", "nightly", "--json");
    expect(created.code, created.out).toBe(0);
    expect(JSON.parse(created.out)).toMatchObject({ volume: "vol1", name: "nightly" });
    await write("a", 0, 0xbb);

    const r = await reload(WITH_SNAPSHOT);
    expect(r.code, r.out).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ mappingsAdded: 1, volumesOpened: ["vol1@nightly"] });
    await expectPattern("b", 2, 0xaa, true);
    await expectPattern("a", 0, 0xbb);

    // A write through B's snapshot LUN: DATA PROTECT, WRITE PROTECTED.
    const w = await tool(probe, ["-i", INITIATOR("b"), server.url(2), "write", "0"]);
    expect(w.code, w.stderr).toBe(0);
    expect(w.stdout).toMatch(/status=CHECK_CONDITION key=0x07 asc=0x27 ascq=0x00/);
    await expectPattern("b", 2, 0xaa, true);

    const list = await sanmux("snapshot", "list", "vol1", "--json");
    expect(list.code, list.out).toBe(0);
    expect((JSON.parse(list.out) as { name: string }[]).map((s) => s.name)).toEqual(["nightly"]);
  }, 180_000);

  it("refuses a reload that maps a snapshot that does not exist, naming the mapping", async () => {
    const r = await reload(WITH_MISSING);
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/agent "b" at LUN 3 \(volume vol1, snapshot weekly\)/);
    expect(r.out).toMatch(/has no snapshot "weekly"/);
    // Nothing changed: the snapshot mapping is still there.
    await expectPattern("b", 2, 0xaa, true);
  }, 60_000);

  it("clones the snapshot into a writable volume, independent of both", async () => {
    const c = await sanmux("snapshot", "clone", "vol1", "nightly", "vol1c", "--json");
    expect(c.code, c.out).toBe(0);
    expect(JSON.parse(c.out)).toMatchObject({ volume: "vol1c", sizeBytes: 64 * 1024 * 1024 });
    const r = await reload(WITH_CLONE);
    expect(r.code, r.out).toBe(0);
    await expectPattern("b", 4, 0xaa);
    await write("b", 4, 0xcc);
    await expectPattern("b", 4, 0xcc);
    await expectPattern("b", 2, 0xaa, true);
    await expectPattern("a", 0, 0xbb);
  }, 180_000);

  it("refuses to delete a mapped snapshot; deletes it once unmapped", async () => {
    const refused = await sanmux("snapshot", "delete", "vol1", "nightly");
    expect(refused.code).not.toBe(0);
    expect(refused.out).toMatch(/vol1@nightly is mapped to agent "b" at LUN 2/);
    const r = await reload(CLONE_ONLY);
    expect(r.code, r.out).toBe(0);
    const deleted = await sanmux("snapshot", "delete", "vol1", "nightly", "--json");
    expect(deleted.code, deleted.out).toBe(0);
    const list = await sanmux("snapshot", "list", "--json");
    expect(JSON.parse(list.out)).toEqual([]);
    await expectPattern("b", 4, 0xcc);
    await expectPattern("a", 0, 0xbb);
  }, 120_000);

  it("works on the stopped data directory", async () => {
    expect(await server.stop()).toBe(0);
    const created = await sanmux("snapshot", "create", "vol1c", "offline", "--json");
    expect(created.code, created.out).toBe(0);
    const list = await sanmux("snapshot", "list", "--json");
    expect((JSON.parse(list.out) as { volume: string; name: string }[]).map((x) => x.name)).toEqual(
      ["offline"],
    );
    const text = await sanmux("snapshot", "list", "vol1c");
    expect(text.out).toMatch(/^vol1c@offline {2}\S+ {2}67108864 bytes {2}holds 0 bytes$/m);
    const cloned = await sanmux("snapshot", "clone", "vol1c", "offline", "vol1d", "--json");
    expect(cloned.code, cloned.out).toBe(0);
    const deleted = await sanmux("snapshot", "delete", "vol1c", "offline");
    expect(deleted.code, deleted.out).toBe(0);
    const none = await sanmux("snapshot", "list");
    expect(none.out).toMatch(/no snapshots/);
    const missing = await sanmux("snapshot", "delete", "vol1c", "offline");
    expect(missing.code).not.toBe(0);
    expect(missing.out).toMatch(/volume "vol1c" has no snapshot "offline"/);
  }, 60_000);
});
