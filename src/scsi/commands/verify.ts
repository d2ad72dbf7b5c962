/**
 * VERIFY (10)/(12)/(16), SBC-4. The volume checks integrity on every read (a grain that fails
 * its CRC or AEAD tag is a MediumError), so verifying the medium is reading it:
 *  - BYTCHK 00b: read the blocks, report MEDIUM ERROR if any cannot be read;
 *  - BYTCHK 01b: compare them with the Data-Out buffer;
 *  - BYTCHK 11b: compare each of them with the single block of Data-Out;
 *  - BYTCHK 10b: reserved, INVALID FIELD IN CDB.
 * A difference is MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION with INFORMATION = offset of
 * the first differing byte in the Data-Out buffer (for 11b: in the verified range).
 * VRPROTECT is refused by the usage map (no protection information).
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
  failureResult,
  GOOD,
  goodWithDataOut,
  requireDataOut,
} from "./common.js";

const BYTCHK_NONE = 0b00;
const BYTCHK_ALL = 0b01;
const BYTCHK_RESERVED = 0b10;

export function verifyHandler(decode: (cdb: Buffer) => VerifyCdb, lengthByte: number): LunHandler {
  return (cmd, lu) => {
    const d = decode(cmd.cdb);
    if (d.bytchk === BYTCHK_RESERVED) throw invalidCdbField(1, 2);
    const volume = lu.entry.volume;
    const blockSize = volume.blockSize;
    checkTransferLength(d.blocks, blockSize, lengthByte);
    checkLbaRange(d.lba, d.blocks, volume.blockCount());
    const dataOutLength =
      d.bytchk === BYTCHK_NONE || d.blocks === 0
        ? 0
        : d.bytchk === BYTCHK_ALL
          ? d.blocks * blockSize
          : blockSize;
    const expected = requireDataOut(cmd, dataOutLength);
    if (d.blocks === 0) return d.bytchk === BYTCHK_NONE ? GOOD : goodWithDataOut(0);
    return verify(cmd, lu, d, expected);
  };
}

async function verify(
  cmd: ScsiCommand,
  lu: LunContext,
  d: VerifyCdb,
  expected: Buffer,
): Promise<ScsiResult> {
  try {
    const data = await lu.entry.volume.read(d.lba, d.blocks, { signal: cmd.signal });
    if (d.bytchk === BYTCHK_NONE) return GOOD;
    const offset =
      d.bytchk === BYTCHK_ALL
        ? firstDifference(data, expected)
        : firstDifferenceRepeated(data, expected);
    if (offset < 0) return goodWithDataOut(expected.length);
    return checkConditionResult(
      { key: SenseKey.MISCOMPARE, asc: Asc.MISCOMPARE_DURING_VERIFY, information: offset },
      expected.length,
    );
  } catch (err) {
    return failureResult(err, cmd, lu, d.bytchk === BYTCHK_NONE ? undefined : expected.length);
  }
}

/** Offset of the first byte where `a` and `b` (same length) differ, or -1. */
export function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  // Narrow down by blocks of 512 bytes with native compares, then bytes.
  const step = 512;
  for (let at = 0; at < a.length; at += step) {
    const end = Math.min(at + step, a.length);
    if (a.compare(b, at, end, at, end) !== 0) {
      for (let i = at; i < end; i++) if (a[i] !== b[i]) return i;
    }
  }
  return -1;
}

/** Offset of the first difference between `data` and `block` repeated over it, or -1. */
function firstDifferenceRepeated(data: Buffer, block: Buffer): number {
  const size = block.length;
  for (let at = 0; at < data.length; at += size) {
    if (data.compare(block, 0, size, at, at + size) !== 0) {
      const offset = firstDifference(data.subarray(at, at + size), block);
      return at + offset;
    }
  }
  return -1;
}
