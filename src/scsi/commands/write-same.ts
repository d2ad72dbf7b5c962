/**
 * WRITE SAME (10)/(16), SBC-4: write one block of Data-Out to every block of a range.
 *
 *  - NUMBER OF LOGICAL BLOCKS 0 (WSNZ=0 in the Block Limits VPD page, `WSNZ` below): SBC-4
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
 *  - UNMAP=1 (ANCHOR=0) deallocates the range (Volume.unmap), whatever the Data-Out block holds:
 *    SBC-4's table of ANCHOR and UNMAP bits (WRITE SAME (10)) says a thin provisioned logical
 *    unit "should deallocate each LBA specified by the command", without condition on the data
 *    (restated in Seagate's SCSI Commands Reference Manual rev. J, table 237; LIO does the same).
 *    With LBPRZ=1 the range then reads as zeros, the pattern included: an initiator that sets
 *    UNMAP asks for the space back, not for the pattern. Blocks that share a physical block (a
 *    pool grain) with blocks outside the range cannot be deallocated alone; the Volume contract
 *    makes them read as zeros all the same (the pool writes zeros into such a grain, which stays
 *    mapped and is reported so by GET LBA STATUS: SBC-4's logical block provisioning model
 *    lets the device server leave an LBA of a partial unmap granule mapped), so the whole range
 *    reads back alike whatever its alignment to the OPTIMAL UNMAP GRANULARITY of the Block
 *    Limits VPD page.
 *    Without UNMAP, a block of zeros is written like any other pattern: the pool stores no zero
 *    grains anyway, and the file backend must write it.
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
 * The WSNZ bit of the Block Limits VPD page (./vpd.ts reports this constant): false, NUMBER OF
 * LOGICAL BLOCKS 0 means "to the end of the medium" (see the module comment). libiscsi 1.19's
 * WriteSame10.UnmapUntilEnd sends that with UNMAP=1 and a block of FFh bytes and expects zeros
 * back, which is what deallocating gives (see UNMAP above).
 */
export const WSNZ = false;

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
    if (d.unmap) return unmapRange(cmd, lu, d.lba, blocks, expectedLength);
    const block = d.ndob ? zeroBlock(blockSize) : cmd.dataOut;
    return writePattern(cmd, lu, d.lba, blocks, block, expectedLength);
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
    const options = { signal: cmd.signal };
    await volume.unmap(lba, blocks, options);
    if (!lu.unit.writeCacheEnabled) await volume.flush(options);
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
    const options = { fua: !lu.unit.writeCacheEnabled, signal: cmd.signal };
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
