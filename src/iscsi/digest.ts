/**
 * CRC32C header and data digests (RFC 7143 11.2.3 and 13.1; generator 0x11edc6f41, the
 * Castagnoli polynomial). `@node-rs/crc32`'s `crc32c` is the standard reflected CRC32C (initial
 * register all ones, result complemented), and passing a previous result as the second argument
 * continues the running CRC over the next buffer (checked in digest.test.ts), so a data segment
 * and its padding can be digested without concatenating them.
 *
 * Byte order on the wire: RFC 7143 Appendix B.4 lists the CRC of 32 zero bytes as the bytes
 * "aa 36 91 8a", i.e. the 32-bit value 0x8a9136aa sent least significant byte first. This is
 * the one little-endian field in iSCSI; everything else is big-endian.
 */
import { crc32c } from "@node-rs/crc32";

/** Length of a digest on the wire. */
export const DIGEST_LENGTH = 4;

/** CRC32C of the concatenation of `buffers`, without concatenating them. */
export function crc32cOf(...buffers: readonly Uint8Array[]): number {
  let crc = 0;
  for (const b of buffers) {
    if (b.length !== 0) crc = crc32c(b, crc);
  }
  return crc >>> 0;
}

/** Writes a digest value in wire order (RFC 7143 Appendix B.4: least significant byte first). */
export function writeDigest(target: Buffer, offset: number, crc: number): void {
  target.writeUInt32LE(crc >>> 0, offset);
}

/** Reads a digest value written by `writeDigest`. */
export function readDigest(source: Buffer, offset: number): number {
  return source.readUInt32LE(offset);
}

/** A new 4-byte buffer holding `crc` in wire order. */
export function digestBytes(crc: number): Buffer {
  const b = Buffer.allocUnsafe(DIGEST_LENGTH);
  b.writeUInt32LE(crc >>> 0, 0);
  return b;
}
