/**
 * The 8-byte LUN field (SAM-5 4.7, "Logical unit numbers"), as carried in iSCSI PDUs and in
 * REPORT LUNS parameter data. sanmux uses single-level LUNs only:
 *  - LUN 0..255: peripheral device addressing, bus identifier 0;
 *  - LUN 256..16383: flat space addressing.
 */

/** Highest LUN number we can encode. */
export const MAX_LUN = 0x3fff;

/** Address method (bits 7-6 of byte 0). */
const METHOD_PERIPHERAL = 0x00;
const METHOD_FLAT = 0x40;

/** Encode a LUN number into a new 8-byte buffer. */
export function encodeLun(lun: number): Buffer {
  const out = Buffer.alloc(8);
  writeLun(out, 0, lun);
  return out;
}

/** Encode a LUN number at `offset` of `buf` (8 bytes). */
export function writeLun(buf: Buffer, offset: number, lun: number): void {
  if (!Number.isInteger(lun) || lun < 0 || lun > MAX_LUN) {
    throw new RangeError(`LUN ${lun} is outside 0..${MAX_LUN}`);
  }
  buf.fill(0, offset, offset + 8);
  if (lun < 256) {
    buf[offset] = METHOD_PERIPHERAL;
    buf[offset + 1] = lun;
  } else {
    buf[offset] = METHOD_FLAT | (lun >>> 8);
    buf[offset + 1] = lun & 0xff;
  }
}

/**
 * Decode an 8-byte LUN field into a LUN number. Returns -1 for structures sanmux never hands
 * out (multi-level LUNs, a non-zero bus identifier, logical unit or extended addressing); the
 * SCSI layer then answers as for any LUN that is not in the initiator's view.
 */
export function decodeLun(buf: Buffer, offset = 0): number {
  if (buf.length < offset + 8) throw new RangeError("a LUN field is 8 bytes");
  for (let i = offset + 2; i < offset + 8; i++) {
    if (buf[i] !== 0) return -1;
  }
  const b0 = buf[offset]!;
  const b1 = buf[offset + 1]!;
  switch (b0 & 0xc0) {
    case METHOD_PERIPHERAL:
      return (b0 & 0x3f) === 0 ? b1 : -1;
    case METHOD_FLAT:
      return ((b0 & 0x3f) << 8) | b1;
    default:
      return -1;
  }
}
