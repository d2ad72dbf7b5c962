/**
 * PRE-FETCH (10)/(16) and START STOP UNIT, SBC-4: commands about caches and power states that
 * a shared, always-on virtual disk honours by checking and (for a stop) flushing.
 */
import type { PreFetchCdb } from "../cdb.js";
import { decodeStartStopUnit } from "../cdb.js";
import type { LunHandler } from "../context.js";
import { invalidCdbField } from "../sense.js";
import { checkLbaRange, checkTransferLength, GOOD } from "./common.js";
import { flush, flushInBackground } from "./sync-cache.js";

/**
 * PRE-FETCH: range checked against the capacity and MAXIMUM PREFETCH LENGTH, then GOOD. We
 * keep no read cache, so nothing is loaded; SBC-4 answers GOOD (rather than CONDITION MET)
 * when the blocks will not all be in cache.
 */
export function preFetchHandler(
  decode: (cdb: Buffer) => PreFetchCdb,
  lengthByte: number,
): LunHandler {
  return (cmd, lu) => {
    const d = decode(cmd.cdb);
    const volume = lu.entry.volume;
    checkTransferLength(d.blocks, volume.blockSize, lengthByte);
    checkLbaRange(d.lba, d.blocks, volume.blockCount());
    return GOOD;
  };
}

/** POWER CONDITION values SBC-4 defines: START_VALID, ACTIVE, IDLE, STANDBY, LU_CONTROL, FORCE_*_0. */
const POWER_CONDITIONS = new Set([0x0, 0x1, 0x2, 0x3, 0x7, 0xa, 0xb]);

/**
 * START STOP UNIT. The medium is not removable, so LOEJ=1 is INVALID FIELD IN CDB. The unit is
 * shared by every agent mapping the volume, so it is never stopped: a stop (START=0 with
 * POWER CONDITION 0) flushes the cache unless NO_FLUSH, and the unit stays ready. Power
 * condition changes are accepted and have no effect (no power states: all timers are off in
 * the Power Condition mode page). IMMED=1 returns before the flush completes (a failure is
 * then a deferred error, as for SYNCHRONIZE CACHE).
 */
export const startStopUnit: LunHandler = (cmd, lu) => {
  const d = decodeStartStopUnit(cmd.cdb);
  if (!POWER_CONDITIONS.has(d.powerCondition)) throw invalidCdbField(4, 7);
  if (d.powerCondition !== 0) return GOOD;
  if (d.powerConditionModifier !== 0) throw invalidCdbField(3, 3);
  if (d.loej) throw invalidCdbField(4, 1);
  if (d.start || d.noFlush) return GOOD;
  if (d.immed) {
    flushInBackground(cmd, lu);
    return GOOD;
  }
  return flush(cmd, lu);
};
