/**
 * ORWRITE (16), SBC-4 (opcode 8Bh), the basic form: each byte of the blocks becomes the
 * bitwise OR of its current value and the matching Data-Out byte.
 *
 * The read, OR and write are one indivisible operation with respect to every other command on
 * those blocks (the exclusive range of the unit's gate, ./io-gate.ts), so that two ORWRITEs on
 * the same bitmap block from two hosts cannot lose each other's bits.
 *
 *  - ORPROTECT is refused by the usage map (no protection information); DPO and FUA_NV are
 *    accepted and have no effect; FUA (or WCE=0) makes the result durable before GOOD.
 *  - TRANSFER LENGTH 0 writes nothing and is not an error. TRANSFER LENGTH beyond the Block
 *    Limits maximum, LBA range, write protection and Data-Out completeness are checked as for
 *    WRITE (see `writeDataOut`).
 *  - ORWRITE (32), with its change generation and bitmap operations (BMOP), is not offered:
 *    it needs protection information type 2.
 */
import { readUInt64 } from "../cdb.js";
import type { LunContext, LunHandler } from "../context.js";
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

/** ORWRITE (16) CDB fields, SBC-4. */
export interface OrWriteCdb {
  readonly lba: number;
  readonly blocks: number;
  readonly dpo: boolean;
  readonly fua: boolean;
}

export function decodeOrWrite16(cdb: Buffer): OrWriteCdb {
  const b1 = cdb[1]!;
  return {
    lba: readUInt64(cdb, 2),
    blocks: cdb.readUInt32BE(10),
    dpo: (b1 & 0x10) !== 0,
    fua: (b1 & 0x08) !== 0,
  };
}

/** Byte of the TRANSFER LENGTH field, for field pointers. */
const LENGTH_BYTE = 10;

export const orWrite16: LunHandler = (cmd, lu) => {
  const d = decodeOrWrite16(cmd.cdb);
  const volume = lu.entry.volume;
  const blockSize = volume.blockSize;
  checkTransferLength(d.blocks, blockSize, LENGTH_BYTE);
  checkLbaRange(d.lba, d.blocks, volume.blockCount());
  checkWritable(lu);
  const length = d.blocks * blockSize;
  const data = writeDataOut(cmd, length, blockSize);
  if (data.length === 0) return goodWithDataOut(length);
  const fua = d.fua || !lu.unit.writeCacheEnabled;
  return gateOf(lu.unit).exclusive(blockRange(d.lba, data.length / blockSize), () =>
    readOrWrite(cmd, lu, d.lba, data, fua, length),
  );
};

async function readOrWrite(
  cmd: ScsiCommand,
  lu: LunContext,
  lba: number,
  data: Buffer,
  fua: boolean,
  dataOutLength: number,
): Promise<ScsiResult> {
  const volume = lu.entry.volume;
  try {
    // The buffer returned by read belongs to us: OR into it, then hand it to the volume.
    const signal = cmd.signal;
    const merged = await volume.read(lba, data.length / volume.blockSize, { signal });
    orInto(merged, data);
    await volume.write(lba, merged, { fua, signal });
    return goodWithDataOut(dataOutLength);
  } catch (err) {
    return failureResult(err, cmd, lu, dataOutLength);
  }
}

/** `target[i] |= source[i]` for every byte (same lengths), four bytes at a time. */
export function orInto(target: Buffer, source: Buffer): void {
  const n = target.length;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    target.writeInt32LE(target.readInt32LE(i) | source.readInt32LE(i), i);
  }
  for (; i < n; i++) target[i] = target[i]! | source[i]!;
}
