/**
 * Atomic replacement of small files (catalog, volume metadata).
 *
 * Contract: when `writeFileAtomic` resolves, the file at `path` holds exactly `data` and survives
 * a crash or power loss; at any instant before that, a reader (or a restart after a crash) sees
 * either the complete old content or the complete new content, never a mix or a truncated file.
 *
 * How: write a temporary file in the same directory, fsync it, rename it over the target (atomic
 * on POSIX file systems), then fsync the directory so that the rename itself is durable. A crash
 * may leave a stray `*.tmp` file behind; it is harmless and never read.
 */
import { randomBytes } from "node:crypto";
import { open, readFile, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

export interface AtomicWriteOptions {
  /** File mode of a newly created file. Default 0o600: the data directory is private. */
  readonly mode?: number;
}

export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
  const handle = await open(tmp, "wx", options.mode ?? 0o600);
  try {
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (error) {
    await unlink(tmp).catch(() => undefined);
    throw error;
  }
  await fsyncDirectory(dir);
}

/** Serialize `value` as pretty JSON (with a final newline) and write it atomically. */
export async function writeJsonAtomic(
  path: string,
  value: unknown,
  options: AtomicWriteOptions = {},
): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`, options);
}

/**
 * Read and parse a JSON file. Resolves `undefined` when the file does not exist; rejects when it
 * exists but cannot be read or parsed (a corrupt file must never pass for a missing one).
 */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if (isErrnoException(error) && error.code === "ENOENT") return undefined;
    throw error;
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new Error(`${path}: not valid JSON: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * fsync a directory so that entries created, renamed or removed in it are durable. Platforms
 * that cannot open or sync a directory (Windows) make this a no-op.
 */
export async function fsyncDirectory(dir: string): Promise<void> {
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  try {
    handle = await open(dir, "r");
    await handle.sync();
  } catch (error) {
    if (
      isErrnoException(error) &&
      (error.code === "EISDIR" || error.code === "EPERM" || error.code === "EINVAL")
    ) {
      return;
    }
    throw error;
  } finally {
    await handle?.close();
  }
}

export function isErrnoException(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).code === "string";
}
