import { crc32c } from "@node-rs/crc32";
import { describe, expect, it } from "vitest";
import { crc32cOf, DIGEST_LENGTH, digestBytes, readDigest, writeDigest } from "./digest.js";
import { serializePdu } from "./framing.js";
import { encodeScsiCommand } from "./pdu-initiator.js";

/** "01 c0 00 00" style rows, as the RFC prints them, to a Buffer. */
function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ""), "hex");
}

// RFC 7143 Appendix B.4 "CRC Examples": each input with its CRC as the bytes sent on the wire.
const RFC_VECTORS: readonly { name: string; input: Buffer; wire: string }[] = [
  { name: "32 bytes of zeroes", input: Buffer.alloc(32, 0x00), wire: "aa 36 91 8a" },
  { name: "32 bytes of ones", input: Buffer.alloc(32, 0xff), wire: "43 ab a8 62" },
  {
    name: "32 bytes of incrementing 00..1f",
    input: Buffer.from(Array.from({ length: 32 }, (_, i) => i)),
    wire: "4e 79 dd 46",
  },
  {
    name: "32 bytes of decrementing 1f..00",
    input: Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i)),
    wire: "5c db 3f 11",
  },
  {
    name: "an iSCSI - SCSI Read (10) Command PDU",
    input: hex(`
      01 c0 00 00  00 00 00 00  00 00 00 00  00 00 00 00
      14 00 00 00  00 00 04 00  00 00 00 14  00 00 00 18
      28 00 00 00  00 00 00 00  02 00 00 00  00 00 00 00`),
    wire: "56 3a 96 d9",
  },
];

describe("@node-rs/crc32 crc32c (what digest.ts relies on)", () => {
  it("is the standard CRC32C (check value of '123456789')", () => {
    expect(crc32c(Buffer.from("123456789"))).toBe(0xe3069283);
  });

  it("returns an unsigned 32-bit number", () => {
    for (const v of RFC_VECTORS) {
      const crc = crc32c(v.input);
      expect(crc).toBeGreaterThanOrEqual(0);
      expect(crc).toBeLessThanOrEqual(0xffffffff);
    }
  });

  it("continues a running CRC when given the previous result", () => {
    const all = Buffer.from(Array.from({ length: 100 }, (_, i) => (i * 37) & 0xff));
    for (let cut = 0; cut <= all.length; cut++) {
      expect(crc32c(all.subarray(cut), crc32c(all.subarray(0, cut)))).toBe(crc32c(all));
    }
  });

  it("accepts subarrays of a larger buffer (digests the view, not the backing store)", () => {
    const big = Buffer.alloc(4096, 7);
    big.fill(9, 100, 200);
    expect(crc32c(big.subarray(100, 200))).toBe(crc32c(Buffer.alloc(100, 9)));
  });
});

describe("crc32cOf", () => {
  for (const v of RFC_VECTORS) {
    it(`RFC 7143 B.4: ${v.name}`, () => {
      const crc = crc32cOf(v.input);
      // On the wire the digest is least significant byte first.
      expect(digestBytes(crc)).toEqual(hex(v.wire));
      const b = Buffer.alloc(6);
      writeDigest(b, 1, crc);
      expect(b.subarray(1, 5)).toEqual(hex(v.wire));
      expect(readDigest(b, 1)).toBe(crc);
    });
  }

  it("digests several buffers as if concatenated", () => {
    const input = RFC_VECTORS[4]!.input;
    for (let a = 0; a <= input.length; a += 5) {
      for (let b = a; b <= input.length; b += 7) {
        expect(crc32cOf(input.subarray(0, a), input.subarray(a, b), input.subarray(b))).toBe(
          0xd9963a56,
        );
      }
    }
  });

  it("of nothing is 0, and empty buffers change nothing", () => {
    expect(crc32cOf()).toBe(0);
    expect(crc32cOf(Buffer.alloc(0))).toBe(0);
    expect(crc32cOf(Buffer.alloc(0), Buffer.alloc(32), Buffer.alloc(0))).toBe(0x8a9136aa);
  });

  it("DIGEST_LENGTH is 4", () => {
    expect(DIGEST_LENGTH).toBe(4);
  });
});

describe("header digest of the RFC's Read (10) example", () => {
  it("encodeScsiCommand rebuilds the example BHS and serializePdu appends its digest", () => {
    // The fields behind the RFC's bytes: F and R set, ITT 0x14000000, EDTL 1024, CmdSN 0x14,
    // ExpStatSN 0x18, CDB READ(10) of 2 blocks at LBA 0, untagged.
    const pdu = encodeScsiCommand({
      final: true,
      read: true,
      taskAttribute: 0,
      itt: 0x14000000,
      edtl: 1024,
      cmdSN: 0x14,
      expStatSN: 0x18,
      cdb: Buffer.from([0x28, 0, 0, 0, 0, 0, 0, 0, 0x02, 0]),
    });
    expect(pdu.bhs).toEqual(RFC_VECTORS[4]!.input);
    const wire = serializePdu(pdu, { header: true, data: true });
    expect(wire).toHaveLength(2);
    expect(wire[1]).toEqual(hex("56 3a 96 d9"));
  });
});
