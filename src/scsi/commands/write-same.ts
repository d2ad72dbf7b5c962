/**
 * WRITE SAME (10)/(16), SBC-4: write one block of Data-Out to every block of a range.
 *
 *  - NUMBER OF LOGICAL BLOCKS 0 is refused (WSNZ=1 in the Block Limits VPD page), as is a
 *    range longer than MAXIMUM WRITE SAME LENGTH, FFFFh blocks (INVALID FIELD IN CDB on the
 *    length field).
 *  - ANCHOR and WRPROTECT are refused by the usage map (ANC_SUP=0, no protection information).
 *  - The Data-Out buffer must be exactly one block (libiscsi InvalidDataOutSize: both a short
 *    and a long buffer fail): otherwise INVALID FIELD IN COMMAND INFORMATION UNIT. NDOB=1
 *    (16 only) means no Data-Out and a block of zeros.
 *  - UNMAP=1 with a block of zeros deallocates the range (Volume.unmap): with LBPRZ=1 that is
 *    exactly what reading it returns afterwards, as SBC-4 requires for unmapping instead of
 *    writing. UNMAP=1 with any other pattern writes the pattern.
 *  - Without UNMAP the pattern is written in chunks of up to 1 MiB.
 *  - When the write cache is disabled (WCE=0) the command completes durably: pattern writes
 *    use FUA, and an unmap is followed by a flush.
 */

import { Asc } from "../asc.js";
import type { WriteSameCdb } from "../cdb.js";
import { Limits, SenseKey } from "../constants.js";
import type { LunContext, LunHandler } from "../context.js";
import { CheckCondition, invalidCdbField } from "../sense.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import { checkLbaRange, checkWritable, failureResult, goodWithDataOut } from "./common.js";

const zeroBlocks = new Map<number, Buffer>();

function zeroBlock(blockSize: number): Buffer {
  let block = zeroBlocks.get(blockSize);
  if (!block) {
    block = Buffer.alloc(blockSize);
    zeroBlocks.set(blockSize, block);
  }
  return block;
}

export function writeSameHandler(
  decode: (cdb: Buffer) => WriteSameCdb,
  lengthByte: number,
): LunHandler {
  return (cmd, lu) => {
    const d = decode(cmd.cdb);
    const volume = lu.entry.volume;
    const blockSize = volume.blockSize;
    if (d.blocks === 0) throw invalidCdbField(lengthByte);
    if (d.blocks > Limits.MAX_WRITE_SAME_BLOCKS) throw invalidCdbField(lengthByte);
    checkLbaRange(d.lba, d.blocks, volume.blockCount());
    checkWritable(lu);
    const expectedLength = d.ndob ? 0 : blockSize;
    if (cmd.dataOut.length !== expectedLength) {
      throw new CheckCondition(
        { key: SenseKey.ILLEGAL_REQUEST, asc: Asc.INVALID_FIELD_IN_COMMAND_IU },
        expectedLength,
      );
    }
    const block = d.ndob ? zeroBlock(blockSize) : cmd.dataOut;
    const unmap = d.unmap && block.equals(zeroBlock(blockSize));
    return unmap
      ? unmapRange(cmd, lu, d.lba, d.blocks, expectedLength)
      : writePattern(cmd, lu, d.lba, d.blocks, block, expectedLength);
  };
}

async function unmapRange(
  cmd: ScsiCommand,
  lu: LunContext,
  lba: number,
  blocks: number,
  dataOutLength: number,
): Promise<ScsiResult> {
  try {
    const volume = lu.entry.volume;
    await volume.unmap(lba, blocks);
    if (!lu.unit.writeCacheEnabled) await volume.flush();
    return goodWithDataOut(dataOutLength);
  } catch (err) {
    return failureResult(err, cmd, lu, dataOutLength);
  }
}

async function writePattern(
  cmd: ScsiCommand,
  lu: LunContext,
  lba: number,
  blocks: number,
  block: Buffer,
  dataOutLength: number,
): Promise<ScsiResult> {
  try {
    const volume = lu.entry.volume;
    const blockSize = block.length;
    const chunkBlocks = Math.min(blocks, Math.max(1, Limits.WRITE_SAME_CHUNK_BYTES / blockSize));
    const chunk = Buffer.alloc(chunkBlocks * blockSize);
    for (let at = 0; at < chunk.length; at += blockSize) block.copy(chunk, at);
    const options = { fua: !lu.unit.writeCacheEnabled };
    for (let done = 0; done < blocks; ) {
      const n = Math.min(chunkBlocks, blocks - done);
      // Sequential: the chunk is handed back by the volume when its write settles (Volume
      // contract), so it can be passed again.
      await volume.write(
        lba + done,
        n === chunkBlocks ? chunk : chunk.subarray(0, n * blockSize),
        options,
      );
      done += n;
    }
    return goodWithDataOut(dataOutLength);
  } catch (err) {
    return failureResult(err, cmd, lu, dataOutLength);
  }
}
