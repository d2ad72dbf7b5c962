#!/usr/bin/env node
import type { KeyObject } from "node:crypto";
import { existsSync, watch } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { Command, InvalidArgumentError } from "commander";
import { pino } from "pino";
import { ConfigError, DEMO_CONFIG_YAML, loadConfig } from "../access/config.js";
import { callControl } from "../control/control-api.js";
import { lockDataDir } from "../control/data-lock.js";
/**
 * The `sanmux` command. `serve` runs the target in the foreground; the other subcommands work on
 * a data directory or a config file.
 */
import type { ServerEvent } from "../control/events.js";
import { poolDir, SanmuxServer } from "../control/server.js";
import {
  createKeyFile,
  KeyError,
  KeyErrorCode,
  keyId,
  loadMasterKey,
  MASTER_KEY_ENV,
} from "../crypto/index.js";
import { Pool, type SnapshotInfo } from "../pool/pool.js";
import { createLogger } from "../util/log.js";

// Volume I/O goes through libuv's thread pool; its default of 4 threads would cap the disk
// queue depth at 4 whatever the initiators' queue depth. Read before the pool starts (lazily,
// at the first fs call), so setting it here takes effect.
process.env.UV_THREADPOOL_SIZE ??= "32";

const program = new Command();
program
  .name("sanmux")
  .description("Shared SAN storage server: one pool served to many agents over iSCSI");

const KEY_FILE_HELP = `master key file (64 hex digits, mode 0600; created by \`sanmux init\`); or set ${MASTER_KEY_ENV}`;

/** The master key from --key-file or the environment, or undefined when neither is given. */
async function optionalKey(keyFile: string | undefined): Promise<KeyObject | undefined> {
  try {
    return await loadMasterKey(keyFile === undefined ? {} : { keyFile: path.resolve(keyFile) });
  } catch (error) {
    if (error instanceof KeyError && error.code === KeyErrorCode.NoKey) return undefined;
    throw error;
  }
}

async function requireKey(keyFile: string | undefined): Promise<KeyObject> {
  return loadMasterKey(keyFile === undefined ? {} : { keyFile: path.resolve(keyFile) });
}

/** Write the demo config unless one exists; returns its path. */
async function ensureConfig(dataDir: string, given: string | undefined): Promise<string> {
  if (given) return given;
  const configPath = path.join(dataDir, "sanmux.yaml");
  if (!existsSync(configPath)) {
    await writeFile(configPath, DEMO_CONFIG_YAML, { mode: 0o600 });
    console.error(`sanmux: no config given: wrote a demo config to ${configPath}`);
  }
  return configPath;
}

/** Open a stopped server's pool directly (one writer: the data directory lock is taken). */
async function withStoppedPool<T>(
  dataDir: string,
  keyFile: string | undefined,
  work: (pool: Pool) => Promise<T>,
): Promise<T> {
  const lock = await lockDataDir(dataDir);
  try {
    const config = existsSync(path.join(dataDir, "sanmux.yaml"))
      ? await loadConfig(path.join(dataDir, "sanmux.yaml"))
      : undefined;
    const pool = await Pool.open({
      dir: poolDir(dataDir),
      masterKey: await requireKey(keyFile),
      // stdout carries the report (JSON with --json): the pool's warnings go to stderr.
      logger: createLogger({
        level: "warn",
        destination: pino.destination({ dest: 2, sync: true }),
      }),
      devices: [...(config?.pool.devices ?? [])],
    });
    try {
      return await work(pool);
    } finally {
      await pool.close();
    }
  } finally {
    await lock.release();
  }
}

function print(value: unknown, json: boolean): void {
  console.log(json ? JSON.stringify(value, null, 2) : formatReport(value));
}

/** A plain-text rendering of a JSON report: one `path: value` line per leaf. */
function formatReport(value: unknown, prefix = ""): string {
  if (value === null || typeof value !== "object") return `${prefix}${String(value)}`;
  const lines: string[] = [];
  for (const [key, v] of Object.entries(value)) {
    const name = prefix ? `${prefix.replace(/: $/, "")}.${key}` : key;
    if (v !== null && typeof v === "object") lines.push(formatReport(v, `${name}: `));
    else lines.push(`${name}: ${String(v)}`);
  }
  return lines.join("\n");
}

program
  .command("init")
  .description("create the master key file (if absent), the data directory and its pool")
  .requiredOption("--data <dir>", "data directory")
  .option("--key-file <file>", KEY_FILE_HELP)
  .option("--config <file>", "YAML config; default <data>/sanmux.yaml, created if absent")
  .action(async (opts: { data: string; keyFile?: string; config?: string }) => {
    const dataDir = path.resolve(opts.data);
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const keyFileMissing = opts.keyFile !== undefined && !existsSync(path.resolve(opts.keyFile));
    let key = keyFileMissing ? undefined : await optionalKey(opts.keyFile);
    if (key === undefined) {
      if (opts.keyFile === undefined)
        throw new Error(`give --key-file <file> or set ${MASTER_KEY_ENV}`);
      key = await createKeyFile(path.resolve(opts.keyFile));
      console.log(
        `created master key ${keyId(key)} in ${path.resolve(opts.keyFile)} (mode 0600): back it up, the pool cannot be read without it`,
      );
    }
    const config = await loadConfig(await ensureConfig(dataDir, opts.config));
    const lock = await lockDataDir(dataDir);
    try {
      const pool = await Pool.open({
        dir: poolDir(dataDir),
        masterKey: key,
        devices: [...config.pool.devices],
      });
      await pool.close();
    } finally {
      await lock.release();
    }
    console.log(`pool ready in ${poolDir(dataDir)} (master key ${keyId(key)})`);
  });

program
  .command("serve")
  .description("run the iSCSI target in the foreground (JSON log lines on stdout)")
  .requiredOption("--data <dir>", "data directory (volumes, catalog)")
  .option(
    "--config <file>",
    "YAML config; default <data>/sanmux.yaml, created with a demo setup if absent",
  )
  .option("--portal <host:port>", "address to listen on", parsePortal, {
    host: "127.0.0.1",
    port: 3260,
  })
  .option("--key-file <file>", KEY_FILE_HELP)
  .option(
    "--metrics <host:port>",
    "serve Prometheus metrics at http://HOST:PORT/metrics",
    parsePortal,
  )
  .option(
    "--no-watch",
    "do not reload the config when the file changes (SIGHUP and `sanmux reload` still do)",
  )
  .action(
    async (opts: {
      data: string;
      config?: string;
      portal: { host: string; port: number };
      keyFile?: string;
      metrics?: { host: string; port: number };
      watch: boolean;
    }) => {
      const logger = createLogger();
      const dataDir = path.resolve(opts.data);
      await mkdir(dataDir, { recursive: true, mode: 0o700 });
      const configPath = path.resolve(await ensureConfig(dataDir, opts.config));
      const config = await loadConfig(configPath);
      const masterKey = await optionalKey(opts.keyFile);
      const server = await SanmuxServer.start({
        dataDir,
        config,
        configPath,
        portal: opts.portal,
        logger,
        ...(masterKey ? { masterKey } : {}),
        ...(opts.metrics ? { metrics: opts.metrics } : {}),
      });
      const reload = (why: string) => {
        server.reload().catch((err: unknown) => {
          logger.error(
            { err: err instanceof Error ? err.message : String(err), trigger: why },
            "configuration not reloaded; the previous one stays in force",
          );
        });
      };
      process.on("SIGHUP", () => reload("SIGHUP"));
      if (opts.watch) watchConfig(configPath, () => reload("config file changed"));
      let stopping = false;
      const stop = (signal: string) => {
        if (stopping) return;
        stopping = true;
        logger.info({ signal }, "stopping");
        server.stop().then(
          () => process.exit(0),
          (err: unknown) => {
            logger.error({ err }, "error while stopping");
            process.exit(1);
          },
        );
      };
      process.on("SIGINT", () => stop("SIGINT"));
      process.on("SIGTERM", () => stop("SIGTERM"));
    },
  );

program
  .command("check-config")
  .description("validate a config file and print what it declares")
  .argument("<file>", "YAML config")
  .action(async (file: string) => {
    const config = await loadConfig(file);
    console.log(
      `${file}: OK — target ${config.target}, ${config.agents.length} agent(s), ` +
        `${config.volumes.length} volume(s), ${config.mappings.length} mapping(s)`,
    );
  });

program
  .command("reload")
  .description("make the running server apply its config file again")
  .requiredOption("--data <dir>", "data directory")
  .option("--json", "print JSON")
  .action(async (opts: { data: string; json?: boolean }) => {
    const report = await callControl(path.resolve(opts.data), "POST", "/v1/reload");
    if (report === undefined) throw new Error(`no sanmux is running on ${opts.data}`);
    print(report, opts.json === true);
  });

program
  .command("status")
  .description("capacity accounting of the pool and the channels' counters")
  .requiredOption("--data <dir>", "data directory")
  .option("--key-file <file>", `${KEY_FILE_HELP} (only when no server runs)`)
  .option("--json", "print JSON")
  .action(async (opts: { data: string; keyFile?: string; json?: boolean }) => {
    const dataDir = path.resolve(opts.data);
    const live = await callControl(dataDir, "GET", "/v1/status");
    if (live !== undefined) {
      print(live, opts.json === true);
      return;
    }
    const usage = await withStoppedPool(dataDir, opts.keyFile, async (pool) => pool.usage());
    print({ server: null, pool: usage }, opts.json === true);
  });

program
  .command("events")
  .description("what the running server has to report: soft thresholds, reloads, damage, GC")
  .requiredOption("--data <dir>", "data directory")
  .option("--since <id>", "only events after this id", "0")
  .option("--json", "print JSON")
  .action(async (opts: { data: string; since: string; json?: boolean }) => {
    const since = Number.parseInt(opts.since, 10) || 0;
    const events = await callControl(path.resolve(opts.data), "GET", `/v1/events?since=${since}`);
    if (events === undefined) {
      // Events live in the server's memory: a stopped server has none to tell.
      console.error(`sanmux events: no server is running on ${opts.data}`);
      process.exitCode = 1;
      return;
    }
    if (opts.json === true) {
      console.log(JSON.stringify(events, null, 2));
      return;
    }
    for (const e of events as ServerEvent[]) {
      console.log(`${e.id}\t${e.time}\t${e.severity}\t${e.kind}\t${e.message}`);
    }
  });

const pool = program.command("pool").description("pool maintenance: scrub, check, gc, devices");

function poolCommand(
  name: string,
  description: string,
  route: string,
  local: (pool: Pool) => Promise<unknown>,
  failed: (report: unknown) => boolean = () => false,
): void {
  pool
    .command(name)
    .description(`${description} (through the running server, else on the stopped data directory)`)
    .requiredOption("--data <dir>", "data directory")
    .option("--key-file <file>", `${KEY_FILE_HELP} (only when no server runs)`)
    .option("--json", "print JSON")
    .action(async (opts: { data: string; keyFile?: string; json?: boolean }) => {
      const dataDir = path.resolve(opts.data);
      const report =
        (await callControl(dataDir, "POST", route)) ??
        (await withStoppedPool(dataDir, opts.keyFile, local));
      print(report, opts.json === true);
      if (failed(report)) process.exitCode = 2;
    });
}

poolCommand(
  "scrub",
  "read every container and verify every record's CRC and GCM tag",
  "/v1/pool/scrub",
  (p) =>
    p.scrub(({ done, containers }) =>
      process.stderr.write(`\rscrub: ${done}/${containers} containers`),
    ),
  (report) => hasFindings(report, "damaged"),
);
poolCommand(
  "check",
  "audit reference counts against the block maps (mark and sweep)",
  "/v1/pool/check",
  (p) => p.check(),
  (report) => hasFindings(report, "clean", true),
);
poolCommand("gc", "reclaim dead chunks and compact containers", "/v1/pool/gc", async (p) => {
  const mib = (n: number) => (n / 1048576).toFixed(1);
  const report = await p.gc({
    onProgress: ({ done, containers, containersCompacted, bytesMoved, bytesReclaimed }) =>
      process.stderr.write(
        `\rgc: ${done}/${containers} containers, ${containersCompacted} compacted, ` +
          `${mib(bytesMoved)} MiB moved, ${mib(bytesReclaimed)} MiB of files deleted`,
      ),
  });
  process.stderr.write("\n");
  return report;
});

pool
  .command("rebuild")
  .description(
    "rebuild the metadata store from the containers and the map log: fingerprint indexes, " +
      "block maps and snapshots, references (stopped server only; a present meta/ is moved aside)",
  )
  .requiredOption("--data <dir>", "data directory")
  .option("--key-file <file>", KEY_FILE_HELP)
  .option("--json", "print JSON")
  .action(async (opts: { data: string; keyFile?: string; json?: boolean }) => {
    // Like withStoppedPool, but the pool opens in rebuild mode: the store is rebuilt before the
    // open reconciles volumes and snapshots with the registry.
    const dataDir = path.resolve(opts.data);
    const lock = await lockDataDir(dataDir);
    try {
      const config = existsSync(path.join(dataDir, "sanmux.yaml"))
        ? await loadConfig(path.join(dataDir, "sanmux.yaml"))
        : undefined;
      const p = await Pool.open({
        dir: poolDir(dataDir),
        masterKey: await requireKey(opts.keyFile),
        logger: createLogger({
          level: "warn",
          destination: pino.destination({ dest: 2, sync: true }),
        }),
        devices: [...(config?.pool.devices ?? [])],
        rebuildMaps: true,
      });
      try {
        const report = p.mapRebuild;
        print(report, opts.json === true);
        if (report === undefined || !report.audit.clean || report.maps.failed > 0)
          process.exitCode = 2;
      } finally {
        await p.close();
      }
    } finally {
      await lock.release();
    }
  });

pool
  .command("add-device")
  .description("add a directory to the pool; new containers spread over devices by free space")
  .argument("<dir>", "directory on the new device")
  .requiredOption("--data <dir>", "data directory")
  .option("--key-file <file>", `${KEY_FILE_HELP} (only when no server runs)`)
  .action(async (dir: string, opts: { data: string; keyFile?: string }) => {
    const dataDir = path.resolve(opts.data);
    const device = path.resolve(dir);
    const report =
      (await callControl(dataDir, "POST", "/v1/pool/devices", { dir: device })) ??
      (await withStoppedPool(dataDir, opts.keyFile, async (p) => {
        await p.addDevice(device);
        return p.usage();
      }));
    print(report, false);
  });

const snapshot = program
  .command("snapshot")
  .description(
    "snapshots of pool volumes: create, list, delete, clone (through the running server, else on the stopped data directory)",
  );

/** Run through the running server's control API, else on the stopped data directory. */
async function viaServerOrPool(
  opts: { data: string; keyFile?: string },
  method: "GET" | "POST" | "DELETE",
  route: string,
  body: unknown,
  local: (pool: Pool) => Promise<unknown>,
): Promise<unknown> {
  const dataDir = path.resolve(opts.data);
  return (
    (await callControl(dataDir, method, route, body)) ??
    (await withStoppedPool(dataDir, opts.keyFile, local))
  );
}

type SnapshotOpts = { data: string; keyFile?: string; json?: boolean };

function snapshotCommand(name: string, description: string) {
  return snapshot
    .command(name)
    .description(description)
    .requiredOption("--data <dir>", "data directory")
    .option("--key-file <file>", `${KEY_FILE_HELP} (only when no server runs)`)
    .option("--json", "print JSON");
}

snapshotCommand("create", "take a snapshot of a pool volume (instant, read-only)")
  .argument("<volume>", "pool volume")
  .argument("<name>", "snapshot name, unique per volume")
  .action(async (volume: string, name: string, opts: SnapshotOpts) => {
    const report = await viaServerOrPool(opts, "POST", "/v1/snapshots", { volume, name }, (p) =>
      p.createSnapshot(volume, name),
    );
    print(report, opts.json === true);
  });

snapshotCommand("list", "list the snapshots of a volume, or of every volume")
  .argument("[volume]", "pool volume")
  .action(async (volume: string | undefined, opts: SnapshotOpts) => {
    const query = volume === undefined ? "" : `?volume=${encodeURIComponent(volume)}`;
    const report = await viaServerOrPool(opts, "GET", `/v1/snapshots${query}`, undefined, (p) =>
      Promise.resolve(p.listSnapshots(volume)),
    );
    if (opts.json === true) {
      print(report, true);
      return;
    }
    const rows = Array.isArray(report) ? (report as SnapshotInfo[]) : [];
    if (rows.length === 0) console.log("no snapshots");
    for (const r of rows) {
      const held = r.heldBytes === undefined ? "" : `  holds ${r.heldBytes} bytes`;
      console.log(`${r.volume}@${r.name}  ${r.createdAt}  ${r.sizeBytes} bytes${held}`);
    }
  });

snapshotCommand("delete", "delete a snapshot (refused while the running config maps it)")
  .argument("<volume>", "pool volume")
  .argument("<name>", "snapshot name")
  .action(async (volume: string, name: string, opts: SnapshotOpts) => {
    const route = `/v1/snapshots/${encodeURIComponent(volume)}/${encodeURIComponent(name)}`;
    const report = await viaServerOrPool(opts, "DELETE", route, undefined, async (p) => {
      await p.deleteSnapshot(volume, name);
      return { deleted: `${volume}@${name}` };
    });
    print(report, opts.json === true);
  });

snapshotCommand(
  "clone",
  "make a writable volume from a snapshot (same domain, size and block size; add it to the config to map it)",
)
  .argument("<volume>", "pool volume")
  .argument("<name>", "snapshot name")
  .argument("<new-volume>", "name of the new volume")
  .action(async (volume: string, name: string, newVolume: string, opts: SnapshotOpts) => {
    const route = `/v1/snapshots/${encodeURIComponent(volume)}/${encodeURIComponent(name)}/clone`;
    const report = await viaServerOrPool(opts, "POST", route, { volume: newVolume }, async (p) => {
      const c = await p.cloneSnapshot(volume, name, newVolume);
      return { volume: c.name, sizeBytes: c.sizeBytes, blockSize: c.blockSize };
    });
    print(report, opts.json === true);
  });

program
  .command("volume")
  .description("pool volumes (create and grow them in the config)")
  .command("delete")
  .description(
    "delete a pool volume and release its space (refused while the running config declares it, or while it has snapshots)",
  )
  .argument("<name>", "pool volume")
  .requiredOption("--data <dir>", "data directory")
  .option("--key-file <file>", `${KEY_FILE_HELP} (only when no server runs)`)
  .option("--json", "print JSON")
  .action(async (name: string, opts: SnapshotOpts) => {
    const route = `/v1/volumes/${encodeURIComponent(name)}`;
    const report = await viaServerOrPool(opts, "DELETE", route, undefined, async (p) => {
      await p.deleteVolume(name);
      return { deleted: name };
    });
    print(report, opts.json === true);
  });

/**
 * Whether a report says something is wrong: a non-empty array (or positive count) under `key`,
 * or, with `expectTrue`, `key` not being true.
 */
function hasFindings(report: unknown, key: string, expectTrue = false): boolean {
  if (report === null || typeof report !== "object") return false;
  const value = (report as Record<string, unknown>)[key];
  if (expectTrue) return value !== true;
  if (Array.isArray(value)) return value.length > 0;
  return typeof value === "number" && value > 0;
}

/**
 * Call `onChange` once the config file has been changed and left alone for 300 ms (editors
 * write in several steps, or replace the file: the directory is watched, not the inode).
 */
function watchConfig(configPath: string, onChange: () => void): void {
  let timer: NodeJS.Timeout | undefined;
  const name = path.basename(configPath);
  watch(path.dirname(configPath), { persistent: false }, (_event, file) => {
    if (file !== null && file.toString() !== name) return;
    clearTimeout(timer);
    timer = setTimeout(onChange, 300);
  });
}

function parsePortal(value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(value);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || !(port >= 0 && port < 65536)) {
    throw new InvalidArgumentError(
      `expected HOST:PORT (e.g. 127.0.0.1:3260; port 0 picks a free one), got "${value}"`,
    );
  }
  return { host: (m[1] ?? m[2]) as string, port };
}

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof ConfigError) {
    console.error(`sanmux: ${err.message}`);
  } else {
    console.error(`sanmux: ${err instanceof Error ? err.message : String(err)}`);
  }
  process.exit(1);
});
