import { describe, expect, it } from "vitest";
import { StorageError, StorageErrorCode } from "../../volume/errors.js";
import type { Volume, WriteOptions } from "../../volume/volume.js";
import { Asc } from "../asc.js";
import { ScsiStatus, SenseKey } from "../constants.js";
import { decodeFixedSense } from "../sense.js";
import { ScsiTarget } from "../target.js";
import { Cdb } from "../testing/cdb-builders.js";
import {
  blockSegment,
  CopyCdb,
  copyParameterList,
  HoldingVolume,
  identificationCscd,
  settle,
} from "../testing/copy-builders.js";
import {
  exec,
  expectGood,
  expectSense,
  identity,
  lunEntry,
  MutableView,
  pattern,
  TEST_INFO,
} from "../testing/harness.js";
import { MemoryVolume, type MemoryVolumeOptions } from "../testing/memory-volume.js";
import type { ScsiResult } from "../types.js";
import { copyAbortedSense, parseCopyParameterList } from "./xcopy.js";

/** A target, volumes `a` (LUN 0) and `b` (LUN 1) in one agent's view, `hidden` only in another's. */
function setupCopy(o: { aBlockSize?: number; bBlockSize?: number; bReadOnly?: boolean } = {}) {
  const target = new ScsiTarget(TEST_INFO);
  const a = new MemoryVolume({ blocks: 8192, blockSize: o.aBlockSize ?? 512 });
  const b = new MemoryVolume({ blocks: 8192, blockSize: o.bBlockSize ?? 512 });
  const hidden = new MemoryVolume({ blocks: 8192 });
  const view = new MutableView([
    lunEntry(0, a),
    lunEntry(1, b, { readOnly: o.bReadOnly ?? false }),
  ]);
  const nexus = target.openNexus(identity({ initiatorName: "iqn.agent" }), view);
  const other = target.openNexus(
    identity({ initiatorName: "iqn.other" }),
    new MutableView([lunEntry(0, hidden), lunEntry(1, a)]),
  );
  const xcopy = (list: Buffer, lun = 0) =>
    exec(nexus, CopyCdb.extendedCopy(list.length), list, lun);
  const cscd = (v: Volume, extra = {}) => identificationCscd(v.id, v.blockSize, extra);
  return { target, a, b, hidden, view, nexus, other, xcopy, cscd };
}

function copyAborted(r: ScsiResult) {
  expect(r.status).toBe(ScsiStatus.CHECK_CONDITION);
  const raw = r.sense!;
  const s = decodeFixedSense(raw);
  expect(s.key).toBe(SenseKey.COPY_ABORTED);
  return { ...s, raw, segment: raw.readUInt16BE(10), sd: (raw[15]! & 0x20) !== 0 };
}

describe("EXTENDED COPY (LID1): parameter list checks", () => {
  it("PARAMETER LIST LENGTH 0 is not an error", async () => {
    const { nexus } = setupCopy();
    expectGood(await exec(nexus, CopyCdb.extendedCopy(0)));
  });

  it("refuses lists cut inside a descriptor (libiscsi ParamHdr)", async () => {
    const { a, xcopy, cscd } = setupCopy();
    const list = copyParameterList({
      listId: 1,
      cscds: [cscd(a)],
      segments: [
        blockSegment({ source: 0, destination: 0, blocks: 8, sourceLba: 0, destinationLba: 100 }),
      ],
    });
    for (const cut of [16 + 31, 16 + 32 + 27, 10]) {
      expectSense(
        await xcopy(list.subarray(0, cut)),
        SenseKey.ILLEGAL_REQUEST,
        Asc.PARAMETER_LIST_LENGTH_ERROR,
      );
    }
  });

  it("enforces the descriptor counts and the descriptor list length (libiscsi DescrLimits)", async () => {
    const { a, xcopy, cscd } = setupCopy();
    const seg = blockSegment({
      source: 0,
      destination: 0,
      blocks: 1,
      sourceLba: 0,
      destinationLba: 1,
    });
    expectSense(
      await xcopy(copyParameterList({ cscds: Array(9).fill(cscd(a)), segments: [seg] })),
      SenseKey.ILLEGAL_REQUEST,
      Asc.TOO_MANY_TARGET_DESCRIPTORS,
    );
    expectSense(
      await xcopy(copyParameterList({ cscds: [cscd(a)], segments: Array(65).fill(seg) })),
      SenseKey.ILLEGAL_REQUEST,
      Asc.TOO_MANY_SEGMENT_DESCRIPTORS,
    );
    expectSense(
      await xcopy(
        copyParameterList({ cscds: Array(9).fill(cscd(a)), segments: Array(65).fill(seg) }),
      ),
      SenseKey.ILLEGAL_REQUEST,
      Asc.PARAMETER_LIST_LENGTH_ERROR,
    );
    // The maxima themselves are fine.
    expectGood(
      await xcopy(
        copyParameterList({ cscds: Array(8).fill(cscd(a)), segments: Array(64).fill(seg) }),
      ),
    );
  });

  it("refuses descriptor types it does not implement (libiscsi DescrType)", async () => {
    const { a, xcopy, cscd } = setupCopy();
    const seg = blockSegment({
      source: 0,
      destination: 0,
      blocks: 1,
      sourceLba: 0,
      destinationLba: 1,
    });
    const fc = expectSense(
      await xcopy(copyParameterList({ cscds: [cscd(a, { type: 0xe0 })], segments: [seg] })),
      SenseKey.ILLEGAL_REQUEST,
      Asc.UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE,
    );
    expect(fc.fieldPointer).toEqual({ inCdb: false, byte: 16, bit: 7 });
    const stream = Buffer.alloc(20);
    stream[0] = 0x03;
    stream.writeUInt16BE(16, 2);
    const s = expectSense(
      await xcopy(copyParameterList({ cscds: [cscd(a)], segments: [stream] })),
      SenseKey.ILLEGAL_REQUEST,
      Asc.UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE,
    );
    expect(s.fieldPointer).toEqual({ inCdb: false, byte: 48, bit: 7 });
  });

  it("refuses LIST ID USAGE 01b, inline data and a malformed segment descriptor", async () => {
    const { a, xcopy, cscd } = setupCopy();
    const seg = blockSegment({
      source: 0,
      destination: 0,
      blocks: 1,
      sourceLba: 0,
      destinationLba: 1,
    });
    expectSense(
      await xcopy(copyParameterList({ listIdUsage: 1, cscds: [cscd(a)], segments: [seg] })),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_PARAMETER_LIST,
    );
    expectSense(
      await xcopy(
        copyParameterList({ cscds: [cscd(a)], segments: [seg], inline: Buffer.alloc(4) }),
      ),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INLINE_DATA_LENGTH_EXCEEDED,
    );
    const bad = Buffer.concat([seg.subarray(0, 2), Buffer.from([0, 0x14]), seg.subarray(4, 24)]);
    const s = expectSense(
      await xcopy(copyParameterList({ cscds: [cscd(a)], segments: [bad] })),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_PARAMETER_LIST,
    );
    expect(s.fieldPointer).toEqual({ inCdb: false, byte: 48 + 2 });
  });

  it("ignores the obsolete LU ID TYPE and NUL fields (libiscsi ValidTgtDescr, SPC-4)", async () => {
    const { a, xcopy, cscd } = setupCopy();
    await a.write(0, pattern(4, 0x77));
    const d = cscd(a, { luIdType: 2 });
    d[1]! |= 0x20; // NUL
    expectGood(
      await xcopy(
        copyParameterList({
          cscds: [d],
          segments: [
            blockSegment({
              source: 0,
              destination: 0,
              blocks: 4,
              sourceLba: 0,
              destinationLba: 10,
            }),
          ],
        }),
      ),
    );
    expect(a.peek(10, 4).equals(pattern(4, 0x77))).toBe(true);
  });

  it("parses what it accepts", () => {
    const list = copyParameterList({
      listId: 7,
      listIdUsage: 2,
      cscds: [identificationCscd("vol-1", 4096)],
      segments: [
        blockSegment({
          source: 0,
          destination: 0,
          blocks: 3,
          sourceLba: 2 ** 40,
          destinationLba: 5,
          dc: true,
        }),
      ],
    });
    const parsed = parseCopyParameterList(list);
    expect(parsed.listId).toBe(7);
    expect(parsed.listIdUsage).toBe(2);
    expect(parsed.cscds[0]).toMatchObject({
      offset: 16,
      type: 0xe4,
      peripheralType: 0,
      blockLength: 4096,
      designatorType: 3,
    });
    expect(parsed.segments[0]).toMatchObject({
      offset: 48,
      dc: true,
      blocks: 3,
      sourceLba: 2 ** 40,
      destinationLba: 5,
    });
  });
});

describe("EXTENDED COPY (LID1): copying", () => {
  it("copies blocks within the volume (libiscsi Simple)", async () => {
    const { a, xcopy, cscd } = setupCopy();
    await a.write(0, pattern(2048, 0x41));
    a.calls.length = 0;
    const r = await xcopy(
      copyParameterList({
        listId: 1,
        listIdUsage: 2,
        cscds: [cscd(a)],
        segments: [
          blockSegment({
            source: 0,
            destination: 0,
            blocks: 2048,
            sourceLba: 0,
            destinationLba: 8192 - 2048,
          }),
        ],
      }),
    );
    expectGood(r);
    expect(a.peek(8192 - 2048, 2048).equals(pattern(2048, 0x41))).toBe(true);
    // Through the channel: 1 MiB reads and writes.
    expect(a.calls.map((c) => `${c.op} ${c.blocks}`)).toEqual(["read 2048", "write 2048"]);
  });

  it("copies between two volumes of the view, with different block sizes", async () => {
    const { a, b, xcopy, cscd } = setupCopy({ bBlockSize: 4096 });
    const data = Buffer.alloc(16 * 512);
    for (let i = 0; i < data.length; i++) data[i] = i % 251;
    await a.write(8, data);
    expectGood(
      await xcopy(
        copyParameterList({
          cscds: [cscd(a), cscd(b)],
          // 16 source blocks of 512 bytes = 2 destination blocks of 4096 bytes.
          segments: [
            blockSegment({
              source: 0,
              destination: 1,
              blocks: 16,
              sourceLba: 8,
              destinationLba: 3,
            }),
          ],
        }),
      ),
    );
    expect(b.peek(3, 2).equals(data)).toBe(true);
    // DC=1 counts destination blocks.
    expectGood(
      await xcopy(
        copyParameterList({
          cscds: [cscd(a), cscd(b)],
          segments: [
            blockSegment({
              source: 0,
              destination: 1,
              blocks: 2,
              sourceLba: 8,
              destinationLba: 10,
              dc: true,
            }),
          ],
        }),
      ),
    );
    expect(b.peek(10, 2).equals(data)).toBe(true);
    // 3 source blocks are not whole destination blocks.
    const r = copyAborted(
      await xcopy(
        copyParameterList({
          cscds: [cscd(a), cscd(b)],
          segments: [
            blockSegment({
              source: 0,
              destination: 1,
              blocks: 3,
              sourceLba: 8,
              destinationLba: 10,
            }),
          ],
        }),
      ),
    );
    expect(r.asc).toBe(Asc.UNEXPECTED_INEXACT_SEGMENT);
  });

  it("copies overlapping ranges of one volume as if the source were read first", async () => {
    const { a, xcopy, cscd } = setupCopy();
    const data = Buffer.alloc(4096 * 512);
    for (let i = 0; i < 4096; i++) data.fill(i & 0xff, i * 512, (i + 1) * 512);
    await a.write(0, data);
    expectGood(
      await xcopy(
        copyParameterList({
          cscds: [cscd(a)],
          segments: [
            blockSegment({
              source: 0,
              destination: 0,
              blocks: 4096,
              sourceLba: 0,
              destinationLba: 100,
            }),
          ],
        }),
      ),
    );
    expect(a.peek(100, 4096).equals(data)).toBe(true);
    expectGood(
      await xcopy(
        copyParameterList({
          cscds: [cscd(a)],
          segments: [
            blockSegment({
              source: 0,
              destination: 0,
              blocks: 4096,
              sourceLba: 100,
              destinationLba: 50,
            }),
          ],
        }),
      ),
    );
    expect(a.peek(50, 4096).equals(data)).toBe(true);
  });

  it("never reaches a volume outside the issuing nexus's view", async () => {
    const { a, hidden, xcopy, cscd } = setupCopy();
    await hidden.write(0, pattern(1, 0x66));
    const r = copyAborted(
      await xcopy(
        copyParameterList({
          cscds: [cscd(hidden), cscd(a)],
          segments: [
            blockSegment({ source: 0, destination: 1, blocks: 1, sourceLba: 0, destinationLba: 0 }),
          ],
        }),
      ),
    );
    expect(r.asc).toBe(Asc.UNREACHABLE_COPY_TARGET);
    expect(r.segment).toBe(0);
    expect(r.sd).toBe(false);
    expect(r.fieldPointer?.byte).toBe(16 + 4); // the designator of CSCD descriptor 0
    expect(hidden.calls.filter((c) => c.op === "read")).toEqual([]);
    expect(a.peek(0, 1).equals(pattern(1, 0))).toBe(true);
  });

  it("a CSCD index with no descriptor is an unreachable copy target (libiscsi ValidSegDescr)", async () => {
    const { a, xcopy, cscd } = setupCopy();
    const r = copyAborted(
      await xcopy(
        copyParameterList({
          cscds: [cscd(a)],
          segments: [
            blockSegment({ source: 0, destination: 1, blocks: 1, sourceLba: 0, destinationLba: 0 }),
          ],
        }),
      ),
    );
    expect(r.asc).toBe(Asc.UNREACHABLE_COPY_TARGET);
    expect(r.sd).toBe(true);
    expect(r.fieldPointer?.byte).toBe(6); // DESTINATION CSCD DESCRIPTOR INDEX
  });

  it("a range beyond the destination carries the destination's own sense data (libiscsi ValidSegDescr)", async () => {
    const { a, xcopy, cscd } = setupCopy();
    const seg = blockSegment({
      source: 0,
      destination: 0,
      blocks: 1,
      sourceLba: 0,
      destinationLba: 0,
    });
    const r = copyAborted(
      await xcopy(
        copyParameterList({
          cscds: [cscd(a)],
          segments: [
            seg,
            blockSegment({
              source: 0,
              destination: 0,
              blocks: 2048,
              sourceLba: 0,
              destinationLba: 8191,
            }),
          ],
        }),
      ),
    );
    expect(r.asc).toBe(Asc.NO_ADDITIONAL_SENSE);
    expect(r.segment).toBe(1);
    expect(r.raw[8]).toBe(0); // no source sense data
    expect(r.raw[9]).toBe(18); // destination sense data right after ours
    expect(r.raw[7]).toBe(r.raw.length - 8);
    const dst = decodeFixedSense(r.raw.subarray(18));
    expect([dst.key, dst.asc]).toEqual([SenseKey.ILLEGAL_REQUEST, Asc.LBA_OUT_OF_RANGE]);
    expect(r.fieldPointer?.byte).toBe(20); // DESTINATION BLOCK DEVICE LOGICAL BLOCK ADDRESS
  });

  it("writes through the destination mapping: a read-only mapping refuses", async () => {
    const { a, b, xcopy, cscd } = setupCopy({ bReadOnly: true });
    const r = copyAborted(
      await xcopy(
        copyParameterList({
          cscds: [cscd(a), cscd(b)],
          segments: [
            blockSegment({ source: 0, destination: 1, blocks: 1, sourceLba: 0, destinationLba: 0 }),
          ],
        }),
      ),
    );
    const dst = decodeFixedSense(r.raw.subarray(r.raw[9]!));
    expect([dst.key, dst.asc]).toEqual([SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED]);
    expect(b.calls.filter((c) => c.op === "write")).toEqual([]);
  });

  it("writes through a read-write mapping when the view maps the volume read-only too", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const v = new MemoryVolume({ blocks: 100 });
    const view = new MutableView([lunEntry(0, v, { readOnly: true }), lunEntry(1, v)]);
    const nexus = target.openNexus(identity(), view);
    await v.write(0, pattern(2, 0x31));
    const list = copyParameterList({
      cscds: [identificationCscd(v.id, 512)],
      segments: [
        blockSegment({ source: 0, destination: 0, blocks: 2, sourceLba: 0, destinationLba: 50 }),
      ],
    });
    expectGood(await exec(nexus, CopyCdb.extendedCopy(list.length), list));
    expect(v.peek(50, 2).equals(pattern(2, 0x31))).toBe(true);
  });

  it("a read error aborts with the source's sense and the residual of the segment", async () => {
    const { a, b, xcopy, cscd } = setupCopy();
    await a.write(0, pattern(4096, 1));
    let reads = 0;
    const original = a.read.bind(a);
    a.read = async (lba, blocks) => {
      if (++reads === 2) throw new StorageError(StorageErrorCode.MediumError, "bad tag", lba);
      return original(lba, blocks);
    };
    const r = copyAborted(
      await xcopy(
        copyParameterList({
          cscds: [cscd(a), cscd(b)],
          segments: [
            blockSegment({
              source: 0,
              destination: 1,
              blocks: 4096,
              sourceLba: 0,
              destinationLba: 0,
            }),
          ],
        }),
      ),
    );
    expect(r.valid).toBe(true);
    expect(r.information).toBe(2048); // one 1 MiB chunk of two was written
    const src = decodeFixedSense(r.raw.subarray(r.raw[8]!));
    expect([src.key, src.asc, src.information]).toEqual([
      SenseKey.MEDIUM_ERROR,
      Asc.UNRECOVERED_READ_ERROR,
      2048,
    ]);
  });

  it("respects a RESERVE(6) reservation another nexus holds on a CSCD", async () => {
    const { a, other, xcopy, cscd } = setupCopy();
    expectGood(await exec(other, Cdb.reserve6(), undefined, 1)); // `other` sees `a` at LUN 1
    const r = copyAborted(
      await xcopy(
        copyParameterList({
          cscds: [cscd(a)],
          segments: [
            blockSegment({ source: 0, destination: 0, blocks: 1, sourceLba: 0, destinationLba: 1 }),
          ],
        }),
        1,
      ),
    );
    expect(r.asc).toBe(Asc.COPY_TARGET_DEVICE_NOT_REACHABLE);
  });

  it("copies by reference when both volumes can, and falls back when the destination declines", async () => {
    const calls: string[] = [];
    class RefVolume extends MemoryVolume {
      accept = true;
      constructor(o: MemoryVolumeOptions) {
        super(o);
      }
      async copyFrom(
        source: Volume,
        sourceLba: number,
        lba: number,
        blocks: number,
        options?: WriteOptions,
      ) {
        calls.push(`copyFrom ${sourceLba}->${lba} x${blocks}${options?.fua ? " fua" : ""}`);
        if (!this.accept) return false;
        await this.write(lba, await source.read(sourceLba, blocks), options);
        return true;
      }
    }
    const target = new ScsiTarget(TEST_INFO);
    const src = new RefVolume({ blocks: 100 });
    const dst = new RefVolume({ blocks: 100 });
    const nexus = target.openNexus(
      identity(),
      new MutableView([lunEntry(0, src), lunEntry(1, dst)]),
    );
    await src.write(0, pattern(4, 9));
    const list = copyParameterList({
      cscds: [identificationCscd(src.id, 512), identificationCscd(dst.id, 512)],
      segments: [
        blockSegment({ source: 0, destination: 1, blocks: 4, sourceLba: 0, destinationLba: 20 }),
      ],
    });
    expectGood(await exec(nexus, CopyCdb.extendedCopy(list.length), list));
    expect(calls).toEqual(["copyFrom 0->20 x4"]);
    expect(dst.peek(20, 4).equals(pattern(4, 9))).toBe(true);
    dst.accept = false;
    dst.calls.length = 0;
    expectGood(await exec(nexus, CopyCdb.extendedCopy(list.length), list));
    expect(calls).toEqual(["copyFrom 0->20 x4", "copyFrom 0->20 x4"]);
    expect(dst.calls.map((c) => c.op)).toEqual(["write"]); // declined: read + write instead
  });
});

describe("RECEIVE COPY RESULTS", () => {
  const simpleList = (
    a: Volume,
    o: { listId: number; listIdUsage?: number; destinationLba?: number },
  ) =>
    copyParameterList({
      listId: o.listId,
      listIdUsage: o.listIdUsage ?? 0,
      cscds: [identificationCscd(a.id, a.blockSize)],
      segments: [
        blockSegment({
          source: 0,
          destination: 0,
          blocks: 8,
          sourceLba: 0,
          destinationLba: o.destinationLba ?? 100,
        }),
      ],
    });

  it("COPY STATUS: nothing held is INVALID FIELD IN CDB; a held copy reports, then is discarded (libiscsi CopyStatus)", async () => {
    const { a, nexus, xcopy } = setupCopy();
    const none = expectSense(
      await exec(nexus, CopyCdb.copyStatus(1)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    expect(none.fieldPointer).toEqual({ inCdb: true, byte: 2 });
    expectGood(await xcopy(simpleList(a, { listId: 1 })));
    const r = await exec(nexus, CopyCdb.copyStatus(1));
    expectGood(r);
    const d = r.data!;
    expect(d.readUInt32BE(0)).toBe(8);
    expect(d[4]).toBe(0x01); // completed without errors
    expect(d.readUInt16BE(5)).toBe(1); // segments processed
    expect(d[7]).toBe(0); // bytes
    expect(d.readUInt32BE(8)).toBe(8 * 512);
    expectSense(
      await exec(nexus, CopyCdb.copyStatus(1)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
  });

  it("holds nothing for LIST ID USAGE 10b and 11b, nor for another nexus", async () => {
    const { a, nexus, other, xcopy } = setupCopy();
    expectGood(await xcopy(simpleList(a, { listId: 2, listIdUsage: 2 })));
    expectGood(await xcopy(simpleList(a, { listId: 3, listIdUsage: 3 })));
    expectGood(await xcopy(simpleList(a, { listId: 4 })));
    for (const id of [2, 3]) {
      expectSense(
        await exec(nexus, CopyCdb.copyStatus(id)),
        SenseKey.ILLEGAL_REQUEST,
        Asc.INVALID_FIELD_IN_CDB,
      );
    }
    expectSense(
      await exec(other, CopyCdb.copyStatus(4), undefined, 1),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
  });

  it("FAILED SEGMENT DETAILS returns the sense data of a failed held copy", async () => {
    const { a, nexus, xcopy } = setupCopy();
    const failed = await xcopy(simpleList(a, { listId: 5, destinationLba: 8190 }));
    const status = await exec(nexus, CopyCdb.copyStatus(5));
    expect(status.data![4]).toBe(0x02); // completed with errors
    expect(status.data!.readUInt16BE(5)).toBe(0);
    const r = await exec(nexus, CopyCdb.failedSegmentDetails(5));
    expectGood(r);
    const d = r.data!;
    expect(d[56]).toBe(ScsiStatus.CHECK_CONDITION);
    const length = d.readUInt16BE(58);
    expect(d.subarray(60, 60 + length).equals(failed.sense!)).toBe(true);
    expect(d.readUInt32BE(0)).toBe(d.length - 4);
    // Delivered: nothing is held any more.
    const again = await exec(nexus, CopyCdb.failedSegmentDetails(5));
    expect([...again.data!]).toEqual([0, 0, 0, 0]);
    expectSense(
      await exec(nexus, CopyCdb.copyStatus(5)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
  });

  it("reports a copy in progress, and refuses a second copy with its list identifier", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const v = new HoldingVolume({ blocks: 1024 });
    const nexus = target.openNexus(identity(), new MutableView([lunEntry(0, v)]));
    const list = simpleList(v, { listId: 9 });
    v.hold("write");
    const running = exec(nexus, CopyCdb.extendedCopy(list.length), list);
    await settle();
    const status = await exec(nexus, CopyCdb.copyStatus(9));
    expect(status.data![4]).toBe(0x00); // in progress
    expectSense(
      await exec(nexus, CopyCdb.extendedCopy(list.length), list),
      SenseKey.ILLEGAL_REQUEST,
      Asc.OPERATION_IN_PROGRESS,
    );
    v.stopHolding();
    v.releaseAll();
    expectGood(await running);
    expect((await exec(nexus, CopyCdb.copyStatus(9))).data![4]).toBe(0x01);
  });

  it("OPERATING PARAMETERS reports the limits EXTENDED COPY enforces", async () => {
    const { nexus } = setupCopy();
    const r = await exec(nexus, CopyCdb.operatingParameters());
    expectGood(r);
    const d = r.data!;
    expect(d.readUInt32BE(0)).toBe(d.length - 4);
    expect(d[4]! & 1).toBe(1); // SNLID
    expect(d.readUInt16BE(8)).toBe(8); // MAXIMUM CSCD DESCRIPTOR COUNT
    expect(d.readUInt16BE(10)).toBe(64); // MAXIMUM SEGMENT DESCRIPTOR COUNT
    expect(d.readUInt32BE(12)).toBe(8 * 32 + 64 * 28); // MAXIMUM DESCRIPTOR LIST LENGTH
    expect(d.readUInt32BE(16)).toBe(0xffff * 4096); // MAXIMUM SEGMENT LENGTH
    expect(d.readUInt32BE(20)).toBe(0); // MAXIMUM INLINE DATA LENGTH
    expect(d[43]).toBe(2);
    expect([...d.subarray(44)]).toEqual([0x02, 0xe4]);
  });

  it("refuses the service actions it does not serve", async () => {
    const { nexus } = setupCopy();
    expectSense(
      await exec(nexus, CopyCdb.receiveCopyResults(0x01, 1)),
      SenseKey.ILLEGAL_REQUEST,
      Asc.INVALID_FIELD_IN_CDB,
    );
    const cdb = CopyCdb.extendedCopy(0);
    cdb[1] = 0x10; // POPULATE TOKEN
    expectSense(await exec(nexus, cdb), SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
  });
});

describe("copyAbortedSense", () => {
  it("builds COPY ABORTED with a segment pointer and appended CSCD sense data", () => {
    const src = Buffer.alloc(18, 0xaa);
    const dst = Buffer.alloc(18, 0xbb);
    const s = copyAbortedSense({
      asc: Asc.NO_ADDITIONAL_SENSE,
      segment: 3,
      pointer: { sd: true, byte: 12, bit: 7 },
      residual: 5,
      sourceSense: src,
      destinationSense: dst,
    });
    expect(s.length).toBe(54);
    expect(s[0]).toBe(0xf0); // VALID, current
    expect(s[2]).toBe(SenseKey.COPY_ABORTED);
    expect(s.readUInt32BE(3)).toBe(5);
    expect(s[7]).toBe(46);
    expect([s[8], s[9], s.readUInt16BE(10)]).toEqual([18, 36, 3]);
    expect(s[15]).toBe(0x80 | 0x20 | 0x08 | 7);
    expect(s.readUInt16BE(16)).toBe(12);
    expect(s.subarray(18, 36).equals(src)).toBe(true);
    expect(s.subarray(36).equals(dst)).toBe(true);
  });
});
