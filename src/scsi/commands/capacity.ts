/**
 * READ CAPACITY (10) and (16), SBC-4.
 */
import { decodeReadCapacity10, decodeReadCapacity16 } from "../cdb.js";
import type { LunHandler } from "../context.js";
import { invalidCdbField } from "../sense.js";
import { dataIn } from "./common.js";

/** READ CAPACITY (16) parameter data length. */
export const READ_CAPACITY_16_LENGTH = 32;

/**
 * READ CAPACITY (10) parameter data: RETURNED LOGICAL BLOCK ADDRESS (the last LBA, or
 * FFFFFFFFh when it does not fit, telling the initiator to use READ CAPACITY (16)) and
 * LOGICAL BLOCK LENGTH IN BYTES. PMI=1 is accepted and answered like PMI=0 (the returned
 * address is >= the requested one, as the obsolete PMI semantics allow); with PMI=0 the
 * obsolete LOGICAL BLOCK ADDRESS field must be zero (SBC-3).
 */
export const readCapacity10: LunHandler = (cmd, lu) => {
  const d = decodeReadCapacity10(cmd.cdb);
  if (!d.pmi && d.lba !== 0) throw invalidCdbField(2);
  const volume = lu.entry.volume;
  const last = volume.blockCount() - 1;
  const out = Buffer.alloc(8);
  out.writeUInt32BE(last > 0xfffffffe ? 0xffffffff : Math.max(last, 0), 0);
  out.writeUInt32BE(volume.blockSize, 4);
  return dataIn(out, out.length);
};

/**
 * READ CAPACITY (16) parameter data (SBC-4): last LBA, block length, RC BASIS 01b (the
 * returned address is the last LBA), no protection, LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
 * from the volume's physical block (0 on the file backend; 3 for 512-byte blocks on 4 KiB pool
 * grains), LBPME=1 (thin provisioned),
 * LBPRZ=1 (unmapped blocks read as zeros), LOWEST ALIGNED LOGICAL BLOCK ADDRESS 0.
 */
export const readCapacity16: LunHandler = (cmd, lu) => {
  const d = decodeReadCapacity16(cmd.cdb);
  if (!d.pmi && d.lba !== 0) throw invalidCdbField(2);
  const volume = lu.entry.volume;
  const out = Buffer.alloc(READ_CAPACITY_16_LENGTH);
  out.writeBigUInt64BE(BigInt(Math.max(volume.blockCount() - 1, 0)), 0);
  out.writeUInt32BE(volume.blockSize, 8);
  out[12] = 0x10; // RC BASIS 01b, P_TYPE 0, PROT_EN 0
  out[13] = physicalBlockExponent(volume.blockSize, volume.physicalBlockSize);
  out[14] = 0x80 | 0x40; // LBPME, LBPRZ; LOWEST ALIGNED LBA (bits 13-8) = 0
  out[15] = 0;
  return dataIn(out, d.allocationLength);
};

/** log2(physical block / logical block): 0 when the backend writes single blocks. */
export function physicalBlockExponent(blockSize: number, physicalBlockSize = blockSize): number {
  let exponent = 0;
  for (let size = blockSize; size < physicalBlockSize; size *= 2) exponent++;
  return exponent;
}
