import { describe, expect, it } from "vitest";
import { Asc } from "./asc.js";
import { ScsiStatus, SenseKey } from "./constants.js";
import {
  CheckCondition,
  checkConditionResult,
  decodeFixedSense,
  encodeDescriptorSense,
  encodeFixedSense,
  invalidCdbField,
  invalidParameterField,
} from "./sense.js";

describe("fixed format sense data (SPC-4 4.5.3)", () => {
  it("encodes key, ASC/ASCQ and lengths byte for byte", () => {
    const buf = encodeFixedSense({ key: SenseKey.ILLEGAL_REQUEST, asc: Asc.LBA_OUT_OF_RANGE });
    expect([...buf]).toEqual([
      0x70, // current error, VALID=0
      0x00,
      0x05, // ILLEGAL REQUEST
      0,
      0,
      0,
      0, // INFORMATION
      0x0a, // ADDITIONAL SENSE LENGTH
      0,
      0,
      0,
      0, // COMMAND-SPECIFIC INFORMATION
      0x21,
      0x00, // ASC/ASCQ
      0x00, // FRU
      0,
      0,
      0, // no sense key specific data
    ]);
  });

  it("sets VALID and INFORMATION when the value fits 32 bits", () => {
    const buf = encodeFixedSense({
      key: SenseKey.MEDIUM_ERROR,
      asc: Asc.UNRECOVERED_READ_ERROR,
      information: 0x12345678,
    });
    expect(buf[0]).toBe(0xf0);
    expect(buf.readUInt32BE(3)).toBe(0x12345678);
    expect(buf[2]).toBe(0x03);
    expect([buf[12], buf[13]]).toEqual([0x11, 0x00]);
  });

  it("clears VALID when INFORMATION does not fit 4 bytes", () => {
    const buf = encodeFixedSense({
      key: SenseKey.MEDIUM_ERROR,
      asc: Asc.UNRECOVERED_READ_ERROR,
      information: 2 ** 40,
    });
    expect(buf[0]).toBe(0x70);
    expect(buf.readUInt32BE(3)).toBe(0);
  });

  it("uses response code 71h for deferred errors", () => {
    const buf = encodeFixedSense({
      key: SenseKey.MEDIUM_ERROR,
      asc: Asc.WRITE_ERROR,
      deferred: true,
    });
    expect(buf[0]).toBe(0x71);
  });

  it("encodes a CDB field pointer with a bit pointer (SPC-4 4.5.2.4.2)", () => {
    const err = invalidCdbField(1, 7);
    const buf = encodeFixedSense(err.sense);
    expect([buf[15], buf[16], buf[17]]).toEqual([0x80 | 0x40 | 0x08 | 7, 0x00, 0x01]);
  });

  it("encodes a parameter list field pointer without a bit pointer", () => {
    const buf = encodeFixedSense(invalidParameterField(0x1234).sense);
    expect([buf[15], buf[16], buf[17]]).toEqual([0x80, 0x12, 0x34]);
    expect([buf[12], buf[13]]).toEqual([0x26, 0x00]);
  });

  it("round-trips through decodeFixedSense", () => {
    const spec = {
      key: SenseKey.ILLEGAL_REQUEST,
      asc: Asc.INVALID_FIELD_IN_CDB,
      fieldPointer: { inCdb: true, byte: 2, bit: 5 },
    };
    const decoded = decodeFixedSense(encodeFixedSense(spec));
    expect(decoded).toMatchObject({ key: 5, asc: 0x2400, responseCode: 0x70, valid: false });
    expect(decoded.fieldPointer).toEqual({ inCdb: true, byte: 2, bit: 5 });
  });

  it("encodes a progress indication (SPC-4 4.5.2.4.4), clamped to 0..FFFFh", () => {
    const notReady = { key: SenseKey.NOT_READY, asc: 0x041b };
    const buf = encodeFixedSense({ ...notReady, progress: 0x1234 });
    expect([buf[15], buf[16], buf[17]]).toEqual([0x80, 0x12, 0x34]);
    expect(decodeFixedSense(buf)).toMatchObject({ key: 2, asc: 0x041b, progress: 0x1234 });
    expect(decodeFixedSense(buf).fieldPointer).toBeUndefined();
    expect(encodeFixedSense({ ...notReady, progress: 0x10000 }).readUInt16BE(16)).toBe(0xffff);
    expect(encodeFixedSense({ ...notReady, progress: -1 }).readUInt16BE(16)).toBe(0);
    // Progress 0 is still a progress indication: SKSV is set.
    expect(encodeFixedSense({ ...notReady, progress: 0 })[15]).toBe(0x80);
  });
});

describe("descriptor format sense data (SPC-4 4.5.2)", () => {
  it("has an 8-byte header only when nothing else is set", () => {
    const buf = encodeDescriptorSense({ key: SenseKey.NO_SENSE, asc: Asc.NO_ADDITIONAL_SENSE });
    expect([...buf]).toEqual([0x72, 0, 0, 0, 0, 0, 0, 0]);
  });

  it("adds information and sense key specific descriptors", () => {
    const buf = encodeDescriptorSense({
      key: SenseKey.ILLEGAL_REQUEST,
      asc: Asc.INVALID_FIELD_IN_CDB,
      information: 2 ** 40,
      fieldPointer: { inCdb: true, byte: 4 },
    });
    expect(buf.length).toBe(8 + 12 + 8);
    expect([buf[0], buf[1], buf[2], buf[3], buf[7]]).toEqual([0x72, 0x05, 0x24, 0x00, 20]);
    expect([buf[8], buf[9], buf[10]]).toEqual([0x00, 0x0a, 0x80]);
    expect(buf.readBigUInt64BE(12)).toBe(2n ** 40n);
    expect([buf[20], buf[21], buf[24], buf[25], buf[26]]).toEqual([0x02, 0x06, 0xc0, 0x00, 0x04]);
  });

  it("carries a progress indication in a sense key specific descriptor", () => {
    const buf = encodeDescriptorSense({ key: SenseKey.NOT_READY, asc: 0x041b, progress: 0x8000 });
    expect([...buf]).toEqual([0x72, 2, 0x04, 0x1b, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0x80, 0x80, 0, 0]);
  });
});

describe("checkConditionResult", () => {
  it("is CHECK CONDITION with 18 bytes of fixed sense and the data-out length", () => {
    const r = checkConditionResult({ key: SenseKey.DATA_PROTECT, asc: Asc.WRITE_PROTECTED }, 512);
    expect(r.status).toBe(ScsiStatus.CHECK_CONDITION);
    expect(r.sense?.length).toBe(18);
    expect(r.dataOutLength).toBe(512);
  });

  it("CheckCondition carries its sense", () => {
    const e = invalidCdbField(3);
    expect(e).toBeInstanceOf(CheckCondition);
    expect(e.sense.fieldPointer).toEqual({ inCdb: true, byte: 3 });
  });
});
