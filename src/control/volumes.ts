/**
 * Opening the volumes a config declares, on their backend: the pool (default) or a sparse file.
 * Used at start and on every reload: opening an open volume returns it, a larger size grows it
 * (the caller raises CAPACITY DATA HAS CHANGED), and the backends refuse a shrink or a block
 * size change with a message naming the volume.
 */
import type { Logger } from "pino";
import type { VolumeConfig } from "../access/config.js";
import { openFileVolume } from "../pool/file/file-volume.js";
import type { Pool } from "../pool/pool.js";
import type { Volume } from "../volume/volume.js";

export interface OpenedVolume {
  readonly volume: Volume;
  /** The volume existed with fewer blocks than it has now. */
  readonly grew: boolean;
}

export async function openConfiguredVolume(
  v: VolumeConfig,
  context: {
    dataDir: string;
    pool: Pool | undefined;
    logger: Logger;
    current: Volume | undefined;
  },
): Promise<OpenedVolume> {
  const before = context.current?.blockCount();
  if (v.backend === "pool") {
    if (context.pool === undefined) throw new Error(`volume "${v.name}": the pool is not open`);
    const volume = await context.pool.ensureVolume({
      name: v.name,
      size: v.size,
      blockSize: v.blockSize,
      domain: v.domain,
      writeCache: v.writeCache,
    });
    return { volume, grew: before !== undefined && volume.blockCount() > before };
  }
  if (context.current !== undefined) {
    // The file backend grows when it is opened; sessions hold the open object, so a new size
    // takes effect at the next start.
    if (v.size / v.blockSize !== before) {
      context.logger.warn(
        { volume: v.name, size: v.size },
        "a file volume's new size takes effect when sanmux restarts",
      );
    }
    return { volume: context.current, grew: false };
  }
  const volume = await openFileVolume(context.dataDir, {
    name: v.name,
    size: v.size,
    blockSize: v.blockSize,
  });
  if (volume.recoveredAtomicWrite !== undefined) {
    context.logger.warn(
      { volume: v.name, ...volume.recoveredAtomicWrite },
      "completed an atomic write interrupted by a crash, from the volume's journal",
    );
  }
  if (volume.discardedAtomicJournal !== undefined) {
    context.logger.warn(
      { volume: v.name, ...volume.discardedAtomicJournal },
      "dropped the atomic write journal: it held no complete record of this volume",
    );
  }
  return { volume, grew: before !== undefined && volume.blockCount() > before };
}
