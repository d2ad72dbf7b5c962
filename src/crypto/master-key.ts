/**
 * The master key: 32 random bytes, the root of every key sanmux derives (kdf.ts). It comes from a
 * key file or from the SANMUX_MASTER_KEY environment variable, never from the data directory in
 * clear (DESIGN.md, "Domains and encryption"). The data directory stores only a key check value
 * (`keyCheckValue`), from which the key cannot be recovered, so that a wrong key is refused at
 * start instead of producing undecryptable data.
 *
 * Key file formats: exactly 32 raw bytes, or 64 hex digits (surrounding whitespace and a final
 * newline allowed; this is what `createKeyFile` writes, so the same text also works as
 * SANMUX_MASTER_KEY). The file must be a regular file that only its owner can access (like ssh
 * private keys: no group or other permission bits) and be owned by the user running sanmux or by
 * root.
 */

import { createSecretKey, type KeyObject, randomBytes, timingSafeEqual } from "node:crypto";
import { type FileHandle, link, open, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { fsyncDirectory, isErrnoException } from "../util/atomic-file.js";
import { KeyError, KeyErrorCode } from "./errors.js";
import { deriveBytes, KdfLabel } from "./kdf.js";

export const MASTER_KEY_BYTES = 32;
export const MASTER_KEY_ENV = "SANMUX_MASTER_KEY";

/** Where to find the master key. */
export interface MasterKeySource {
  /** Path of the key file (`--key-file`). */
  readonly keyFile?: string | undefined;
  /** The environment to read SANMUX_MASTER_KEY from. Default: `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>> | undefined;
}

const HEX_KEY_RE = /^[0-9a-fA-F]{64}$/;
const HEX_ONLY_RE = /^[0-9a-fA-F]+$/;

/** A master key from 32 bytes (for tools and tests; operators use a key file or the env var). */
export function masterKeyFromBytes(bytes: Uint8Array): KeyObject {
  if (bytes.length !== MASTER_KEY_BYTES) {
    throw new KeyError(
      KeyErrorCode.BadFormat,
      `a master key has ${MASTER_KEY_BYTES} bytes, got ${bytes.length}`,
    );
  }
  if (bytes.every((b) => b === 0)) {
    throw new KeyError(KeyErrorCode.BadFormat, "the master key is all zeros: generate a real one");
  }
  return createSecretKey(Buffer.from(bytes));
}

function parseHexKey(text: string, where: string): KeyObject {
  const hex = text.trim();
  if (!HEX_KEY_RE.test(hex)) {
    throw new KeyError(
      KeyErrorCode.BadFormat,
      `${where} must hold ${MASTER_KEY_BYTES * 2} hex digits (a ${MASTER_KEY_BYTES}-byte key); ` +
        `found ${hex.length} characters${HEX_ONLY_RE.test(hex) ? " of hex" : " that are not all hex digits"}`,
    );
  }
  return masterKeyFromBytes(Buffer.from(hex, "hex"));
}

/** Parse the contents of a key file: 32 raw bytes, or 64 hex digits with optional whitespace. */
export function parseKeyFile(contents: Uint8Array, path = "the key file"): KeyObject {
  if (contents.length === MASTER_KEY_BYTES) {
    const text = Buffer.from(contents).toString("latin1");
    // 32 hex digits are almost surely a 16-byte key written in hex, not 32 raw bytes (a random
    // 32-byte key is all hex digits with probability (22/256)^32 ≈ 10^-34).
    if (HEX_ONLY_RE.test(text)) {
      throw new KeyError(
        KeyErrorCode.BadFormat,
        `${path} holds 32 hex digits (a 16-byte key); a master key has ${MASTER_KEY_BYTES} bytes ` +
          `(${MASTER_KEY_BYTES * 2} hex digits)`,
      );
    }
    return masterKeyFromBytes(contents);
  }
  return parseHexKey(Buffer.from(contents).toString("latin1"), path);
}

async function readKeyFile(path: string): Promise<KeyObject> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (error) {
    const why =
      isErrnoException(error) && error.code === "ENOENT"
        ? "does not exist (create one with `sanmux init`)"
        : `cannot be opened: ${(error as Error).message}`;
    throw new KeyError(KeyErrorCode.Unreadable, `key file ${path} ${why}`, { cause: error });
  }
  try {
    // fstat the open file, not the path, so that what is checked is what is read. Symbolic links
    // are followed (secret stores mount keys through them); the target is what must be private.
    const st = await handle.stat();
    if (!st.isFile()) {
      throw new KeyError(KeyErrorCode.Unreadable, `key file ${path} is not a regular file`);
    }
    if (process.platform !== "win32") {
      const mode = st.mode & 0o777;
      if ((mode & 0o077) !== 0) {
        throw new KeyError(
          KeyErrorCode.UnsafePermissions,
          `key file ${path} is accessible by group or others (mode ${mode.toString(8).padStart(4, "0")}); ` +
            `restrict it with \`chmod 600 ${path}\``,
        );
      }
      const uid = process.getuid?.();
      if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
        throw new KeyError(
          KeyErrorCode.UnsafePermissions,
          `key file ${path} is owned by uid ${st.uid}, not by the user running sanmux (uid ${uid}) or root`,
        );
      }
    }
    if (st.size > 4096) {
      throw new KeyError(KeyErrorCode.BadFormat, `key file ${path} is too large to be a key`);
    }
    const contents = await handle.readFile();
    try {
      return parseKeyFile(contents, `key file ${path}`);
    } finally {
      contents.fill(0);
    }
  } finally {
    await handle.close();
  }
}

/**
 * Load the master key from `keyFile`, else from SANMUX_MASTER_KEY in `env`. When both are given
 * they must hold the same key (a stray variable must not silently lose to the file, or win over
 * it). Rejects with a `KeyError` whose message tells the operator what is wrong.
 */
export async function loadMasterKey(source: MasterKeySource = {}): Promise<KeyObject> {
  const env = source.env ?? process.env;
  const envText = env[MASTER_KEY_ENV];
  const fromEnv =
    envText !== undefined && envText !== ""
      ? parseHexKey(envText, `the ${MASTER_KEY_ENV} environment variable`)
      : undefined;
  if (source.keyFile === undefined) {
    if (fromEnv === undefined) {
      throw new KeyError(
        KeyErrorCode.NoKey,
        `no master key: give a key file (--key-file, created by \`sanmux init\`) or set ${MASTER_KEY_ENV} ` +
          `to ${MASTER_KEY_BYTES * 2} hex digits`,
      );
    }
    return fromEnv;
  }
  const fromFile = await readKeyFile(source.keyFile);
  if (fromEnv !== undefined && !fromEnv.equals(fromFile)) {
    throw new KeyError(
      KeyErrorCode.Conflict,
      `the key file ${source.keyFile} and ${MASTER_KEY_ENV} hold different keys; give only one`,
    );
  }
  return fromFile;
}

/**
 * Create a key file at `path` holding a new random master key as 64 hex digits and a newline,
 * with mode 0600. Refuses (KeyError EXISTS) when anything exists at `path`; never overwrites.
 * When the promise resolves the file is complete and durable; a crash before that leaves either
 * no file at `path` or the complete one (the key is written to a temporary file, fsynced, then
 * hard-linked into place, which fails rather than replaces).
 */
export async function createKeyFile(path: string): Promise<KeyObject> {
  const bytes = randomBytes(MASTER_KEY_BYTES);
  const text = Buffer.from(`${bytes.toString("hex")}\n`, "latin1");
  const key = masterKeyFromBytes(bytes);
  bytes.fill(0);
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
  try {
    await writePrivateFile(tmp, text);
    try {
      await link(tmp, path);
    } catch (error) {
      if (isErrnoException(error) && error.code === "EEXIST") throw exists(path, error);
      // File systems without hard links: exclusive create in place (not crash-atomic).
      if (
        isErrnoException(error) &&
        ["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS"].includes(error.code ?? "")
      ) {
        await writePrivateFile(path, text).catch((e: unknown) => {
          throw isErrnoException(e) && e.code === "EEXIST" ? exists(path, e) : e;
        });
      } else {
        throw error;
      }
    }
  } finally {
    text.fill(0);
    await unlink(tmp).catch(() => undefined);
  }
  await fsyncDirectory(dir);
  return key;
}

function exists(path: string, cause: unknown): KeyError {
  return new KeyError(
    KeyErrorCode.Exists,
    `key file ${path} already exists; refusing to overwrite it (a lost master key makes the pool unreadable)`,
    { cause },
  );
}

async function writePrivateFile(path: string, data: Buffer): Promise<void> {
  const handle = await open(path, "wx", 0o600);
  try {
    await handle.chmod(0o600); // whatever the umask
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

const KCV_PREFIX = "kcv1:";

/**
 * The key check value to store in the data directory: "kcv1:" and 64 hex digits of
 * HKDF(master, "sanmux/v1/key-check"). It identifies the key without revealing it (HKDF output is
 * one-way), so the server can refuse a wrong key at start.
 */
export function keyCheckValue(master: KeyObject): string {
  return `${KCV_PREFIX}${deriveBytes(master, KdfLabel.KeyCheck, Buffer.alloc(0)).toString("hex")}`;
}

/** A short public name of a key for logs and messages: the first 16 hex digits of its check value. */
export function keyId(master: KeyObject): string {
  return keyCheckValue(master).slice(KCV_PREFIX.length, KCV_PREFIX.length + 16);
}

/**
 * Throw KeyError WRONG_KEY unless `master` is the key whose check value is `storedCheck`
 * (as `keyCheckValue` made it when the data directory was initialized).
 */
export function verifyMasterKey(master: KeyObject, storedCheck: string): void {
  const stored = storedCheck.trim();
  const hex = stored.startsWith(KCV_PREFIX) ? stored.slice(KCV_PREFIX.length) : "";
  if (!HEX_KEY_RE.test(hex)) {
    throw new KeyError(
      KeyErrorCode.BadFormat,
      `the stored key check value is not in a known format (expected "${KCV_PREFIX}" and 64 hex digits)`,
    );
  }
  const expected = Buffer.from(hex, "hex");
  const actual = Buffer.from(keyCheckValue(master).slice(KCV_PREFIX.length), "hex");
  if (!timingSafeEqual(expected, actual)) {
    throw new KeyError(
      KeyErrorCode.WrongKey,
      `wrong master key: the data directory was created with key ${hex.slice(0, 16)}, ` +
        `but the key given is ${actual.toString("hex").slice(0, 16)}; give the key file or ` +
        `${MASTER_KEY_ENV} that was used when the pool was created`,
    );
  }
}
