import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  buildProbe,
  iscsiImageOpts,
  type RunningSanmux,
  startSanmux,
  tool,
} from "../helpers/sanmux.js";

const TARGET = "iqn.2026-11.io.sanmux:e2e";
const ALPHA = "iqn.2026-11.test:alpha";
const BETA = "iqn.2026-11.test:beta";
const DELTA = "iqn.2026-11.test:delta";
const STRANGER = "iqn.2026-11.test:stranger";
const BETA_CHAP = { user: "beta", secret: "beta-secret-123" };
const DELTA_CHAP = {
  user: "delta",
  secret: "delta-secret-456",
  targetUser: "sanmux",
  targetSecret: "target-secret-789",
};

const CONFIG = `
target: ${TARGET}
agents:
  - name: alpha
    initiators: [${ALPHA}]
  - name: beta
    initiators: [${BETA}]
    chap: { user: ${BETA_CHAP.user}, secret: "${BETA_CHAP.secret}" }
  - name: delta
    initiators: [${DELTA}]
    chap: { user: ${DELTA_CHAP.user}, secret: "${DELTA_CHAP.secret}", target_user: ${DELTA_CHAP.targetUser}, target_secret: "${DELTA_CHAP.targetSecret}" }
volumes:
  - { name: alpha-disk, size: 256MiB }
  - { name: beta-disk, size: 64MiB, block_size: 4096 }
  - { name: shared, size: 64MiB }
  - { name: archive, size: 16MiB }
mappings:
  - { agent: alpha, lun: 0, volume: alpha-disk, mode: rw }
  - { agent: alpha, lun: 1, volume: shared, mode: rw }
  - { agent: beta, lun: 0, volume: beta-disk }
  - { agent: beta, lun: 3, volume: shared, mode: rw }
  - { agent: beta, lun: 5, volume: archive, mode: ro }
  - { agent: delta, lun: 7, volume: archive, mode: rw }
`;

let server: RunningSanmux;
let work: string;
let probe: string;

/** qemu's iscsi driver options for one LUN as one agent. */
function qemuOpts(initiator: string, lun: number, extra = ""): string {
  return iscsiImageOpts(server.port, TARGET, lun, `${initiator}${extra}`);
}
/** qemu-io with a CHAP secret passed as a qemu secret object. */
function qemuIo(
  initiator: string,
  lun: number,
  commands: string[],
  chap?: { user: string; secret: string },
  readOnly = false,
) {
  const args: string[] = readOnly ? ["-r"] : [];
  let extra = readOnly ? ",read-only=on" : "";
  if (chap) {
    args.push("--object", `secret,id=chap0,data=${chap.secret}`);
    extra += `,user=${chap.user},password-secret=chap0`;
  }
  args.push("--image-opts");
  for (const c of commands) args.push("-c", c);
  args.push(qemuOpts(initiator, lun, extra));
  return tool("qemu-io", args);
}

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), "sanmux-e2e-work-"));
  probe = await buildProbe(work);
  server = await startSanmux({ config: CONFIG });
});

afterAll(async () => {
  const code = await server?.stop();
  expect(code).toBe(0);
  await server?.cleanup();
  await rm(work, { recursive: true, force: true });
});

describe("LUN views", () => {
  it("shows each agent only its own LUNs", async () => {
    const alpha = await tool("iscsi-ls", ["-i", ALPHA, "-s", `iscsi://127.0.0.1:${server.port}`]);
    expect(alpha.code, alpha.stderr).toBe(0);
    expect(alpha.stdout).toContain(TARGET);
    expect(lunsIn(alpha.stdout)).toEqual([0, 1]);

    const beta = await tool("iscsi-ls", [
      "-i",
      BETA,
      "-s",
      `iscsi://${BETA_CHAP.user}%${BETA_CHAP.secret}@127.0.0.1:${server.port}`,
    ]);
    expect(beta.code, beta.stderr).toBe(0);
    expect(lunsIn(beta.stdout)).toEqual([0, 3, 5]);
  });

  it("answers a LUN the agent does not have with LOGICAL UNIT NOT SUPPORTED", async () => {
    // beta's LUN 3 is the shared volume; alpha has no LUN 3 and must not reach it.
    // libiscsi's login sends TEST UNIT READY to the LUN and reports the sense it got.
    for (const lun of [3, 5, 200]) {
      const r = await tool(probe, ["-i", ALPHA, server.url(lun), "read", "0"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("ILLEGAL_REQUEST(5) ASCQ:LOGICAL_UNIT_NOT_SUPPORTED(0x2500)");
    }
  });
});

describe("identification", () => {
  it("reports the same VPD 0x83 identifiers for one volume mapped to two agents", async () => {
    const viaAlpha = await tool("iscsi-inq", ["-i", ALPHA, "-e", "1", "-c", "131", server.url(1)]);
    expect(viaAlpha.code, viaAlpha.stderr).toBe(0);
    const viaBeta = await tool("iscsi-inq", [
      "-i",
      BETA,
      "-e",
      "1",
      "-c",
      "131",
      server.url(3, BETA_CHAP),
    ]);
    expect(viaBeta.code, viaBeta.stderr).toBe(0);
    const other = await tool("iscsi-inq", ["-i", ALPHA, "-e", "1", "-c", "131", server.url(0)]);
    expect(other.code, other.stderr).toBe(0);

    const naaAlpha = designators(viaAlpha.stdout, "NAA");
    expect(naaAlpha.length).toBe(1);
    expect(designators(viaBeta.stdout, "NAA")).toEqual(naaAlpha);
    expect(designators(viaBeta.stdout, "T10")).toEqual(designators(viaAlpha.stdout, "T10"));
    expect(designators(other.stdout, "NAA")).not.toEqual(naaAlpha);
    // The target port designators name this target.
    expect(viaAlpha.stdout).toContain(TARGET);
  });

  it("reports byte-identical page 0x83 through both agents' LUNs", async () => {
    const a = await probeCmd(ALPHA, server.url(1), "vpd", 0x83);
    const b = await probeCmd(BETA, server.url(3, BETA_CHAP), "vpd", 0x83);
    const c = await probeCmd(ALPHA, server.url(0), "vpd", 0x83);
    expect(a.startsWith("status=GOOD")).toBe(true);
    expect(b).toBe(a);
    expect(c).not.toBe(a);
  });

  it("names the sanmux host in vendor page 0xC0", async () => {
    const out = await probeCmd(ALPHA, server.url(0), "vpd", 0xc0);
    const bytes = Buffer.from(out.split("\n")[1] ?? "", "hex");
    expect(bytes[1]).toBe(0xc0);
    const length = bytes.readUInt16BE(2);
    const name = bytes
      .subarray(4, 4 + length)
      .toString("ascii")
      .replace(/\0+$/, "");
    expect(name).toBe(os.hostname());
  });
});

describe("data path", () => {
  it("stores a 256 MiB image written by qemu-img convert exactly", async () => {
    const image = path.join(work, "random.img");
    await writeFile(image, randomBytes(256 * 1024 * 1024));
    const convert = await tool(
      "qemu-img",
      ["convert", "-n", "-f", "raw", "--target-image-opts", image, qemuOpts(ALPHA, 0)],
      300_000,
    );
    expect(convert.code, convert.stderr).toBe(0);
    const compare = await tool(
      "qemu-img",
      ["compare", "--image-opts", `driver=raw,file.filename=${image}`, qemuOpts(ALPHA, 0)],
      300_000,
    );
    expect(compare.stderr).toBe("");
    expect(compare.stdout).toContain("Images are identical");
    expect(compare.code).toBe(0);
  });

  it("lets two agents that map one volume read what the other wrote", async () => {
    const w1 = await qemuIo(ALPHA, 1, ["write -P 0xa1 1M 128k"]);
    expect(w1.code, w1.stderr + w1.stdout).toBe(0);
    const r1 = await qemuIo(BETA, 3, ["read -P 0xa1 1M 128k"], BETA_CHAP);
    expect(r1.code, r1.stderr).toBe(0);
    expect(r1.stdout).not.toMatch(/Pattern verification failed|error/i);

    const w2 = await qemuIo(BETA, 3, ["write -P 0xb2 4M 64k"], BETA_CHAP);
    expect(w2.code, w2.stderr).toBe(0);
    const r2 = await qemuIo(ALPHA, 1, ["read -P 0xb2 4M 64k", "read -P 0xa1 1M 128k"]);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stdout).not.toMatch(/Pattern verification failed|error/i);
  });

  it("refuses writes on a read-only mapping and serves reads", async () => {
    // The target answers a WRITE with DATA PROTECT / WRITE PROTECTED ...
    const w = await probeCmd(BETA, server.url(5, BETA_CHAP), "write", 8);
    expect(w).toBe("status=CHECK_CONDITION key=0x07 asc=0x27 ascq=0x00");
    // ... and reports WP in its mode data, so qemu refuses to open the LUN for writing.
    const q = await qemuIo(BETA, 5, ["write -P 0x55 0 4k"], BETA_CHAP);
    expect(q.stdout + q.stderr).toMatch(/write protected/i);
    // The same volume through delta's read-write mapping still holds zeros at that block.
    const d = await probeCmd(DELTA, deltaUrl(7), "read", 8);
    expect(d).toBe(`status=GOOD\n${"00".repeat(512)}`);
    const r = await qemuIo(BETA, 5, ["read -P 0 0 4k"], BETA_CHAP, true);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/Pattern verification failed/);
  });
});

describe("authentication", () => {
  it("refuses a wrong CHAP secret and logs why", async () => {
    const r = await tool("iscsi-ls", [
      "-i",
      BETA,
      "-s",
      `iscsi://beta%wrong-secret-000@127.0.0.1:${server.port}`,
    ]);
    expect(r.code).not.toBe(0);
    await waitFor(() =>
      server.logs.some((l) => typeof l.msg === "string" && /login refused.*CHAP/i.test(l.msg)),
    );
  });

  it("refuses an initiator that belongs to no agent", async () => {
    const r = await tool("iscsi-inq", ["-i", STRANGER, server.url(0)]);
    expect(r.code).not.toBe(0);
    await waitFor(() =>
      server.logs.some(
        (l) =>
          l.msg !== undefined && String(l.msg).startsWith("login refused") && l.statusDetail === 2,
      ),
    );
  });

  it("refuses an agent that requires CHAP when it offers none", async () => {
    const r = await tool("iscsi-inq", ["-i", BETA, server.url(0)]);
    expect(r.code).not.toBe(0);
  });

  it("accepts mutual CHAP with the right target secret", async () => {
    const r = await tool("iscsi-inq", ["-i", DELTA, deltaUrl(7)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("SANMUX");
  });

  it("refuses mutual CHAP when the initiator expects another target secret", async () => {
    const url = `${server.url(7, DELTA_CHAP)}?target_user=${DELTA_CHAP.targetUser}&target_password=not-the-target-secret`;
    const r = await tool("iscsi-inq", ["-i", DELTA, url]);
    expect(r.code).not.toBe(0);
  });
});

function deltaUrl(lun: number): string {
  return `${server.url(lun, DELTA_CHAP)}?target_user=${DELTA_CHAP.targetUser}&target_password=${DELTA_CHAP.targetSecret}`;
}

/** Run iscsi-probe and return its trimmed output; fails the test when login fails. */
async function probeCmd(initiator: string, url: string, op: "vpd" | "read" | "write", arg: number) {
  const r = await tool(probe, ["-i", initiator, url, op, String(arg)]);
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
}

function lunsIn(listing: string): number[] {
  return [...listing.matchAll(/Lun:(\d+)/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
}

/** The designators of iscsi-inq's page 0x83 output that have one designator type. */
function designators(output: string, type: "NAA" | "T10"): string[] {
  const out: string[] = [];
  for (const block of output.split("DEVICE DESIGNATOR #").slice(1)) {
    const t = /Designator Type:\(\d+\) (\S+)/.exec(block)?.[1] ?? "";
    if (!t.startsWith(type)) continue;
    const m = /Designator:\[([\s\S]*?)\]\n/.exec(`${block}\n`);
    out.push(m ? (m[1] as string) : block);
  }
  return out;
}

async function waitFor(predicate: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 50));
  }
}
