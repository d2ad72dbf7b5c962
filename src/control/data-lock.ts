/**
 * One server per data directory: the pool's open containers and journals have one writer. The
 * lock is a pid file created exclusively; one left by a process that no longer runs (kill -9)
 * is taken over, so that a crash never needs manual cleanup.
 */
import { open, readFile, unlink } from "node:fs/promises";
import path from "node:path";
import { isErrnoException } from "../util/atomic-file.js";

export const LOCK_FILE = "sanmux.pid";

export class DataDirLockedError extends Error {
  override readonly name = "DataDirLockedError";
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return isErrnoException(error) && error.code === "EPERM";
  }
}

/** The pid of the live process holding `dataDir`, if any. */
export async function lockHolder(dataDir: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(path.join(dataDir, LOCK_FILE), "utf8")).trim());
    return Number.isSafeInteger(pid) && pid > 0 && running(pid) ? pid : undefined;
  } catch (error) {
    if (isErrnoException(error) && error.code === "ENOENT") return undefined;
    throw error;
  }
}

export interface DataDirLock {
  release(): Promise<void>;
}

export async function lockDataDir(dataDir: string): Promise<DataDirLock> {
  const file = path.join(dataDir, LOCK_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const handle = await open(file, "wx", 0o644);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      return { release: () => unlink(file).catch(() => undefined) };
    } catch (error) {
      if (!(isErrnoException(error) && error.code === "EEXIST")) throw error;
    }
    const holder = await lockHolder(dataDir);
    if (holder !== undefined && holder !== process.pid) {
      throw new DataDirLockedError(
        `${dataDir} is in use by another sanmux (pid ${holder}); stop it first, or talk to it with \`sanmux status --data ${dataDir}\``,
      );
    }
    await unlink(file).catch(() => undefined); // stale: its process is gone
  }
  throw new DataDirLockedError(`cannot lock ${dataDir}: ${file} keeps reappearing`);
}
