/**
 * End-to-end: the `sanmux` command itself — the demo start, config errors, signals, and many
 * initiators at once.
 */
import { execFile, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { CLI, iscsiImageOpts, startSanmux, tool } from "../helpers/sanmux.js";

const run = promisify(execFile);
const dirs: string[] = [];

async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), "sanmux-cli-"));
  dirs.push(d);
  return d;
}

afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Run `sanmux serve` expecting it to refuse to start; returns its exit code and stderr. */
function serveFails(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, "serve", ...args], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, SANMUX_MASTER_KEY: "" },
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

describe("sanmux serve", () => {
  it("refuses a bad config naming the file, the line and the problem", async () => {
    const dir = await tempDir();
    const config = path.join(dir, "bad.yaml");
    await writeFile(
      config,
      [
        "agents:",
        "  - name: a",
        "    initiators: [iqn.2026-11.test:a]",
        "volumes:",
        "  - { name: v, size: 1GiB }",
        "mappings:",
        "  - { agent: a, lun: 0, volume: nope }",
        "",
      ].join("\n"),
    );
    const r = await serveFails(["--data", dir, "--config", config, "--portal", "127.0.0.1:0"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/bad\.yaml:7: mappings\[0\]\.volume: .*nope/);
  });

  it("refuses a YAML syntax error with its line", async () => {
    const dir = await tempDir();
    const config = path.join(dir, "broken.yaml");
    await writeFile(
      config,
      "agents:\n  - name: a\n    initiators: [iqn.2026-11.test:a\nvolumes: []\n",
    );
    const r = await serveFails(["--data", dir, "--config", config, "--portal", "127.0.0.1:0"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/broken\.yaml:\d+:/);
  });

  it("check-config validates without serving", async () => {
    const dir = await tempDir();
    const config = path.join(dir, "ok.yaml");
    await writeFile(
      config,
      "agents:\n  - { name: a, initiators: [iqn.2026-11.test:a] }\nvolumes:\n  - { name: v, size: 1GiB }\nmappings:\n  - { agent: a, lun: 2, volume: v }\n",
    );
    const { stdout } = await run(process.execPath, [CLI, "check-config", config]);
    expect(stdout).toContain("1 agent(s), 1 volume(s), 1 mapping(s)");
  });

  it("refuses to serve pool volumes without the master key, or with another key", async () => {
    const dir = await tempDir();
    const keyFile = path.join(await tempDir(), "master.key");
    await run(process.execPath, [CLI, "init", "--data", dir, "--key-file", keyFile], {
      env: { ...process.env, SANMUX_MASTER_KEY: "" },
    });
    const noKey = await serveFails(["--data", dir, "--portal", "127.0.0.1:0"]);
    expect(noKey.code).toBe(1);
    expect(noKey.stderr).toMatch(/the pool needs the master key: give --key-file/);
    const otherKey = path.join(await tempDir(), "other.key");
    await run(process.execPath, [CLI, "init", "--data", await tempDir(), "--key-file", otherKey], {
      env: { ...process.env, SANMUX_MASTER_KEY: "" },
    });
    const wrong = await serveFails([
      "--data",
      dir,
      "--key-file",
      otherKey,
      "--portal",
      "127.0.0.1:0",
    ]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/wrong master key/);
  });

  it("init creates a private key file and a pool; serve starts the demo and stops on SIGINT", async () => {
    const dir = await tempDir();
    const keyFile = path.join(await tempDir(), "master.key");
    const init = await run(process.execPath, [CLI, "init", "--data", dir, "--key-file", keyFile], {
      env: { ...process.env, SANMUX_MASTER_KEY: "" },
    });
    expect(init.stdout).toMatch(/created master key [0-9a-f]{16} in /);
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    // Never in clear inside the data directory.
    const key = (await readFile(keyFile, "utf8")).trim();
    const found = await run("grep", ["-rl", key, dir]).catch((e: { code: number }) => e);
    expect((found as { code?: number }).code).toBe(1);
    // A second init keeps the key and the pool.
    const again = await run(process.execPath, [CLI, "init", "--data", dir, "--key-file", keyFile], {
      env: { ...process.env, SANMUX_MASTER_KEY: "" },
    });
    expect(again.stdout).not.toMatch(/created master key/);
    expect((await readFile(keyFile, "utf8")).trim()).toBe(key);
    const child = spawn(
      process.execPath,
      [CLI, "serve", "--data", dir, "--key-file", keyFile, "--portal", "127.0.0.1:0"],
      {
        stdio: ["ignore", "pipe", "inherit"],
        env: { ...process.env, SANMUX_MASTER_KEY: "" },
      },
    );
    const listening = await new Promise<Record<string, unknown>>((resolve, reject) => {
      let buf = "";
      child.stdout.on("data", (d: Buffer) => {
        buf += d.toString();
        for (const line of buf.split("\n")) {
          if (line.includes('"msg":"listening"'))
            resolve(JSON.parse(line) as Record<string, unknown>);
        }
      });
      child.on("exit", (code) => reject(new Error(`exited ${code}`)));
    });
    const written = await readFile(path.join(dir, "sanmux.yaml"), "utf8");
    expect(written).toContain("iqn.2026-11.io.sanmux:demo-initiator");
    const portal = String(listening.portal);
    const ls = await tool("iscsi-ls", [
      "-s",
      "-i",
      "iqn.2026-11.io.sanmux:demo-initiator",
      `iscsi://${portal}`,
    ]);
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stdout).toMatch(/Lun:0 /);
    const exit = new Promise<number | null>((resolve) => child.on("exit", resolve));
    child.kill("SIGINT");
    expect(await exit).toBe(0);
  });
});

describe("many sessions", () => {
  it("serves four agents writing and verifying their own LUNs at the same time", async () => {
    const agents = ["a1", "a2", "a3", "a4"];
    const server = await startSanmux({
      config: [
        "target: iqn.2026-11.io.sanmux:many",
        "agents:",
        ...agents.map((a) => `  - { name: ${a}, initiators: [iqn.2026-11.test:${a}] }`),
        "volumes:",
        ...agents.map((a) => `  - { name: ${a}-vol, size: 32MiB }`),
        "mappings:",
        ...agents.map((a, i) => `  - { agent: ${a}, lun: ${i}, volume: ${a}-vol }`),
        "",
      ].join("\n"),
    });
    try {
      const results = await Promise.all(
        agents.map((a, i) => {
          const pattern = `0x${(0x11 * (i + 1)).toString(16)}`;
          return tool("qemu-io", [
            "--image-opts",
            "-c",
            `write -P ${pattern} 0 8M`,
            "-c",
            `read -P ${pattern} 0 8M`,
            iscsiImageOpts(server.port, "iqn.2026-11.io.sanmux:many", i, `iqn.2026-11.test:${a}`),
          ]);
        }),
      );
      for (const r of results) {
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).not.toMatch(/Pattern verification failed|error/i);
      }
      const sessions = server.logs.filter(
        (l) => l.msg === "login complete" && l.sessionType === "Normal",
      );
      expect(new Set(sessions.map((l) => l.initiator)).size).toBe(4);
      expect(await server.stop("SIGINT")).toBe(0);
      // Every channel counted its agent's traffic: 8 MiB written and read back each.
      const report = server.logs.find((l) => l.msg === "channel counters");
      const channels = (report?.channels ?? []) as Array<Record<string, number | string>>;
      expect(channels).toHaveLength(4);
      for (const c of channels) {
        expect(c.writtenBytes).toBe(8 * 1024 * 1024);
        expect(c.readBytes).toBeGreaterThanOrEqual(8 * 1024 * 1024);
        expect(c.commands).toBeGreaterThan(0);
        expect(c.errors).toBe(0);
      }
      expect(new Set(channels.map((c) => c.channel)).size).toBe(4);
    } finally {
      await server.stop("SIGINT");
      await server.cleanup();
    }
  });
});
