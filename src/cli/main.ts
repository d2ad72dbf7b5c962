#!/usr/bin/env node
/**
 * The `sanmux` command. `serve` runs the target in the foreground; the other subcommands work on
 * a data directory or a config file.
 */
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { Command, InvalidArgumentError } from "commander";
import { ConfigError, DEMO_CONFIG_YAML, loadConfig } from "../access/config.js";
import { SanmuxServer } from "../control/server.js";
import { createLogger } from "../util/log.js";

// Volume I/O goes through libuv's thread pool; its default of 4 threads would cap the disk
// queue depth at 4 whatever the initiators' queue depth. Read before the pool starts (lazily,
// at the first fs call), so setting it here takes effect.
process.env.UV_THREADPOOL_SIZE ??= "32";

const program = new Command();
program
  .name("sanmux")
  .description("Shared SAN storage server: one pool served to many agents over iSCSI");

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
  .action(
    async (opts: { data: string; config?: string; portal: { host: string; port: number } }) => {
      const logger = createLogger();
      const dataDir = path.resolve(opts.data);
      await mkdir(dataDir, { recursive: true });
      let configPath = opts.config;
      if (!configPath) {
        configPath = path.join(dataDir, "sanmux.yaml");
        if (!existsSync(configPath)) {
          await writeFile(configPath, DEMO_CONFIG_YAML, { mode: 0o600 });
          logger.info({ config: configPath }, "no config given: wrote a demo config");
        }
      }
      const config = await loadConfig(configPath);
      const server = await SanmuxServer.start({ dataDir, config, portal: opts.portal, logger });
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
