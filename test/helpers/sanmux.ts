/**
 * End-to-end test fixtures: a real `sanmux serve` process on a loopback port, and the real
 * initiator tools (libiscsi's iscsi-* and qemu-img) run against it.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, "../..");
export const CLI = path.join(ROOT, "dist/cli/main.js");

/**
 * The master key of the pools these tests create (hex, as SANMUX_MASTER_KEY takes it): one per
 * test process, so that a server restarted on the same data directory opens its pool.
 */
export const TEST_MASTER_KEY = randomBytes(32).toString("hex");

export interface RunningSanmux {
  readonly dataDir: string;
  readonly port: number;
  readonly host: string;
  readonly target: string;
  /** Every JSON log line printed so far. */
  readonly logs: Array<Record<string, unknown>>;
  readonly process: ChildProcess;
  /** iscsi:// URL of a LUN, optionally with CHAP credentials. */
  url(lun: number, chap?: { user: string; secret: string }): string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Remove the data directory (after stop). */
  cleanup(): Promise<void>;
}

export interface StartOptions {
  readonly config: string;
  readonly dataDir?: string;
  readonly extraArgs?: readonly string[];
  /** Extra environment; SANMUX_MASTER_KEY defaults to TEST_MASTER_KEY. */
  readonly env?: Readonly<Record<string, string>>;
}

export async function startSanmux(options: StartOptions): Promise<RunningSanmux> {
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(os.tmpdir(), "sanmux-e2e-")));
  const configPath = path.join(dataDir, "test-config.yaml");
  await writeFile(configPath, options.config);
  const child = spawn(
    process.execPath,
    [
      CLI,
      "serve",
      "--data",
      dataDir,
      "--config",
      configPath,
      "--portal",
      "127.0.0.1:0",
      ...(options.extraArgs ?? []),
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, SANMUX_MASTER_KEY: TEST_MASTER_KEY, ...options.env },
    },
  );
  const logs: Array<Record<string, unknown>> = [];
  let stderr = "";
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const listening = await new Promise<Record<string, unknown>>((resolve, reject) => {
    let buffered = "";
    child.stdout?.on("data", (d: Buffer) => {
      buffered += d.toString();
      let nl = buffered.indexOf("\n");
      while (nl >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        nl = buffered.indexOf("\n");
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          logs.push(entry);
          if (entry.msg === "listening") resolve(entry);
        } catch {
          // not a JSON line: ignore
        }
      }
    });
    child.once("exit", (code) =>
      reject(new Error(`sanmux exited with ${code} before listening: ${stderr}`)),
    );
    setTimeout(() => reject(new Error(`sanmux did not start in time: ${stderr}`)), 20_000).unref();
  });
  const portal = String(listening.portal);
  const port = Number(portal.slice(portal.lastIndexOf(":") + 1));
  const target = String(listening.target);
  const host = "127.0.0.1";
  return {
    dataDir,
    port,
    host,
    target,
    logs,
    process: child,
    url(lun, chap) {
      const cred = chap
        ? `${encodeURIComponent(chap.user)}%${encodeURIComponent(chap.secret)}@`
        : "";
      return `iscsi://${cred}${host}:${port}/${target}/${lun}`;
    },
    stop(signal = "SIGTERM") {
      return new Promise((resolve) => {
        if (child.exitCode !== null) {
          resolve(child.exitCode);
          return;
        }
        child.once("exit", (code) => resolve(code));
        child.kill(signal);
      });
    },
    async cleanup() {
      if (!options.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Build test/tools/iscsi-probe.c (a small libiscsi program) into `dir`; returns its path. */
export async function buildProbe(dir: string): Promise<string> {
  const out = path.join(dir, "iscsi-probe");
  await run("gcc", ["-O2", "-o", out, path.join(ROOT, "test/tools/iscsi-probe.c"), "-liscsi"]);
  return out;
}

export interface ToolResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Run an initiator tool; never throws on a non-zero exit (tests assert on the code). */
export async function tool(
  cmd: string,
  args: readonly string[],
  timeoutMs = 60_000,
): Promise<ToolResult> {
  try {
    const r = await run(cmd, [...args], {
      timeout: timeoutMs,
      maxBuffer: 64 * 1024 * 1024,
      encoding: "buffer",
    });
    return { code: 0, stdout: r.stdout.toString("latin1"), stderr: r.stderr.toString("latin1") };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: Buffer; stderr?: Buffer };
    return {
      code: typeof e.code === "number" ? e.code : -1,
      stdout: e.stdout?.toString("latin1") ?? "",
      stderr: e.stderr?.toString("latin1") ?? String(err),
    };
  }
}

/**
 * A session of `initiator` logged in now (iscsi-probe's wait-tur: the unit attentions of the
 * login are consumed) that, when the returned function is called, sends TEST UNIT READY twice
 * and returns the two outcomes, e.g. ["tur1 CHECK_CONDITION/06/38/07", "tur2 GOOD"]. For unit
 * attentions raised while a session is logged in.
 */
export async function loggedInSession(
  probe: string,
  initiator: string,
  url: string,
): Promise<() => Promise<string[]>> {
  const child: ChildProcess = spawn(probe, ["-i", initiator, url, "wait-tur"], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.startsWith("ready\n")) resolve();
    });
    void exited.then((code) => reject(new Error(`iscsi-probe exited with ${code}`)));
  });
  return async () => {
    child.stdin?.end("go\n");
    const code = await exited;
    if (code !== 0) throw new Error(`iscsi-probe wait-tur exited with ${code}: ${out}`);
    return out.trim().split("\n").slice(1);
  };
}

/** qemu's --image-opts string for LUN `lun` of `target` on a loopback portal. */
export function iscsiImageOpts(port: number, target: string, lun: number, initiator: string) {
  return (
    `driver=iscsi,transport=tcp,portal=127.0.0.1:${port},target=${target},lun=${lun},` +
    `initiator-name=${initiator}`
  );
}

/**
 * One iscsi-probe command (test/tools/iscsi-probe.c) as `initiator`, run again while its answer
 * is a unit attention (a fresh login's power-on or changed-data attentions are not the answer
 * the test wants); its stdout. Throws when the probe cannot log in or the attentions never stop.
 */
export async function probeCommand(
  probe: string,
  initiator: string,
  url: string,
  ...args: string[]
): Promise<string> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const r = await tool(probe, ["-i", initiator, url, ...args]);
    if (r.code !== 0) throw new Error(`iscsi-probe ${args.join(" ")}: exit ${r.code}: ${r.stderr}`);
    if (!/key=0x06/.test(r.stdout)) return r.stdout;
  }
  throw new Error(`iscsi-probe ${args.join(" ")}: unit attentions never stopped`);
}

/** `sanmux status --json` of the server (or stopped pool) on `dataDir`, parsed. */
export async function statusJson<T = Record<string, unknown>>(dataDir: string): Promise<T> {
  const { stdout } = await run(process.execPath, [CLI, "status", "--data", dataDir, "--json"], {
    env: { ...process.env, SANMUX_MASTER_KEY: TEST_MASTER_KEY },
  });
  return JSON.parse(stdout) as T;
}

/**
 * Read a figure until it stops moving: `read` every 400 ms until two reads in a row give the same
 * `value` (and `accept` it), at most 50 times; the last read. For status figures that trail
 * acknowledged writes by a commit (src/pool/write-back.ts) when no SYNCHRONIZE CACHE came.
 */
export async function settled<T>(
  read: () => Promise<T>,
  value: (t: T) => number,
  accept: (v: number) => boolean = () => true,
): Promise<T> {
  let last = await read();
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 400));
    const next = await read();
    if (value(next) === value(last) && accept(value(next))) return next;
    last = next;
  }
  return last;
}
