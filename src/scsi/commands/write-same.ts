/**
 * WRITE SAME (10)/(16), SBC-4: write one block of Data-Out to every block of a range.
 *
 *  - NUMBER OF LOGICAL BLOCKS 0 is refused with INVALID FIELD IN CDB while WSNZ=1 in the Block
 *    Limits VPD page (`WSNZ` below says why it is still 1). With WSNZ=0 (`wsnz` false), SBC-4
 *    (WRITE SAME (10), NUMBER OF LOGICAL BLOCKS field) makes the blocks "requested to be unmapped
 *    or written" all of those from the LBA to the last LBA of the medium. The LBA must then be a
 *    block of the medium (else LOGICAL BLOCK ADDRESS OUT OF RANGE: there is no rest of the medium
 *    after it). That range counts against MAXIMUM WRITE SAME LENGTH like an explicit one, since
 *    SBC-4 defines the limit as "the maximum number of contiguous logical blocks that the device
 *    server allows to be unmapped or written in a single WRITE SAME command": more than FFFFh
 *    blocks is INVALID FIELD IN CDB on the length field (what libiscsi's ZeroBlocks tests
 *    expect from MAXIMUM WRITE SAME LENGTH + 1 blocks before the end, after the T10 reflector's
 *    answer of May 2016). An explicit length above FFFFh is refused the same way.
 *  - ANCHOR and WRPROTECT are refused by the usage map (ANC_SUP=0, no protection information).
 *  - The Data-Out buffer must be exactly one block (libiscsi InvalidDataOutSize: both a short
 *    and a long buffer fail): otherwise INVALID FIELD IN COMMAND INFORMATION UNIT. NDOB=1
 *    (16 only) means no Data-Out and a block of zeros.
 *  - UNMAP=1 with a block of zeros deallocates the range (Volume.unmap): with LBPRZ=1 that is
 *    exactly what reading it returns afterwards, as SBC-4 requires for unmapping instead of
 *    writing. UNMAP=1 with any other pattern writes the pattern.
 *  - Without UNMAP the pattern is written in chunks of up to 1 MiB, one at a time: the buffer is
 *    bounded whatever the range (at most FFFFh blocks, 256 MiB on 4 KiB blocks), and the command
 *    holds the unit's gate (./io-gate.ts) as a shared access, which only COMPARE AND WRITE, the
 *    other atomic commands and SANITIZE wait for.
 *  - When the write cache is disabled (WCE=0) the command completes durably: pattern writes
 *    use FUA, and an unmap is followed by a flush.
 */

import { Asc } from "../asc.js";
import type { WriteSameCdb } from "../cdb.js";
import { Limits, SenseKey } from "../constants.js";
import type { LunContext, LunHandler } from "../context.js";
import { CheckCondition, invalidCdbField, lbaOutOfRange } from "../sense.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import { checkLbaRange, checkWritable, failureResult, goodWithDataOut } from "./common.js";

/**
 * The WSNZ bit of the Block Limits VPD page (./vpd.ts reports this constant). Still true: the
 * handler implements NUMBER OF LOGICAL BLOCKS 0 (see the module comment), but with WSNZ=0
 * libiscsi 1.19 runs WriteSame10.UnmapUntilEnd for real, and that test sends UNMAP=1 with a
 * block of FFh bytes and expects zeros back, which this handler does not do (it writes the
 * pattern, see UNMAP above; the WRITE SAME (16) twin of the test sends zeros and passes, and
 * libiscsi reworked the (10) one after 1.19, pull request 318). Set it to false to offer the 0
 * form; src/scsi/README.md has the measured effect.
 */
export const WSNZ = true;

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
  wsnz: boolean = WSNZ,
): LunHandler {
  return (cmd, lu) => {
    const d = decode(cmd.cdb);
    const volume = lu.entry.volume;
    const blockSize = volume.blockSize;
    const blocks = blocksToWrite(d, volume.blockCount(), lengthByte, wsnz);
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
      ? unmapRange(cmd, lu, d.lba, blocks, expectedLength)
      : writePattern(cmd, lu, d.lba, blocks, block, expectedLength);
  };
}

/**
 * The number of blocks the command writes or unmaps, after the range checks: NUMBER OF LOGICAL
 * BLOCKS, or for 0 (refused when `wsnz`) every block from the LBA to the end of the medium.
 * Either way at most MAXIMUM WRITE SAME LENGTH (see the module comment).
 */
function blocksToWrite(
  d: WriteSameCdb,
  capacity: number,
  lengthByte: number,
  wsnz: boolean,
): number {
  if (d.blocks === 0) {
    if (wsnz) throw invalidCdbField(lengthByte);
    if (d.lba >= capacity) throw lbaOutOfRange();
    const rest = capacity - d.lba;
    if (rest > Limits.MAX_WRITE_SAME_BLOCKS) throw invalidCdbField(lengthByte);
    return rest;
  }
  if (d.blocks > Limits.MAX_WRITE_SAME_BLOCKS) throw invalidCdbField(lengthByte);
  checkLbaRange(d.lba, d.blocks, capacity);
  return d.blocks;
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
