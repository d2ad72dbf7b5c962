/**
 * COMPARE AND WRITE, SBC-4 5.2 (opcode 89h).
 *
 * The Data-Out buffer holds two halves of NUMBER OF LOGICAL BLOCKS blocks each: the verify
 * data, then the write data. The device server reads the blocks, compares them with the verify
 * data and, only if they all match, writes the write data; the three steps are an
 * uninterrupted series of actions with respect to every other command on those blocks, from
 * any I_T nexus (here: the exclusive range of the unit's gate, ./io-gate.ts). VMware's ATS
 * locking depends on this.
 *
 *  - NUMBER OF LOGICAL BLOCKS 0: nothing is read, transferred, compared or written, and that is
 *    not an error (SBC-4 5.2).
 *  - More than MAXIMUM COMPARE AND WRITE LENGTH (Block Limits VPD): INVALID FIELD IN CDB
 *    pointing at the NUMBER OF LOGICAL BLOCKS field (byte 13).
 *  - The Data-Out buffer must be exactly 2 x blocks x block size, else INVALID FIELD IN CDB
 *    pointing at NUMBER OF LOGICAL BLOCKS (the field that does not describe the buffer sent) and
 *    nothing is read or written. Unlike WRITE, a short buffer is never a shorter command: the
 *    verify data and the write data are halves of the buffer, so a buffer of another size has
 *    no meaning. This covers libiscsi's CompareAndWrite.InvalidDataOutSize (a buffer too short
 *    and too long for the CDB) and CompareAndWrite.Simple for 256 blocks, which the 8-bit field
 *    encodes as 0 while 512 blocks of Data-Out follow: LIO answers both the same way.
 *  - Miscompare: MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION (1Dh/00h), INFORMATION = the
 *    offset from the start of the Data-Out buffer of the first byte that differs (SBC-4 5.2),
 *    and nothing is written.
 *  - FUA (or WCE=0) makes the write durable before GOOD; DPO and FUA_NV are accepted and have
 *    no effect. WRPROTECT is refused by the usage map (no protection information).
 *  - Read-only mappings: DATA PROTECT / WRITE PROTECTED before anything is read.
 */
import { Asc } from "../asc.js";
import { readUInt64 } from "../cdb.js";
import { Limits, SenseKey } from "../constants.js";
import type { LunContext, LunHandler } from "../context.js";
import { CheckCondition, checkConditionResult, invalidCdbField } from "../sense.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import { checkLbaRange, checkWritable, failureResult, goodWithDataOut } from "./common.js";
import { blockRange, gateOf } from "./io-gate.js";
import { firstDifference } from "./verify.js";

/** COMPARE AND WRITE CDB fields, SBC-4 5.2. */
export interface CompareAndWriteCdb {
  readonly lba: number;
  /** NUMBER OF LOGICAL BLOCKS (byte 13). */
  readonly blocks: number;
  readonly dpo: boolean;
  readonly fua: boolean;
}

export function decodeCompareAndWrite(cdb: Buffer): CompareAndWriteCdb {
  const b1 = cdb[1]!;
  return {
    lba: readUInt64(cdb, 2),
    blocks: cdb[13]!,
    dpo: (b1 & 0x10) !== 0,
    fua: (b1 & 0x08) !== 0,
  };
}

/** Byte of the NUMBER OF LOGICAL BLOCKS field, for field pointers. */
const BLOCKS_BYTE = 13;

export const compareAndWrite: LunHandler = (cmd, lu) => {
  const d = decodeCompareAndWrite(cmd.cdb);
  const volume = lu.entry.volume;
  const blockSize = volume.blockSize;
  if (d.blocks > Limits.MAX_COMPARE_AND_WRITE_BLOCKS) throw invalidCdbField(BLOCKS_BYTE);
  checkLbaRange(d.lba, d.blocks, volume.blockCount());
  if (d.blocks !== 0) checkWritable(lu);
  const half = d.blocks * blockSize;
  const length = 2 * half;
  if (cmd.dataOut.length !== length) {
    throw new CheckCondition(
      {
        key: SenseKey.ILLEGAL_REQUEST,
        asc: Asc.INVALID_FIELD_IN_CDB,
        fieldPointer: { inCdb: true, byte: BLOCKS_BYTE },
      },
      length,
    );
  }
  if (d.blocks === 0) return goodWithDataOut(0);
  const verifyData = cmd.dataOut.subarray(0, half);
  const writeData = cmd.dataOut.subarray(half, length);
  const fua = d.fua || !lu.unit.writeCacheEnabled;
  return gateOf(lu.unit).exclusive(blockRange(d.lba, d.blocks), () =>
    compareThenWrite(cmd, lu, d.lba, verifyData, writeData, fua, length),
  );
};

async function compareThenWrite(
  cmd: ScsiCommand,
  lu: LunContext,
  lba: number,
  verifyData: Buffer,
  writeData: Buffer,
  fua: boolean,
  dataOutLength: number,
): Promise<ScsiResult> {
  const volume = lu.entry.volume;
  try {
    const signal = cmd.signal;
    const current = await volume.read(lba, verifyData.length / volume.blockSize, { signal });
    const offset = firstDifference(current, verifyData);
    if (offset >= 0) {
      return checkConditionResult(
        { key: SenseKey.MISCOMPARE, asc: Asc.MISCOMPARE_DURING_VERIFY, information: offset },
        dataOutLength,
      );
    }
    await volume.write(lba, writeData, { fua, signal });
    return goodWithDataOut(dataOutLength);
  } catch (err) {
    return failureResult(err, cmd, lu, dataOutLength);
  }
}
