import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { BHS_LENGTH, LoginStage, Opcode, RESERVED_TAG } from "./constants.js";
import { crc32cOf, readDigest } from "./digest.js";
import {
  type DigestSettings,
  FramingError,
  PduReader,
  paddingOf,
  type ReaderSettings,
  serializePdu,
} from "./framing.js";
import {
  dataSegmentLengthOf,
  decodeDataOut,
  decodeLoginRequest,
  decodeLogoutRequest,
  decodeNopOut,
  decodeScsiCommand,
  decodeSnack,
  decodeTaskMgmtRequest,
  decodeTextRequest,
  EMPTY,
  encodeAsyncMessage,
  encodeDataIn,
  encodeLoginResponse,
  encodeLogoutResponse,
  encodeNopIn,
  encodeR2T,
  encodeReject,
  encodeScsiResponse,
  encodeTaskMgmtResponse,
  encodeTextResponse,
  type OutPdu,
  opcodeOf,
  type RawPdu,
} from "./pdu.js";
import {
  decodeAsyncMessage,
  decodeDataIn,
  decodeLoginResponse,
  decodeLogoutResponse,
  decodeNopIn,
  decodeR2T,
  decodeReject,
  decodeScsiResponse,
  decodeTaskMgmtResponse,
  decodeTextResponse,
  encodeDataOut,
  encodeLoginRequest,
  encodeLogoutRequest,
  encodeNopOut,
  encodeScsiCommand,
  encodeSnack,
  encodeTaskMgmtRequest,
  encodeTextRequest,
  toRawPdu,
} from "./pdu-initiator.js";

// ---------------------------------------------------------------------------------------------
// Fixtures: one builder per PDU type, each with the decoder for its receiving side
// ---------------------------------------------------------------------------------------------

/** Fields the builders vary, so that PDUs of one type differ from each other. */
interface Seed {
  readonly itt: number;
  readonly sn: number;
  readonly flag: boolean;
  readonly data: Buffer;
}

interface PduType {
  readonly name: string;
  /** Whether this PDU type carries a data segment at all. */
  readonly hasData: boolean;
  readonly build: (s: Seed) => OutPdu;
  readonly decode: (raw: RawPdu) => unknown;
}

const LUN = Buffer.from([0, 1, 0, 0, 0, 0, 0, 0]);
const ISID = Buffer.from([0x80, 1, 2, 3, 4, 5]);

const PDU_TYPES: readonly PduType[] = [
  // Initiator PDUs, decoded by pdu.ts.
  {
    name: "SCSI Command",
    hasData: true,
    build: (s) =>
      encodeScsiCommand({
        write: true,
        lun: LUN,
        itt: s.itt,
        edtl: s.data.length + 512,
        cmdSN: s.sn,
        expStatSN: (s.sn ^ 1) >>> 0,
        cdb: Buffer.from([0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0]),
        data: s.data,
      }),
    decode: decodeScsiCommand,
  },
  {
    name: "SCSI Command with AHS",
    hasData: true,
    build: (s) =>
      encodeScsiCommand({
        read: true,
        write: s.flag,
        itt: s.itt,
        edtl: 4096,
        cmdSN: s.sn,
        expStatSN: s.sn,
        cdb: Buffer.from(Array.from({ length: 21 }, (_, i) => i + 1)),
        bidiReadEdtl: s.flag ? 4096 : undefined,
        data: s.data,
      }),
    decode: decodeScsiCommand,
  },
  {
    name: "Data-Out",
    hasData: true,
    build: (s) =>
      encodeDataOut({
        final: s.flag,
        lun: LUN,
        itt: s.itt,
        ttt: 0x1000,
        expStatSN: s.sn,
        dataSN: 1,
        bufferOffset: 8192,
        data: s.data,
      }),
    decode: decodeDataOut,
  },
  {
    name: "NOP-Out",
    hasData: true,
    build: (s) =>
      encodeNopOut({ immediate: s.flag, itt: s.itt, cmdSN: s.sn, expStatSN: 2, data: s.data }),
    decode: decodeNopOut,
  },
  {
    name: "Login Request",
    hasData: true,
    build: (s) =>
      encodeLoginRequest({
        transit: s.flag,
        csg: LoginStage.Operational,
        nsg: LoginStage.FullFeature,
        isid: ISID,
        itt: s.itt,
        cmdSN: s.sn,
        expStatSN: 0,
        data: s.data,
      }),
    decode: decodeLoginRequest,
  },
  {
    name: "Text Request",
    hasData: true,
    build: (s) =>
      encodeTextRequest({ final: s.flag, itt: s.itt, cmdSN: s.sn, expStatSN: 1, data: s.data }),
    decode: decodeTextRequest,
  },
  {
    name: "Logout Request",
    hasData: false,
    build: (s) =>
      encodeLogoutRequest({ reasonCode: 0, itt: s.itt, cid: 1, cmdSN: s.sn, expStatSN: 3 }),
    decode: decodeLogoutRequest,
  },
  {
    name: "Task Management Request",
    hasData: false,
    build: (s) =>
      encodeTaskMgmtRequest({
        immediate: s.flag,
        function: 1,
        lun: LUN,
        itt: s.itt,
        rtt: 77,
        cmdSN: s.sn,
        expStatSN: 4,
        refCmdSN: 5,
      }),
    decode: decodeTaskMgmtRequest,
  },
  {
    name: "SNACK",
    hasData: false,
    build: (s) => encodeSnack({ type: 1, itt: s.itt, expStatSN: s.sn, begRun: 3, runLength: 0 }),
    decode: decodeSnack,
  },
  // Target PDUs, decoded by pdu-initiator.ts.
  {
    name: "SCSI Response",
    hasData: true,
    build: (s) =>
      encodeScsiResponse({
        underflow: s.flag,
        status: s.data.length === 0 ? 0 : 2,
        itt: s.itt,
        statSN: s.sn,
        expCmdSN: 10,
        maxCmdSN: 41,
        residualCount: s.flag ? 512 : 0,
        data: s.data,
      }),
    decode: decodeScsiResponse,
  },
  {
    name: "Data-In",
    hasData: true,
    build: (s) =>
      encodeDataIn({
        final: true,
        statusPresent: s.flag,
        status: 0,
        lun: LUN,
        itt: s.itt,
        statSN: s.flag ? s.sn : 0,
        expCmdSN: 10,
        maxCmdSN: 41,
        dataSN: 0,
        bufferOffset: 0,
        data: s.data,
      }),
    decode: decodeDataIn,
  },
  {
    name: "R2T",
    hasData: false,
    build: (s) =>
      encodeR2T({
        lun: LUN,
        itt: s.itt,
        ttt: 0x2000,
        statSN: s.sn,
        expCmdSN: 1,
        maxCmdSN: 2,
        r2tSN: 0,
        bufferOffset: 0,
        desiredDataTransferLength: 65536,
      }),
    decode: decodeR2T,
  },
  {
    name: "NOP-In",
    hasData: true,
    build: (s) =>
      encodeNopIn({
        itt: s.itt,
        ttt: RESERVED_TAG,
        statSN: s.sn,
        expCmdSN: 1,
        maxCmdSN: 2,
        data: s.data,
      }),
    decode: decodeNopIn,
  },
  {
    name: "Login Response",
    hasData: true,
    build: (s) =>
      encodeLoginResponse({
        transit: s.flag,
        cont: false,
        csg: LoginStage.Security,
        nsg: LoginStage.Operational,
        versionMax: 0,
        versionActive: 0,
        isid: ISID,
        tsih: 7,
        itt: s.itt,
        statSN: s.sn,
        expCmdSN: 1,
        maxCmdSN: 1,
        statusClass: 0,
        statusDetail: 0,
        data: s.data,
      }),
    decode: decodeLoginResponse,
  },
  {
    name: "Text Response",
    hasData: true,
    build: (s) =>
      encodeTextResponse({
        final: s.flag,
        cont: !s.flag,
        itt: s.itt,
        ttt: s.flag ? RESERVED_TAG : 5,
        statSN: s.sn,
        expCmdSN: 1,
        maxCmdSN: 2,
        data: s.data,
      }),
    decode: decodeTextResponse,
  },
  {
    name: "Logout Response",
    hasData: false,
    build: (s) =>
      encodeLogoutResponse({
        response: 0,
        itt: s.itt,
        statSN: s.sn,
        expCmdSN: 1,
        maxCmdSN: 2,
        time2Wait: s.flag ? 2 : 0,
        time2Retain: 20,
      }),
    decode: decodeLogoutResponse,
  },
  {
    name: "Task Management Response",
    hasData: false,
    build: (s) =>
      encodeTaskMgmtResponse({ response: 0, itt: s.itt, statSN: s.sn, expCmdSN: 1, maxCmdSN: 2 }),
    decode: decodeTaskMgmtResponse,
  },
  {
    name: "Reject",
    hasData: true,
    build: (s) => encodeReject({ reason: 4, statSN: s.sn, expCmdSN: 1, maxCmdSN: 2, data: s.data }),
    decode: decodeReject,
  },
  {
    name: "Asynchronous Message",
    hasData: true,
    build: (s) =>
      encodeAsyncMessage({
        statSN: s.sn,
        expCmdSN: 1,
        maxCmdSN: 2,
        asyncEvent: s.flag ? 1 : 4,
        parameter3: 10,
        data: s.data,
      }),
    decode: decodeAsyncMessage,
  },
];

const DIGEST_COMBINATIONS: readonly DigestSettings[] = [
  { header: false, data: false },
  { header: true, data: false },
  { header: false, data: true },
  { header: true, data: true },
];

/** Data lengths that cover every padding length (0, 3, 1, 0, 3 bytes of padding). */
const DATA_LENGTHS = [0, 1, 3, 4, 5] as const;

function pattern(n: number, seed = 1): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => (seed * 13 + i * 7 + 1) & 0xff));
}

function readerSettings(d: DigestSettings, max = 1 << 24): ReaderSettings {
  return { headerDigest: d.header, dataDigest: d.data, maxDataSegmentLength: max };
}

function wire(pdu: OutPdu, d: DigestSettings): Buffer {
  return Buffer.concat(serializePdu(pdu, d));
}

/** A reader that records what it delivers. */
function recorder(settings: ReaderSettings) {
  const pdus: RawPdu[] = [];
  const errors: FramingError[] = [];
  const reader = new PduReader({
    settings,
    onPdu: (pdu) => pdus.push(pdu),
    onError: (error) => errors.push(error),
  });
  return { reader, pdus, errors };
}

/** The three buffers of a RawPdu, for comparing with toEqual. */
function parts(pdu: RawPdu): [Buffer, Buffer, Buffer] {
  return [pdu.bhs, pdu.ahs, pdu.data];
}

interface Sample {
  readonly label: string;
  readonly type: PduType;
  readonly pdu: OutPdu;
}

/** Every PDU type with every data length it can carry. */
function samples(): Sample[] {
  const out: Sample[] = [];
  let n = 0;
  for (const type of PDU_TYPES) {
    for (const length of type.hasData ? DATA_LENGTHS : [0]) {
      n++;
      const seed = {
        itt: 0x1000 + n,
        sn: (0xfffffff0 + n) >>> 0,
        flag: n % 2 === 0,
        data: pattern(length, n),
      };
      out.push({ label: `${type.name}, ${length} data bytes`, type, pdu: type.build(seed) });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// serializePdu
// ---------------------------------------------------------------------------------------------

describe("serializePdu (RFC 7143 11.2)", () => {
  it("lays out BHS, header digest, data, padding and data digest", () => {
    for (const length of DATA_LENGTHS) {
      const data = pattern(length);
      const pdu = encodeNopIn({ itt: 1, ttt: 2, statSN: 3, expCmdSN: 4, maxCmdSN: 5, data });
      for (const d of DIGEST_COMBINATIONS) {
        const buffers = serializePdu(pdu, d);
        const bytes = Buffer.concat(buffers);
        const pad = paddingOf(length);
        const expected =
          BHS_LENGTH + (d.header ? 4 : 0) + length + pad + (d.data && length > 0 ? 4 : 0);
        expect(bytes.length).toBe(expected);
        expect(bytes.length % 4).toBe(0);
        expect(bytes.subarray(0, BHS_LENGTH)).toEqual(pdu.bhs);
        let off = BHS_LENGTH;
        if (d.header) {
          expect(readDigest(bytes, off)).toBe(crc32cOf(pdu.bhs));
          off += 4;
        }
        expect(bytes.subarray(off, off + length)).toEqual(data);
        off += length;
        expect(bytes.subarray(off, off + pad)).toEqual(Buffer.alloc(pad));
        off += pad;
        if (d.data && length > 0) {
          expect(readDigest(bytes, off)).toBe(crc32cOf(data, Buffer.alloc(pad)));
        }
      }
    }
  });

  it("does not copy the data payload", () => {
    const read = pattern(1 << 16);
    const slice = read.subarray(100, 1100);
    const pdu = encodeDataIn({
      final: false,
      itt: 1,
      expCmdSN: 1,
      maxCmdSN: 1,
      dataSN: 0,
      bufferOffset: 100,
      data: slice,
    });
    const buffers = serializePdu(pdu, { header: true, data: true });
    expect(buffers[0]).toBe(pdu.bhs);
    expect(buffers[2]).toBe(slice);
  });

  it("sends no data digest for an empty data segment", () => {
    const pdu = encodeR2T({
      itt: 1,
      ttt: 2,
      statSN: 3,
      expCmdSN: 4,
      maxCmdSN: 5,
      r2tSN: 0,
      bufferOffset: 0,
      desiredDataTransferLength: 1,
    });
    expect(serializePdu(pdu, { header: false, data: true })).toEqual([pdu.bhs]);
  });

  it("covers the AHS with the header digest", () => {
    const pdu = encodeScsiCommand({
      itt: 1,
      edtl: 0,
      cmdSN: 1,
      expStatSN: 1,
      cdb: pattern(20),
    });
    const buffers = serializePdu(pdu, { header: true, data: false });
    expect(buffers).toHaveLength(3);
    expect(buffers[1]).toBe(pdu.ahs);
    expect(readDigest(buffers[2]!, 0)).toBe(crc32cOf(pdu.bhs, pdu.ahs!));
  });

  it("refuses a PDU whose BHS lengths disagree with its buffers", () => {
    const pdu = encodeNopIn({ itt: 1, ttt: 2, statSN: 3, expCmdSN: 4, maxCmdSN: 5 });
    expect(() =>
      serializePdu({ bhs: pdu.bhs, data: Buffer.alloc(1) }, { header: false, data: false }),
    ).toThrow();
  });
});

// ---------------------------------------------------------------------------------------------
// PduReader: every PDU type, every split
// ---------------------------------------------------------------------------------------------

describe("PduReader: every PDU type split at every byte boundary", () => {
  for (const d of DIGEST_COMBINATIONS) {
    describe(`header digest ${d.header}, data digest ${d.data}`, () => {
      for (const sample of samples()) {
        it(sample.label, () => {
          const bytes = wire(sample.pdu, d);
          const expectedRaw = toRawPdu(sample.pdu);
          const expected = sample.type.decode(expectedRaw);

          // One split point at a time: k = 0 and k = length are the whole PDU in one chunk.
          for (let k = 0; k <= bytes.length; k++) {
            const r = recorder(readerSettings(d));
            r.reader.push(bytes.subarray(0, k));
            r.reader.push(bytes.subarray(k));
            expect(r.errors).toEqual([]);
            expect(r.pdus).toHaveLength(1);
            expect(parts(r.pdus[0]!)).toEqual(parts(expectedRaw));
            expect(sample.type.decode(r.pdus[0]!)).toEqual(expected);
            expect(r.reader.idle).toBe(true);
          }

          // Byte by byte.
          const r = recorder(readerSettings(d));
          for (let i = 0; i < bytes.length; i++) {
            r.reader.push(bytes.subarray(i, i + 1));
            expect(r.pdus).toHaveLength(i === bytes.length - 1 ? 1 : 0);
          }
          expect(r.errors).toEqual([]);
          expect(sample.type.decode(r.pdus[0]!)).toEqual(expected);
        });
      }
    });
  }
});

// ---------------------------------------------------------------------------------------------
// PduReader: streams of PDUs
// ---------------------------------------------------------------------------------------------

describe("PduReader: many PDUs", () => {
  const all = samples();

  for (const d of DIGEST_COMBINATIONS) {
    it(`decodes every sample from one chunk, and from 7-byte chunks (digests ${d.header}/${d.data})`, () => {
      const stream = Buffer.concat(all.map((s) => wire(s.pdu, d)));
      const expected = all.map((s) => parts(toRawPdu(s.pdu)));

      const one = recorder(readerSettings(d));
      one.reader.push(stream);
      expect(one.errors).toEqual([]);
      expect(one.pdus.map(parts)).toEqual(expected);

      const small = recorder(readerSettings(d));
      for (let off = 0; off < stream.length; off += 7)
        small.reader.push(stream.subarray(off, off + 7));
      expect(small.pdus.map(parts)).toEqual(expected);
      expect(small.reader.idle).toBe(true);
    });
  }

  it("reports a partial PDU as not idle", () => {
    const bytes = wire(all[0]!.pdu, { header: false, data: false });
    const r = recorder(readerSettings({ header: false, data: false }));
    expect(r.reader.idle).toBe(true);
    r.reader.push(bytes.subarray(0, 10));
    expect(r.reader.idle).toBe(false);
    r.reader.push(bytes.subarray(10));
    expect(r.reader.idle).toBe(true);
  });

  it("copies a large Data-Out payload out of 64 KiB chunks once, into a buffer it owns", () => {
    const payload = pattern(1 << 20, 5);
    const pdu = encodeDataOut({
      final: true,
      itt: 9,
      ttt: 10,
      expStatSN: 11,
      dataSN: 0,
      bufferOffset: 0,
      data: payload,
    });
    const d = { header: true, data: true };
    const bytes = wire(pdu, d);
    const r = recorder(readerSettings(d));
    const chunk = Buffer.alloc(65536);
    for (let off = 0; off < bytes.length; off += chunk.length) {
      // The same receive buffer is reused for every chunk, as a socket reader might.
      const n = bytes.copy(chunk, 0, off, off + chunk.length);
      r.reader.push(chunk.subarray(0, n));
    }
    chunk.fill(0xee);
    expect(r.errors).toEqual([]);
    expect(r.pdus).toHaveLength(1);
    const got = decodeDataOut(r.pdus[0]!);
    expect(got.data.equals(payload)).toBe(true);
    expect(got.data.buffer).not.toBe(chunk.buffer);
    expect(got.data.length).toBe(payload.length);
  });

  it("delivers PDUs that own their buffers (the chunk may be reused afterwards)", () => {
    const pdu = encodeNopOut({ itt: 1, cmdSN: 2, expStatSN: 3, data: pattern(5) });
    const bytes = wire(pdu, { header: false, data: false });
    const r = recorder(readerSettings({ header: false, data: false }));
    r.reader.push(bytes);
    bytes.fill(0xaa);
    expect(parts(r.pdus[0]!)).toEqual(parts(toRawPdu(pdu)));
  });

  it("applies settings changed inside onPdu to the next PDU of the same chunk", () => {
    const plain = { header: false, data: false };
    const digests = { header: true, data: true };
    const login = encodeLoginRequest({
      transit: true,
      csg: LoginStage.Operational,
      nsg: LoginStage.FullFeature,
      isid: ISID,
      itt: 1,
      cmdSN: 1,
      expStatSN: 0,
      data: pattern(30),
    });
    const nop = encodeNopOut({ itt: 2, cmdSN: 1, expStatSN: 1, data: pattern(9) });
    const command = encodeScsiCommand({
      itt: 3,
      edtl: 0,
      cmdSN: 2,
      expStatSN: 1,
      cdb: pattern(16),
      data: pattern(13),
    });
    const stream = Buffer.concat([wire(login, plain), wire(nop, digests), wire(command, digests)]);
    const pdus: RawPdu[] = [];
    const errors: FramingError[] = [];
    const reader: PduReader = new PduReader({
      settings: { headerDigest: false, dataDigest: false, maxDataSegmentLength: 8192 },
      onPdu: (pdu) => {
        pdus.push(pdu);
        if (opcodeOf(pdu.bhs) === Opcode.LoginRequest) {
          reader.settings = { headerDigest: true, dataDigest: true, maxDataSegmentLength: 16 };
        }
      },
      onError: (error) => errors.push(error),
    });
    reader.push(stream);
    expect(errors).toEqual([]);
    expect(pdus.map(parts)).toEqual([login, nop, command].map((p) => parts(toRawPdu(p))));
  });
});

// ---------------------------------------------------------------------------------------------
// PduReader: errors
// ---------------------------------------------------------------------------------------------

describe("PduReader: errors", () => {
  const both = { header: true, data: true };
  const nop = (itt: number, length: number) =>
    encodeNopOut({ itt, cmdSN: itt, expStatSN: 1, data: pattern(length, itt) });

  it("a header digest error is fatal and the reader ignores what follows", () => {
    const bad = wire(nop(1, 5), both);
    bad[20] = (bad[20] ?? 0) ^ 0x01; // a bit of the CmdSN
    const good = wire(nop(2, 5), both);
    const r = recorder(readerSettings(both));
    r.reader.push(Buffer.concat([bad, good]));
    expect(r.pdus).toEqual([]);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toBeInstanceOf(FramingError);
    expect(r.errors[0]!.kind).toBe("header-digest");
    expect(r.errors[0]!.fatal).toBe(true);
    expect(r.reader.stopped).toBe(true);
    r.reader.push(good);
    expect(r.pdus).toEqual([]);
    expect(r.errors).toHaveLength(1);
  });

  it("a corrupted header digest itself is a header digest error", () => {
    const bad = wire(nop(1, 0), both);
    bad[BHS_LENGTH] = (bad[BHS_LENGTH] ?? 0) ^ 0x80;
    const r = recorder(readerSettings(both));
    r.reader.push(bad);
    expect(r.errors.map((e) => e.kind)).toEqual(["header-digest"]);
  });

  it("a data digest error discards the PDU, reports its BHS, and the next PDU decodes", () => {
    for (const length of [1, 3, 4, 5, 100]) {
      const first = nop(1, length);
      const bad = wire(first, both);
      bad[BHS_LENGTH + 4] = (bad[BHS_LENGTH + 4] ?? 0) ^ 0xff; // first data byte
      const second = nop(2, length);
      const r = recorder(readerSettings(both));
      r.reader.push(Buffer.concat([bad, wire(second, both)]));
      expect(r.errors).toHaveLength(1);
      const error = r.errors[0]!;
      expect(error.kind).toBe("data-digest");
      expect(error.fatal).toBe(false);
      expect(error.bhs).toEqual(first.bhs);
      expect(r.pdus.map(parts)).toEqual([parts(toRawPdu(second))]);
      expect(r.reader.stopped).toBe(false);
    }
  });

  it("padding is covered by the data digest, and ignored without one", () => {
    const pdu = nop(1, 5); // 3 bytes of padding
    const withDigest = wire(pdu, both);
    withDigest[BHS_LENGTH + 4 + 5] = 0x01;
    const r1 = recorder(readerSettings(both));
    r1.reader.push(withDigest);
    expect(r1.errors.map((e) => e.kind)).toEqual(["data-digest"]);

    const none = { header: false, data: false };
    const withoutDigest = wire(pdu, none);
    withoutDigest[BHS_LENGTH + 5] = 0x01;
    const r2 = recorder(readerSettings(none));
    r2.reader.push(withoutDigest);
    expect(r2.errors).toEqual([]);
    expect(r2.pdus.map(parts)).toEqual([parts(toRawPdu(pdu))]);
  });

  it("a data segment over the limit is fatal, reported with its BHS", () => {
    const none = { header: false, data: false };
    const atLimit = nop(1, 64);
    const over = nop(2, 65);
    const r = recorder(readerSettings(none, 64));
    r.reader.push(Buffer.concat([wire(atLimit, none), wire(over, none), wire(nop(3, 1), none)]));
    expect(r.pdus.map(parts)).toEqual([parts(toRawPdu(atLimit))]);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]!.kind).toBe("oversize");
    expect(r.errors[0]!.fatal).toBe(true);
    expect(r.errors[0]!.bhs).toEqual(over.bhs);
    expect(dataSegmentLengthOf(r.errors[0]!.bhs)).toBe(65);
    expect(r.reader.stopped).toBe(true);
  });

  it("the oversize check happens before any data arrives", () => {
    const none = { header: false, data: false };
    const over = wire(nop(2, 100_000), none);
    const r = recorder(readerSettings(none, 8192));
    r.reader.push(over.subarray(0, BHS_LENGTH));
    expect(r.errors.map((e) => e.kind)).toEqual(["oversize"]);
  });

  it("a malformed AHS is reported, its data consumed, and the next PDU decodes", () => {
    for (const d of DIGEST_COMBINATIONS) {
      // A SCSI Command whose single AHS claims more bytes than TotalAHSLength holds.
      const command = encodeScsiCommand({
        itt: 1,
        edtl: 0,
        cmdSN: 1,
        expStatSN: 1,
        cdb: pattern(20),
        data: pattern(6),
      });
      const ahs = Buffer.from(command.ahs!);
      ahs.writeUInt16BE(200, 0);
      const broken: OutPdu = { bhs: command.bhs, ahs, data: command.data };
      const next = nop(2, 3);
      const r = recorder(readerSettings(d));
      r.reader.push(Buffer.concat([wire(broken, d), wire(next, d)]));
      expect(r.errors.map((e) => [e.kind, e.fatal])).toEqual([["bad-ahs", false]]);
      expect(r.errors[0]!.bhs).toEqual(command.bhs);
      expect(r.pdus.map(parts)).toEqual([parts(toRawPdu(next))]);
    }
  });

  it("stops, and rethrows, when a callback throws", () => {
    const none = { header: false, data: false };
    const reader = new PduReader({
      settings: readerSettings(none),
      onPdu: () => {
        throw new Error("boom");
      },
      onError: () => {},
    });
    expect(() =>
      reader.push(Buffer.concat([wire(nop(1, 1), none), wire(nop(2, 1), none)])),
    ).toThrow("boom");
    expect(reader.stopped).toBe(true);
  });

  it("refuses a push from inside its own callback", () => {
    const none = { header: false, data: false };
    const bytes = wire(nop(1, 1), none);
    const errors: unknown[] = [];
    const reader: PduReader = new PduReader({
      settings: readerSettings(none),
      onPdu: () => {
        try {
          reader.push(bytes);
        } catch (error) {
          errors.push(error);
        }
      },
      onError: () => {},
    });
    reader.push(bytes);
    expect(errors).toHaveLength(1);
  });
});

// ---------------------------------------------------------------------------------------------
// Property: random PDUs, random digests, random chunking
// ---------------------------------------------------------------------------------------------

describe("PduReader property: any chunking of any PDU sequence decodes the same", () => {
  const seed = fc.record({
    itt: fc.integer({ min: 0, max: 0xffffffff }),
    sn: fc.integer({ min: 0, max: 0xffffffff }),
    flag: fc.boolean(),
    data: fc.uint8Array({ maxLength: 70 }).map((a) => Buffer.from(a)),
  });
  const pduSpec = fc.tuple(fc.integer({ min: 0, max: PDU_TYPES.length - 1 }), seed);

  it("holds", () => {
    fc.assert(
      fc.property(
        fc.array(pduSpec, { minLength: 1, maxLength: 12 }),
        fc.constantFrom(...DIGEST_COMBINATIONS),
        fc.array(fc.integer({ min: 0, max: 10_000 }), { maxLength: 20 }),
        (specs, d, cuts) => {
          const built = specs.map(([index, s]) => {
            const type = PDU_TYPES[index]!;
            return { type, pdu: type.build(type.hasData ? s : { ...s, data: EMPTY }) };
          });
          const stream = Buffer.concat(built.map((b) => wire(b.pdu, d)));
          const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort(
            (a, b) => a - b,
          );
          const r = recorder(readerSettings(d));
          let prev = 0;
          for (const p of [...points, stream.length]) {
            r.reader.push(stream.subarray(prev, p));
            prev = p;
          }
          expect(r.errors).toEqual([]);
          expect(r.pdus.length).toBe(built.length);
          r.pdus.forEach((raw, i) => {
            const b = built[i]!;
            expect(parts(raw)).toEqual(parts(toRawPdu(b.pdu)));
            expect(b.type.decode(raw)).toEqual(b.type.decode(toRawPdu(b.pdu)));
          });
          expect(r.reader.idle).toBe(true);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("a single flipped bit is never delivered as a different PDU when both digests are on", () => {
    const both = { header: true, data: true };
    fc.assert(
      fc.property(pduSpec, fc.nat(), fc.integer({ min: 0, max: 7 }), ([index, s], at, bitNo) => {
        const type = PDU_TYPES[index]!;
        const pdu = type.build(type.hasData ? s : { ...s, data: EMPTY });
        const bytes = wire(pdu, both);
        const offset = at % bytes.length;
        bytes[offset] = (bytes[offset] ?? 0) ^ (1 << bitNo);
        const r = recorder(readerSettings(both));
        r.reader.push(bytes);
        // Either the corruption is caught, or (a flipped length) the reader waits for bytes
        // that never come; it never hands out a PDU that differs from what was sent.
        for (const raw of r.pdus) expect(parts(raw)).toEqual(parts(toRawPdu(pdu)));
        expect(r.pdus).toHaveLength(0);
      }),
      { numRuns: 500 },
    );
  });
});
