/**
 * WRITE AND VERIFY (10)/(12)/(16), SBC-4 (opcodes 2Eh, AEh, 8Eh): write the blocks to
 * the medium, then verify them.
 *
 *  - The write is forced to the medium (as with FUA): verifying data that may still sit in a
 *    volatile cache would verify nothing. DPO is accepted and has no effect; WRPROTECT is
 *    refused by the usage map (no protection information).
 *  - BYTCHK 00b: the blocks are read back, which checks them (the pool verifies every grain's
 *    CRC / AEAD tag on read): a block that cannot be read is MEDIUM ERROR.
 *  - BYTCHK 01b: the blocks read back are compared with the Data-Out buffer; a difference is
 *    MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION with INFORMATION = the offset of the
 *    first differing byte (as VERIFY reports it). The write, read and compare hold the
 *    range exclusively (./io-gate.ts), so that another initiator's write between our write and
 *    our read cannot be mistaken for a medium failure.
 *  - BYTCHK 10b and 11b are reserved for WRITE AND VERIFY (SBC-4): INVALID FIELD IN CDB.
 *  - TRANSFER LENGTH, LBA range, write protection and Data-Out completeness as for WRITE
 *    (see `writeDataOut`: whole blocks short of the transfer length are written and verified,
 *    as libiscsi's WriteVerify*Residuals expect; a partial block is refused).
 */
import { Asc } from "../asc.js";
import type { VerifyCdb } from "../cdb.js";
import { SenseKey } from "../constants.js";
import type { LunContext, LunHandler } from "../context.js";
import { checkConditionResult, invalidCdbField } from "../sense.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import {
  checkLbaRange,
  checkTransferLength,
  checkWritable,
  failureResult,
  goodWithDataOut,
  writeDataOut,
} from "./common.js";
import { blockRange, gateOf } from "./io-gate.js";
import { firstDifference } from "./verify.js";

const BYTCHK_NONE = 0b00;
const BYTCHK_COMPARE = 0b01;

/**
 * A WRITE AND VERIFY handler for one CDB format (the fields sit where VERIFY has them, so the
 * VERIFY decoders serve). `lengthByte` is the offset of the TRANSFER LENGTH field.
 */
export function writeAndVerifyHandler(
  decode: (cdb: Buffer) => VerifyCdb,
  lengthByte: number,
): LunHandler {
  return (cmd, lu) => {
    const d = decode(cmd.cdb);
    if (d.bytchk !== BYTCHK_NONE && d.bytchk !== BYTCHK_COMPARE) throw invalidCdbField(1, 2);
    const volume = lu.entry.volume;
    const blockSize = volume.blockSize;
    checkTransferLength(d.blocks, blockSize, lengthByte);
    checkLbaRange(d.lba, d.blocks, volume.blockCount());
    checkWritable(lu);
    const length = d.blocks * blockSize;
    const data = writeDataOut(cmd, length, blockSize);
    if (data.length === 0) return goodWithDataOut(length);
    const range = blockRange(d.lba, data.length / blockSize);
    const gate = gateOf(lu.unit);
    const work = () => writeThenVerify(cmd, lu, d.lba, data, d.bytchk === BYTCHK_COMPARE, length);
    return d.bytchk === BYTCHK_COMPARE ? gate.exclusive(range, work) : gate.shared(range, work);
  };
}

async function writeThenVerify(
  cmd: ScsiCommand,
  lu: LunContext,
  lba: number,
  data: Buffer,
  compare: boolean,
  dataOutLength: number,
): Promise<ScsiResult> {
  const volume = lu.entry.volume;
  try {
    const signal = cmd.signal;
    await volume.write(lba, data, { fua: true, signal });
    const written = await volume.read(lba, data.length / volume.blockSize, { signal });
    if (compare) {
      const offset = firstDifference(written, data);
      if (offset >= 0) {
        return checkConditionResult(
          { key: SenseKey.MISCOMPARE, asc: Asc.MISCOMPARE_DURING_VERIFY, information: offset },
          dataOutLength,
        );
      }
    }
    return goodWithDataOut(dataOutLength);
  } catch (err) {
    return failureResult(err, cmd, lu, dataOutLength);
  }
}
