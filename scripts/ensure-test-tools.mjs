#!/usr/bin/env node
// Makes sure the external tools that the test suite (and bench/) drive are installed:
//   libiscsi-bin      -> iscsi-test-cu, iscsi-inq, iscsi-ls, iscsi-perf, iscsi-readcapacity16
//   libiscsi-dev, gcc -> building test/tools/iscsi-probe.c against libiscsi (-liscsi)
//   qemu-utils        -> qemu-img, qemu-io
//   qemu-block-extra  -> qemu's iscsi block driver (block-iscsi.so, loaded as a module)
// When something is missing and we are root, installs those Debian packages with apt-get.
// Otherwise exits 1 naming what is missing. It never skips silently.
// Plain Node ESM, no dependencies: it runs before `npm ci` has necessarily happened.

import { spawnSync } from "node:child_process";
import { accessSync, constants, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

const PACKAGES = ["libiscsi-bin", "libiscsi-dev", "qemu-utils", "qemu-block-extra", "gcc"];
const TOOLS = [
  { name: "iscsi-test-cu", pkg: "libiscsi-bin" },
  { name: "iscsi-inq", pkg: "libiscsi-bin" },
  { name: "iscsi-ls", pkg: "libiscsi-bin" },
  { name: "iscsi-perf", pkg: "libiscsi-bin" },
  { name: "iscsi-readcapacity16", pkg: "libiscsi-bin" },
  { name: "qemu-img", pkg: "qemu-utils" },
  { name: "qemu-io", pkg: "qemu-utils" },
  { name: "gcc", pkg: "gcc" },
];
const PREFIX = "ensure-test-tools:";

function which(name) {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not in this directory
    }
  }
  return null;
}

// `qemu-img --help` lists "iscsi" among the supported formats even when the module that implements
// it (qemu-block-extra's block-iscsi.so) is absent, so it proves nothing. Instead, ask qemu-img to
// open an iSCSI LUN on a loopback port where nothing listens: with the driver present this fails
// with a connection error; without it qemu says "Unknown driver 'iscsi'" (and suggests installing
// qemu-block-extra). A qemu-block-extra whose version does not match qemu-utils fails the same way.
const NO_ISCSI_DRIVER =
  /unknown (driver|protocol) 'iscsi'|module \S*iscsi\S* not found|failed to (open|load) module/i;

function probeQemuIscsiDriver(qemuImg) {
  const opts =
    "driver=iscsi,transport=tcp,portal=127.0.0.1:1,target=iqn.2000-01.invalid:probe,lun=0";
  const r = spawnSync(qemuImg, ["info", "--image-opts", opts], {
    encoding: "utf8",
    timeout: 30_000,
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (r.error && r.error.code !== "ETIMEDOUT") {
    return { ok: false, why: `could not run ${qemuImg}: ${r.error.message}` };
  }
  const out = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  if (NO_ISCSI_DRIVER.test(out)) {
    const first = out.split("\n").find((l) => l.trim() !== "") ?? "";
    return { ok: false, why: `qemu-img has no iscsi driver (${first.trim()})` };
  }
  // Connection refused (or a timeout while connecting) means the driver loaded.
  return { ok: true };
}

// Compiles and links a tiny program against libiscsi, as the end-to-end tests do with
// test/tools/iscsi-probe.c: needs libiscsi-dev's headers and its libiscsi.so link.
function probeLibiscsiDev(gcc) {
  const dir = mkdtempSync(join(tmpdir(), "ensure-test-tools-"));
  try {
    const program = [
      "#include <iscsi/iscsi.h>",
      "#include <iscsi/scsi-lowlevel.h>",
      'int main(void) { struct iscsi_context *c = iscsi_create_context("iqn.2000-01.invalid:x");',
      "  return c == 0; }",
    ].join("\n");
    const r = spawnSync(gcc, ["-x", "c", "-", "-o", join(dir, "probe"), "-liscsi"], {
      input: program,
      encoding: "utf8",
      timeout: 60_000,
    });
    if (r.status === 0) return { ok: true };
    const first = `${r.stderr ?? ""}${r.error?.message ?? ""}`.split("\n").find((l) => l.trim());
    return { ok: false, why: `cannot build against libiscsi: ${(first ?? "").trim()}` };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function qemuVersion(qemuImg) {
  const r = spawnSync(qemuImg, ["--version"], { encoding: "utf8" });
  const m = /version\s+(\S+)/.exec(r.stdout ?? "");
  return m ? m[1] : "unknown version";
}

function dpkgVersion(pkg) {
  // Default output format: "<package>\t<version>".
  const r = spawnSync("dpkg-query", ["-W", pkg], { encoding: "utf8" });
  const version = r.status === 0 ? r.stdout?.split("\t")[1]?.trim() : undefined;
  return version || null;
}

function check() {
  const found = {};
  const missing = [];
  for (const tool of TOOLS) {
    const path = which(tool.name);
    if (path) found[tool.name] = path;
    else missing.push({ what: tool.name, pkg: tool.pkg });
  }
  if (found["qemu-img"]) {
    const probe = probeQemuIscsiDriver(found["qemu-img"]);
    if (!probe.ok)
      missing.push({ what: "qemu iscsi block driver", pkg: "qemu-block-extra", why: probe.why });
  } else {
    missing.push({ what: "qemu iscsi block driver", pkg: "qemu-block-extra" });
  }
  if (found.gcc) {
    const probe = probeLibiscsiDev(found.gcc);
    if (!probe.ok)
      missing.push({ what: "libiscsi headers/library", pkg: "libiscsi-dev", why: probe.why });
  } else {
    missing.push({ what: "libiscsi headers/library", pkg: "libiscsi-dev" });
  }
  return { found, missing };
}

function describeMissing(missing) {
  const pkgs = [...new Set(missing.map((m) => m.pkg))];
  const whats = missing.map((m) => (m.why ? `${m.what} [${m.why}]` : m.what));
  return `missing ${whats.join(", ")} (Debian packages: ${pkgs.join(" ")})`;
}

function aptGet(args) {
  console.error(`${PREFIX} running: apt-get ${args.join(" ")}`);
  const r = spawnSync("apt-get", args, {
    // apt's progress goes to stderr so that this script's stdout stays one line.
    stdio: ["ignore", 2, 2],
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  if (r.error) {
    console.error(`${PREFIX} could not run apt-get: ${r.error.message}`);
    return false;
  }
  return r.status === 0;
}

function install() {
  const installArgs = ["install", "-y", "-q", ...PACKAGES];
  if (aptGet(installArgs)) return true;
  console.error(`${PREFIX} install failed; refreshing the package lists and retrying`);
  return aptGet(["update", "-q"]) && aptGet(installArgs);
}

function summary(found, installed) {
  const v = (pkg) => dpkgVersion(pkg) ?? "?";
  const iscsiTools = TOOLS.filter((t) => t.pkg === "libiscsi-bin").map((t) => t.name);
  return (
    `${PREFIX} ${installed ? "installed and found" : "found"} ${iscsiTools.join(", ")} ` +
    `(libiscsi-bin ${v("libiscsi-bin")}); qemu-img, qemu-io ${qemuVersion(found["qemu-img"])} ` +
    `with the iscsi block driver (qemu-block-extra ${v("qemu-block-extra")}); ` +
    `gcc builds against libiscsi (libiscsi-dev ${v("libiscsi-dev")})`
  );
}

function main() {
  let { found, missing } = check();
  if (missing.length === 0) {
    console.log(summary(found, false));
    return 0;
  }
  const what = describeMissing(missing);
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  if (!isRoot) {
    console.error(`${PREFIX} ${what}.`);
    console.error(
      `${PREFIX} not root, so not installing. Run as root: apt-get install -y ${PACKAGES.join(" ")}`,
    );
    return 1;
  }
  console.error(`${PREFIX} ${what}; installing ${PACKAGES.join(" ")}`);
  if (!install()) {
    console.error(`${PREFIX} apt-get failed; still ${what}`);
    return 1;
  }
  ({ found, missing } = check());
  if (missing.length > 0) {
    // The packages are installed but a file of theirs is gone (or qemu-block-extra does not match
    // qemu-utils): a plain install leaves that as it is, so reinstall them.
    console.error(
      `${PREFIX} still ${describeMissing(missing)}; reinstalling ${PACKAGES.join(" ")}`,
    );
    aptGet(["install", "-y", "-q", "--reinstall", ...PACKAGES]);
    ({ found, missing } = check());
  }
  if (missing.length > 0) {
    console.error(`${PREFIX} after installing, still ${describeMissing(missing)}`);
    return 1;
  }
  console.log(summary(found, true));
  return 0;
}

process.exitCode = main();
