import { randomBytes } from "node:crypto";
import {
  chmod,
  chown,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { KeyError, KeyErrorCode } from "./errors.js";
import {
  createKeyFile,
  keyCheckValue,
  keyId,
  loadMasterKey,
  MASTER_KEY_ENV,
  masterKeyFromBytes,
  verifyMasterKey,
} from "./master-key.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "sanmux-key-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const posix = process.platform !== "win32";
const noEnv = {};

async function keyError(promise: Promise<unknown>, code: KeyErrorCode): Promise<KeyError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(KeyError);
  expect((error as KeyError).code).toBe(code);
  return error as KeyError;
}

async function writeKey(name: string, contents: string | Buffer, mode = 0o600): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, contents, { mode });
  await chmod(path, mode);
  return path;
}

describe("createKeyFile", () => {
  it("writes a random key as hex with mode 0600, durably and without temporary files", async () => {
    const path = join(dir, "master.key");
    const key = await createKeyFile(path);
    const text = await readFile(path, "latin1");
    expect(text).toMatch(/^[0-9a-f]{64}\n$/);
    expect(text.trim()).toBe(key.export().toString("hex"));
    if (posix) expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(["master.key"]);
    const loaded = await loadMasterKey({ keyFile: path, env: noEnv });
    expect(loaded.equals(key)).toBe(true);
    // Two keys are never the same.
    expect((await createKeyFile(join(dir, "other.key"))).equals(key)).toBe(false);
  });

  it("refuses to overwrite an existing file", async () => {
    const path = await writeKey("master.key", "precious");
    const error = await keyError(createKeyFile(path), KeyErrorCode.Exists);
    expect(error.message).toMatch(/already exists; refusing to overwrite/);
    expect(await readFile(path, "utf8")).toBe("precious");
    expect(await readdir(dir)).toEqual(["master.key"]);
  });
});

describe("loadMasterKey from a key file", () => {
  const bytes = randomBytes(32);

  it("accepts 32 raw bytes", async () => {
    const path = await writeKey("raw.key", bytes);
    const key = await loadMasterKey({ keyFile: path, env: noEnv });
    expect(key.export().equals(bytes)).toBe(true);
    expect(key.symmetricKeySize).toBe(32);
  });

  it("accepts 64 hex digits, any case, with surrounding whitespace", async () => {
    for (const text of [
      bytes.toString("hex"),
      `${bytes.toString("hex")}\n`,
      `  ${bytes.toString("hex").toUpperCase()}\r\n`,
    ]) {
      const path = await writeKey(`hex-${randomBytes(4).toString("hex")}.key`, text);
      const key = await loadMasterKey({ keyFile: path, env: noEnv });
      expect(key.export().equals(bytes)).toBe(true);
    }
  });

  it("refuses other formats with a message that does not echo the contents", async () => {
    const cases: [string, string | Buffer, RegExp][] = [
      ["short-hex", bytes.toString("hex").slice(0, 62), /64 hex digits/],
      ["long-hex", `${bytes.toString("hex")}00`, /64 hex digits/],
      ["not-hex", "z".repeat(64), /not all hex digits/],
      ["hex16", bytes.toString("hex").slice(0, 32), /16-byte key/],
      ["raw31", bytes.subarray(0, 31), /64 hex digits/],
      ["zeros", Buffer.alloc(32), /all zeros/],
      ["zeros-hex", "0".repeat(64), /all zeros/],
      ["empty", "", /64 hex digits/],
    ];
    for (const [name, contents, message] of cases) {
      const path = await writeKey(`${name}.key`, contents);
      const error = await keyError(
        loadMasterKey({ keyFile: path, env: noEnv }),
        KeyErrorCode.BadFormat,
      );
      expect(error.message, name).toMatch(message);
      expect(error.message).not.toContain(bytes.toString("hex").slice(0, 16));
    }
  });

  it.skipIf(!posix)("refuses a file accessible by group or others, naming the fix", async () => {
    for (const mode of [0o640, 0o604, 0o644, 0o660, 0o620, 0o602, 0o610]) {
      const path = await writeKey(`m${mode.toString(8)}.key`, bytes.toString("hex"), mode);
      const error = await keyError(
        loadMasterKey({ keyFile: path, env: noEnv }),
        KeyErrorCode.UnsafePermissions,
      );
      expect(error.message).toContain(`mode 0${mode.toString(8)}`);
      expect(error.message).toContain(`chmod 600 ${path}`);
    }
    for (const mode of [0o600, 0o400]) {
      const path = await writeKey(`ok${mode.toString(8)}.key`, bytes.toString("hex"), mode);
      await expect(loadMasterKey({ keyFile: path, env: noEnv })).resolves.toBeDefined();
    }
  });

  it.skipIf(!posix || process.getuid?.() !== 0)(
    "refuses a file owned by another user (checked as root)",
    async () => {
      const path = await writeKey("owned.key", bytes.toString("hex"));
      await chown(path, 12345, 12345);
      // Root runs sanmux here, and the file belongs to uid 12345, who can read the key.
      const error = await keyError(
        loadMasterKey({ keyFile: path, env: noEnv }),
        KeyErrorCode.UnsafePermissions,
      );
      expect(error.message).toMatch(/owned by uid 12345/);
    },
  );

  it.skipIf(!posix)("follows a symbolic link and checks the file it points to", async () => {
    const target = await writeKey("target.key", bytes.toString("hex"));
    const link = join(dir, "link.key");
    await symlink(target, link);
    expect((await loadMasterKey({ keyFile: link, env: noEnv })).export().equals(bytes)).toBe(true);
    await chmod(target, 0o644);
    await keyError(loadMasterKey({ keyFile: link, env: noEnv }), KeyErrorCode.UnsafePermissions);
  });

  it("says when the file is missing or not a file", async () => {
    const missing = await keyError(
      loadMasterKey({ keyFile: join(dir, "nope.key"), env: noEnv }),
      KeyErrorCode.Unreadable,
    );
    expect(missing.message).toMatch(/does not exist/);
    const sub = join(dir, "sub");
    await mkdir(sub, { mode: 0o700 });
    await keyError(loadMasterKey({ keyFile: sub, env: noEnv }), KeyErrorCode.Unreadable);
  });
});

describe("loadMasterKey from SANMUX_MASTER_KEY", () => {
  const bytes = randomBytes(32);

  it("accepts 64 hex digits", async () => {
    const key = await loadMasterKey({ env: { [MASTER_KEY_ENV]: `${bytes.toString("hex")}\n` } });
    expect(key.export().equals(bytes)).toBe(true);
  });

  it("refuses a malformed value, naming the variable", async () => {
    for (const value of ["abc", bytes.toString("base64"), bytes.toString("hex").slice(2)]) {
      const error = await keyError(
        loadMasterKey({ env: { [MASTER_KEY_ENV]: value } }),
        KeyErrorCode.BadFormat,
      );
      expect(error.message).toContain(MASTER_KEY_ENV);
    }
  });

  it("says how to give a key when there is none (an empty variable counts as none)", async () => {
    for (const env of [{}, { [MASTER_KEY_ENV]: "" }]) {
      const error = await keyError(loadMasterKey({ env }), KeyErrorCode.NoKey);
      expect(error.message).toContain("--key-file");
      expect(error.message).toContain(MASTER_KEY_ENV);
    }
  });

  it("accepts a key file and the variable together only when they agree", async () => {
    const path = await writeKey("master.key", bytes);
    const same = await loadMasterKey({
      keyFile: path,
      env: { [MASTER_KEY_ENV]: bytes.toString("hex") },
    });
    expect(same.export().equals(bytes)).toBe(true);
    const error = await keyError(
      loadMasterKey({ keyFile: path, env: { [MASTER_KEY_ENV]: randomBytes(32).toString("hex") } }),
      KeyErrorCode.Conflict,
    );
    expect(error.message).toMatch(/hold different keys/);
  });
});

describe("key check value", () => {
  const key = masterKeyFromBytes(randomBytes(32));

  it("identifies the key without containing it", () => {
    const kcv = keyCheckValue(key);
    expect(kcv).toMatch(/^kcv1:[0-9a-f]{64}$/);
    expect(kcv).not.toContain(key.export().toString("hex"));
    expect(keyCheckValue(masterKeyFromBytes(key.export()))).toBe(kcv);
    expect(keyId(key)).toBe(kcv.slice(5, 21));
    expect(() => verifyMasterKey(key, kcv)).not.toThrow();
    expect(() => verifyMasterKey(key, `${kcv}\n`)).not.toThrow();
  });

  it("refuses another key with a clear message naming both", () => {
    const other = masterKeyFromBytes(randomBytes(32));
    let error: unknown;
    try {
      verifyMasterKey(other, keyCheckValue(key));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(KeyError);
    expect((error as KeyError).code).toBe(KeyErrorCode.WrongKey);
    expect((error as KeyError).message).toMatch(/^wrong master key: /);
    expect((error as KeyError).message).toContain(keyId(key));
    expect((error as KeyError).message).toContain(keyId(other));
  });

  it("refuses a stored value in an unknown format", () => {
    for (const stored of ["", "kcv1:xyz", keyCheckValue(key).slice(5), `kcv2:${"0".repeat(64)}`]) {
      expect(() => verifyMasterKey(key, stored)).toThrow(KeyError);
    }
  });
});
