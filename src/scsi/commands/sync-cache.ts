/**
 * SYNCHRONIZE CACHE (10) / (16), SBC-4: make every completed write durable (Volume.flush).
 * The LBA range is checked but the whole volume is flushed (a flush is per volume below us).
 * With IMMED=1 status returns once the CDB is validated; a flush failure then becomes a
 * deferred error (SPC-4 4.5.1) reported on the nexus's next command to this logical unit.
 */
import type { SyncCacheCdb } from "../cdb.js";
import type { LunContext, LunHandler } from "../context.js";
import { senseForFailure } from "../sense-map.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import { checkLbaRange, failureResult, GOOD } from "./common.js";

export function syncCacheHandler(decode: (cdb: Buffer) => SyncCacheCdb): LunHandler {
  return (cmd, lu) => {
    const d = decode(cmd.cdb);
    checkLbaRange(d.lba, d.blocks, lu.entry.volume.blockCount());
    if (d.immed) {
      flushInBackground(cmd, lu);
      return GOOD;
    }
    return flush(cmd, lu);
  };
}

/** Flush the volume and answer GOOD, or the failure's sense. */
export async function flush(cmd: ScsiCommand, lu: LunContext): Promise<ScsiResult> {
  try {
    await lu.entry.volume.flush({ signal: cmd.signal });
    return GOOD;
  } catch (err) {
    return failureResult(err, cmd, lu);
  }
}

/** Start a flush; a failure becomes a deferred error of this nexus on the unit. */
export function flushInBackground(cmd: ScsiCommand, lu: LunContext): void {
  lu.entry.volume.flush().catch((err: unknown) => {
    const sense = senseForFailure(err, lu.nexus.logger, {
      volumeId: lu.entry.volumeId,
      lun: lu.entry.lun,
      opcode: cmd.cdb[0] ?? -1,
    });
    lu.unit.addDeferredError(lu.nexus, sense);
  });
}
