/**
 * UNMAP, SBC-4: deallocate the ranges of a parameter list. Parameter list (SBC-4, "UNMAP
 * parameter list"): UNMAP DATA LENGTH (2), UNMAP BLOCK DESCRIPTOR DATA LENGTH (2), reserved (4),
 * then 16-byte block descriptors: LBA (8), NUMBER OF LOGICAL BLOCKS (4), reserved (4).
 *
 *  - PARAMETER LIST LENGTH 0: nothing to do, GOOD.
 *  - 1..7: PARAMETER LIST LENGTH ERROR.
 *  - Descriptors are taken from the smaller of the BLOCK DESCRIPTOR DATA LENGTH and what the
 *    parameter list holds; an incomplete trailing descriptor is ignored (SBC-4).
 *  - More descriptors than MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT, or more blocks in total than
 *    MAXIMUM UNMAP LBA COUNT: INVALID FIELD IN PARAMETER LIST.
 *  - A range beyond the capacity: LOGICAL BLOCK ADDRESS OUT OF RANGE (a zero-length
 *    descriptor at the capacity is accepted).
 *  - Everything is validated before anything is unmapped. ANCHOR is refused by the usage map.
 *  - With WCE=0 the unmaps are followed by a flush.
 */

import { decodeUnmap, readUInt64 } from "../cdb.js";
import { Limits } from "../constants.js";
import type { LunContext, LunHandler } from "../context.js";
import { invalidParameterField, parameterListLengthError } from "../sense.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import {
  checkLbaRange,
  checkWritable,
  failureResult,
  goodWithDataOut,
  requireDataOut,
} from "./common.js";

const HEADER = 8;
const DESCRIPTOR = 16;

export interface UnmapRange {
  readonly lba: number;
  readonly blocks: number;
}

/** Parse and validate an UNMAP parameter list against a capacity and a block size. */
export function parseUnmapList(data: Buffer, capacity: number, blockSize: number): UnmapRange[] {
  if (data.length < HEADER) throw parameterListLengthError();
  const available = Math.min(data.readUInt16BE(2), data.length - HEADER);
  const count = Math.floor(available / DESCRIPTOR);
  if (count > Limits.MAX_UNMAP_DESCRIPTORS) throw invalidParameterField(2);
  const maxBlocks = Limits.MAX_UNMAP_BYTES / blockSize;
  const ranges: UnmapRange[] = [];
  let total = 0;
  for (let i = 0; i < count; i++) {
    const at = HEADER + i * DESCRIPTOR;
    const lba = readUInt64(data, at);
    const blocks = data.readUInt32BE(at + 8);
    checkLbaRange(lba, blocks, capacity);
    total += blocks;
    if (total > maxBlocks) throw invalidParameterField(at + 8);
    if (blocks > 0) ranges.push({ lba, blocks });
  }
  return ranges;
}

export const unmapCommand: LunHandler = (cmd, lu) => {
  const d = decodeUnmap(cmd.cdb);
  checkWritable(lu);
  const length = d.parameterListLength;
  const data = requireDataOut(cmd, length);
  if (length === 0) return goodWithDataOut(0);
  const volume = lu.entry.volume;
  const ranges = parseUnmapList(data, volume.blockCount(), volume.blockSize);
  return unmapRanges(cmd, lu, ranges, length);
};

async function unmapRanges(
  cmd: ScsiCommand,
  lu: LunContext,
  ranges: readonly UnmapRange[],
  dataOutLength: number,
): Promise<ScsiResult> {
  try {
    const volume = lu.entry.volume;
    const options = { signal: cmd.signal };
    for (const r of ranges) await volume.unmap(r.lba, r.blocks, options);
    if (ranges.length > 0 && !lu.unit.writeCacheEnabled) await volume.flush(options);
    return goodWithDataOut(dataOutLength);
  } catch (err) {
    return failureResult(err, cmd, lu, dataOutLength);
  }
}
