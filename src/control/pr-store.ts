/**
 * The persistent reservation store of the SCSI layer (src/scsi/pr/store.ts): one JSON file per
 * volume, `<data>/reservations/<volumeId>.json`, present only while the volume's last APTPL
 * bit was one (SPC-4 5.13.5.1).
 *
 * Durability: `save` replaces the file atomically and fsyncs it and its directory
 * (util/atomic-file.ts) before it resolves, so that a PERSISTENT RESERVE OUT with APTPL
 * returns GOOD only once its state survives a crash or power loss. Forgetting a volume
 * removes the file and fsyncs the directory.
 *
 * A file that exists but cannot be read or validated makes `load` reject (naming the file):
 * treating it as "no reservations" would silently drop another host's fence.
 */
import { mkdir, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { PrState } from "../scsi/pr/state.js";
import { decodePrState, encodePrState, type ReservationStore } from "../scsi/pr/store.js";
import {
  fsyncDirectory,
  isErrnoException,
  readJsonFile,
  writeJsonAtomic,
} from "../util/atomic-file.js";

export const RESERVATIONS_DIR = "reservations";

/** Volume ids are UUIDs; anything that could escape the directory is refused. */
const VOLUME_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export class FileReservationStore implements ReservationStore {
  private readonly dir: string;
  private dirReady = false;

  constructor(private readonly dataDir: string) {
    this.dir = join(dataDir, RESERVATIONS_DIR);
  }

  /** The file of a volume. */
  pathOf(volumeId: string): string {
    if (!VOLUME_ID.test(volumeId)) throw new Error(`not a volume id: ${JSON.stringify(volumeId)}`);
    return join(this.dir, `${volumeId}.json`);
  }

  async load(volumeId: string): Promise<PrState | undefined> {
    const path = this.pathOf(volumeId);
    const json = await readJsonFile(path);
    if (json === undefined) return undefined;
    try {
      return decodePrState(json);
    } catch (error) {
      throw new Error(`${path}: ${(error as Error).message}`, { cause: error });
    }
  }

  async save(volumeId: string, state: PrState | undefined): Promise<void> {
    const path = this.pathOf(volumeId);
    if (state === undefined) {
      try {
        await unlink(path);
      } catch (error) {
        if (isErrnoException(error) && error.code === "ENOENT") return;
        throw error;
      }
      await fsyncDirectory(this.dir);
      return;
    }
    if (!this.dirReady) {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      await fsyncDirectory(this.dataDir);
      this.dirReady = true;
    }
    await writeJsonAtomic(path, encodePrState(state));
  }
}
