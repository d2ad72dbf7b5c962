import { describe, expect, it } from "vitest";
import {
  decodeGetLbaStatus,
  decodePreFetch10,
  decodePreFetch16,
  decodeReadCapacity10,
  decodeReadCapacity16,
  decodeRw6,
  decodeRw10,
  decodeRw12,
  decodeRw16,
  decodeStartStopUnit,
  decodeSyncCache10,
  decodeSyncCache16,
  decodeUnmap,
  decodeVerify10,
  decodeVerify12,
  decodeVerify16,
  decodeWriteSame10,
  decodeWriteSame16,
  readUInt64,
  validateCdbUsage,
} from "./cdb.js";
import {
  decodeInquiry,
  decodeModeSelect6,
  decodeModeSelect10,
  decodeModeSense6,
  decodeModeSense10,
  decodeReportLuns,
  decodeReportSupportedOpcodes,
  decodeRequestSense,
} from "./cdb-spc.js";
import { lookupCommand, supportedCommands } from "./dispatch.js";
import { CheckCondition } from "./sense.js";
import { Cdb } from "./testing/cdb-builders.js";

describe("block command decoders", () => {
  it.each([
    ["READ(6)", decodeRw6, Cdb.read6({ lba: 0x1fffff, blocks: 7 }), { lba: 0x1fffff, blocks: 7 }],
    [
      "READ(6) length 0 = 256",
      decodeRw6,
      Cdb.read6({ lba: 3, blocks: 0 }),
      { lba: 3, blocks: 256 },
    ],
    [
      "WRITE(6)",
      decodeRw6,
      Cdb.write6({ lba: 0x10203, blocks: 255 }),
      { lba: 0x10203, blocks: 255 },
    ],
    [
      "READ(10)",
      decodeRw10,
      Cdb.read10({ lba: 0xfedcba98, blocks: 0xffff, fua: true, dpo: true }),
      { lba: 0xfedcba98, blocks: 0xffff, fua: true, dpo: true, protect: 0 },
    ],
    [
      "WRITE(10) protect",
      decodeRw10,
      Cdb.write10({ lba: 1, blocks: 2, protect: 5 }),
      { lba: 1, blocks: 2, fua: false, dpo: false, protect: 5 },
    ],
    [
      "READ(12)",
      decodeRw12,
      Cdb.read12({ lba: 0xffffffff, blocks: 0x12345678, fua: true }),
      { lba: 0xffffffff, blocks: 0x12345678, fua: true },
    ],
    [
      "WRITE(12)",
      decodeRw12,
      Cdb.write12({ lba: 9, blocks: 1, dpo: true }),
      { lba: 9, blocks: 1, dpo: true, fua: false },
    ],
    [
      "READ(16)",
      decodeRw16,
      Cdb.read16({ lba: 2n ** 40n + 5n, blocks: 0xffffffff }),
      { lba: 2 ** 40 + 5, blocks: 0xffffffff },
    ],
    [
      "WRITE(16) fua",
      decodeRw16,
      Cdb.write16({ lba: 0, blocks: 8, fua: true }),
      { lba: 0, blocks: 8, fua: true },
    ],
    [
      "SYNCHRONIZE CACHE(10)",
      decodeSyncCache10,
      Cdb.syncCache10({ lba: 100, blocks: 50, immed: true }),
      { lba: 100, blocks: 50, immed: true },
    ],
    [
      "SYNCHRONIZE CACHE(16)",
      decodeSyncCache16,
      Cdb.syncCache16({ lba: 2n ** 33n, blocks: 0 }),
      { lba: 2 ** 33, blocks: 0, immed: false },
    ],
    [
      "READ CAPACITY(10)",
      decodeReadCapacity10,
      Cdb.readCapacity10({ lba: 7, pmi: true }),
      { lba: 7, pmi: true },
    ],
    [
      "READ CAPACITY(16)",
      decodeReadCapacity16,
      Cdb.readCapacity16(32),
      { lba: 0, pmi: false, allocationLength: 32 },
    ],
    [
      "VERIFY(10)",
      decodeVerify10,
      Cdb.verify10({ lba: 77, blocks: 3, bytchk: 1, dpo: true }),
      { lba: 77, blocks: 3, bytchk: 1, dpo: true },
    ],
    [
      "VERIFY(12)",
      decodeVerify12,
      Cdb.verify12({ lba: 5, blocks: 70000, bytchk: 3 }),
      { lba: 5, blocks: 70000, bytchk: 3 },
    ],
    [
      "VERIFY(16)",
      decodeVerify16,
      Cdb.verify16({ lba: 2n ** 35n, blocks: 9 }),
      { lba: 2 ** 35, blocks: 9, bytchk: 0, dpo: false },
    ],
    [
      "WRITE SAME(10)",
      decodeWriteSame10,
      Cdb.writeSame10({ lba: 8, blocks: 16, unmap: true, anchor: true }),
      { lba: 8, blocks: 16, unmap: true, anchor: true, ndob: false },
    ],
    [
      "WRITE SAME(16)",
      decodeWriteSame16,
      Cdb.writeSame16({ lba: 2n ** 40n, blocks: 0x10000, ndob: true }),
      { lba: 2 ** 40, blocks: 0x10000, unmap: false, anchor: false, ndob: true },
    ],
    ["UNMAP", decodeUnmap, Cdb.unmap(24, true), { anchor: true, parameterListLength: 24 }],
    [
      "PRE-FETCH(10)",
      decodePreFetch10,
      Cdb.preFetch10({ lba: 1, blocks: 2, immed: true }),
      { lba: 1, blocks: 2, immed: true },
    ],
    [
      "PRE-FETCH(16)",
      decodePreFetch16,
      Cdb.preFetch16({ lba: 2n ** 33n, blocks: 2 }),
      { lba: 2 ** 33, blocks: 2, immed: false },
    ],
    [
      "GET LBA STATUS",
      decodeGetLbaStatus,
      Cdb.getLbaStatus(2n ** 34n, 24),
      { lba: 2 ** 34, allocationLength: 24 },
    ],
    [
      "START STOP UNIT",
      decodeStartStopUnit,
      Cdb.startStopUnit({ immed: true, start: false, loej: true, powerCondition: 0xb }),
      {
        immed: true,
        start: false,
        loej: true,
        powerCondition: 0xb,
        noFlush: false,
        powerConditionModifier: 0,
      },
    ],
  ] as const)("%s", (_name, decode, cdb, expected) => {
    expect(decode(cdb as Buffer)).toMatchObject(expected);
  });

  it("reads 64-bit fields exactly below 2^53 and above 2^53 beyond any capacity", () => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(2n ** 53n - 1n);
    expect(readUInt64(b, 0)).toBe(Number.MAX_SAFE_INTEGER);
    b.writeBigUInt64BE(2n ** 64n - 1n);
    expect(readUInt64(b, 0)).toBeGreaterThan(Number.MAX_SAFE_INTEGER);
    b.writeBigUInt64BE(2n ** 53n);
    expect(readUInt64(b, 0)).toBeGreaterThan(Number.MAX_SAFE_INTEGER);
  });
});

describe("primary command decoders", () => {
  it.each([
    [
      "INQUIRY",
      decodeInquiry,
      Cdb.inquiry({ evpd: true, page: 0x83, allocationLength: 0x1234 }),
      { evpd: true, pageCode: 0x83, allocationLength: 0x1234 },
    ],
    [
      "MODE SENSE(6)",
      decodeModeSense6,
      Cdb.modeSense6({ page: 0x08, pc: 2, dbd: true, allocationLength: 200 }),
      {
        dbd: true,
        llbaa: false,
        pageControl: 2,
        pageCode: 8,
        subpageCode: 0,
        allocationLength: 200,
      },
    ],
    [
      "MODE SENSE(10)",
      decodeModeSense10,
      Cdb.modeSense10({ page: 0x3f, subpage: 0xff, pc: 1, llbaa: true, allocationLength: 1000 }),
      {
        dbd: false,
        llbaa: true,
        pageControl: 1,
        pageCode: 0x3f,
        subpageCode: 0xff,
        allocationLength: 1000,
      },
    ],
    [
      "MODE SELECT(6)",
      decodeModeSelect6,
      Cdb.modeSelect6(24, { sp: true }),
      { pf: true, sp: true, parameterListLength: 24 },
    ],
    [
      "MODE SELECT(10)",
      decodeModeSelect10,
      Cdb.modeSelect10(300, { pf: false }),
      { pf: false, sp: false, parameterListLength: 300 },
    ],
    [
      "REPORT LUNS",
      decodeReportLuns,
      Cdb.reportLuns(0x10000, 2),
      { selectReport: 2, allocationLength: 0x10000 },
    ],
    [
      "REQUEST SENSE",
      decodeRequestSense,
      Cdb.requestSense(18, true),
      { desc: true, allocationLength: 18 },
    ],
    [
      "REPORT SUPPORTED OPERATION CODES",
      decodeReportSupportedOpcodes,
      Cdb.reportSupportedOpcodes({
        options: 2,
        rctd: true,
        opcode: 0x9e,
        serviceAction: 0x10,
        allocationLength: 99,
      }),
      {
        rctd: true,
        reportingOptions: 2,
        requestedOpcode: 0x9e,
        requestedServiceAction: 0x10,
        allocationLength: 99,
      },
    ],
  ] as const)("%s", (_name, decode, cdb, expected) => {
    expect(decode(cdb as Buffer)).toEqual(expected);
  });
});

describe("CDB usage validation (reserved bits → INVALID FIELD IN CDB)", () => {
  const specs = supportedCommands();

  it("covers every command of the table with a usage map as long as its CDB", () => {
    expect(specs.length).toBeGreaterThan(15);
    for (const spec of specs) {
      expect(spec.usage.length).toBe(spec.cdbLength);
      expect(spec.usage[0]).toBe(spec.opcode);
      expect([6, 10, 12, 16]).toContain(spec.cdbLength);
    }
  });

  for (const spec of specs) {
    it(`${spec.name}: accepts every supported bit and points at each unsupported one`, () => {
      const base = Buffer.alloc(spec.cdbLength);
      base[0] = spec.opcode;
      if (spec.serviceAction !== undefined) base[1] = spec.serviceAction;
      expect(lookupCommand(base)).toBe(spec);
      const all = Buffer.from(spec.usage);
      expect(() => validateCdbUsage(all, spec.usage)).not.toThrow();
      // Vendor specific bits of the CONTROL byte are ignored.
      const vendor = Buffer.from(base);
      vendor[spec.cdbLength - 1] = 0xc0;
      expect(() => validateCdbUsage(vendor, spec.usage)).not.toThrow();
      for (let byte = 1; byte < spec.cdbLength; byte++) {
        for (let bit = 0; bit < 8; bit++) {
          const mask = 1 << bit;
          const isControl = byte === spec.cdbLength - 1;
          if (isControl ? bit >= 6 : (spec.usage[byte]! & mask) !== 0) continue;
          const cdb = Buffer.from(base);
          cdb[byte] = cdb[byte]! | mask;
          let thrown: unknown;
          try {
            validateCdbUsage(cdb, spec.usage);
          } catch (e) {
            thrown = e;
          }
          expect(thrown, `byte ${byte} bit ${bit}`).toBeInstanceOf(CheckCondition);
          expect((thrown as CheckCondition).sense).toMatchObject({
            key: 5,
            asc: 0x2400,
            fieldPointer: { inCdb: true, byte, bit },
          });
        }
      }
    });
  }
});
