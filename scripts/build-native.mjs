#!/usr/bin/env node
// Builds sanmux's optional native crypto accelerator, build/sanmux_crypto.node, from
// src/crypto/native/sanmux_crypto.c (see src/crypto/README.md, "Native acceleration").
//
// It compiles with the C compiler directly (no node-gyp: that would download node's headers,
// and sanmux hosts may have no internet). The headers are node's own (<prefix>/include/node,
// next to the running node binary, which include node's OpenSSL headers); nothing is linked:
// the OpenSSL and N-API symbols resolve against the node binary when the addon is loaded.
//
// Optional by design: when there is no compiler, no headers, or the compile fails, it prints
// one line saying why and exits 0. sanmux then uses node:crypto (same bytes, slower), and says
// so at startup. `npm run build` must never fail because of this step.
//
// Skips the compile when the .node is newer than the C source (and this script).
// Environment: CC (compiler, default gcc then cc), SANMUX_NODE_HEADERS (a directory holding
// node_api.h and openssl/evp.h).
// Plain Node ESM, no dependencies.

import { spawnSync } from "node:child_process";
import { accessSync, constants, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { delimiter, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const PREFIX = "build-native:";
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const SOURCE = join(ROOT, "src", "crypto", "native", "sanmux_crypto.c");
export const OUTPUT = join(ROOT, "build", "sanmux_crypto.node");
const SELF = fileURLToPath(import.meta.url);

function which(name) {
  if (name.includes("/")) return isExecutable(name) ? name : null;
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

function isExecutable(path) {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function mtime(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return null;
  }
}

function exists(path) {
  return mtime(path) !== null;
}

/** Directories that may hold node's headers, most specific first. */
function headerCandidates() {
  const list = [];
  if (process.env.SANMUX_NODE_HEADERS) list.push(process.env.SANMUX_NODE_HEADERS);
  list.push(resolve(dirname(process.execPath), "..", "include", "node"));
  list.push("/usr/include/node", "/usr/local/include/node");
  return [...new Set(list)];
}

/**
 * Build the addon if needed. Never throws.
 * @returns {{ status: "built" | "up-to-date" | "skipped", message: string, output: string }}
 */
export function buildNative({ force = false } = {}) {
  const done = (status, message) => ({ status, message: `${PREFIX} ${message}`, output: OUTPUT });
  const rel = relative(process.cwd(), OUTPUT) || OUTPUT;
  try {
    if (process.platform === "win32") {
      return done("skipped", "skipped: not supported on Windows; sanmux will use node:crypto");
    }
    const built = mtime(OUTPUT);
    const newest = Math.max(mtime(SOURCE) ?? 0, mtime(SELF) ?? 0);
    if (!exists(SOURCE)) return done("skipped", `skipped: ${SOURCE} is missing`);
    if (!force && built !== null && built > newest) {
      return done("up-to-date", `${rel} is up to date`);
    }
    const cc = [process.env.CC, "gcc", "cc"].filter(Boolean).map(which).find(Boolean);
    if (!cc) {
      return done(
        "skipped",
        "skipped: no C compiler (gcc or cc) on PATH; sanmux will use node:crypto (install gcc for the native accelerator)",
      );
    }
    const headers = headerCandidates().find(
      (d) => exists(join(d, "node_api.h")) && exists(join(d, "openssl", "evp.h")),
    );
    if (!headers) {
      return done(
        "skipped",
        `skipped: node's headers (node_api.h, openssl/evp.h) not found in ${headerCandidates().join(", ")}; sanmux will use node:crypto`,
      );
    }
    mkdirSync(dirname(OUTPUT), { recursive: true });
    // Compile next to the target and rename into place: a process that has the old addon
    // loaded keeps its inode, and two concurrent builds never leave a half-written file.
    const tmp = `${OUTPUT}.${process.pid}.tmp`;
    const args = [
      "-O2",
      "-std=c11",
      "-Wall",
      "-Wextra",
      "-fPIC",
      "-fvisibility=hidden",
      "-shared",
      `-I${headers}`,
      "-o",
      tmp,
      SOURCE,
    ];
    // Undefined symbols resolve against the node binary at load time. -z now makes a node
    // that lacks one fail the load (sanmux falls back) instead of the first call.
    if (process.platform === "darwin") args.push("-undefined", "dynamic_lookup");
    else args.push("-Wl,-z,now");
    const r = spawnSync(cc, args, { encoding: "utf8", timeout: 120_000 });
    if (r.error || r.status !== 0) {
      rmSync(tmp, { force: true });
      const why = (r.error?.message ?? r.stderr ?? "").trim().split("\n")[0] || `exit ${r.status}`;
      return done("skipped", `skipped: ${cc} failed (${why}); sanmux will use node:crypto`);
    }
    renameSync(tmp, OUTPUT);
    return done("built", `built ${rel} (${cc}, headers ${headers})`);
  } catch (error) {
    return done("skipped", `skipped: ${error?.message ?? error}; sanmux will use node:crypto`);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === SELF) {
  const result = buildNative({ force: process.argv.includes("--force") });
  console.log(result.message);
}
