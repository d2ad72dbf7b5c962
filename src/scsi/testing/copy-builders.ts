/**
 * Test fixtures for the atomic, verify and copy commands: CDB builders (built with code, like
 * ./cdb-builders.ts), EXTENDED COPY parameter lists, and a volume whose calls can be held to
 * test interleavings.
 */
import { MaintenanceIn, Opcode, ThirdPartyCopyIn, ThirdPartyCopyOut } from "../constants.js";
import { naaRegisteredExtended } from "../identity.js";
import { MemoryVolume, type MemoryVolumeOptions, type VolumeOp } from "./memory-volume.js";

function lba64(cdb: Buffer, lba: number | bigint, at = 2): void {
  cdb.writeBigUInt64BE(BigInt(lba) & 0xffff_ffff_ffff_ffffn, at);
}

export interface FlagOptions {
  readonly dpo?: boolean;
  readonly fua?: boolean;
  readonly protect?: number;
}

function flags(o: FlagOptions): number {
  return ((o.protect ?? 0) << 5) | (o.dpo ? 0x10 : 0) | (o.fua ? 0x08 : 0);
}

export const CopyCdb = {
  compareAndWrite: (o: { lba: number | bigint; blocks: number } & FlagOptions): Buffer => {
    const cdb = Buffer.alloc(16);
    cdb[0] = Opcode.COMPARE_AND_WRITE;
    cdb[1] = flags(o);
    lba64(cdb, o.lba);
    cdb[13] = o.blocks & 0xff;
    return cdb;
  },
  writeVerify10: (o: { lba: number; blocks: number; bytchk?: number } & FlagOptions): Buffer => {
    const cdb = Buffer.alloc(10);
    cdb[0] = Opcode.WRITE_AND_VERIFY_10;
    cdb[1] = (flags({ ...o, fua: false }) & ~0x08) | ((o.bytchk ?? 0) << 1);
    cdb.writeUInt32BE(o.lba >>> 0, 2);
    cdb.writeUInt16BE(o.blocks, 7);
    return cdb;
  },
  writeVerify12: (o: { lba: number; blocks: number; bytchk?: number } & FlagOptions): Buffer => {
    const cdb = Buffer.alloc(12);
    cdb[0] = Opcode.WRITE_AND_VERIFY_12;
    cdb[1] = flags({ ...o, fua: false }) | ((o.bytchk ?? 0) << 1);
    cdb.writeUInt32BE(o.lba >>> 0, 2);
    cdb.writeUInt32BE(o.blocks >>> 0, 6);
    return cdb;
  },
  writeVerify16: (
    o: { lba: number | bigint; blocks: number; bytchk?: number } & FlagOptions,
  ): Buffer => {
    const cdb = Buffer.alloc(16);
    cdb[0] = Opcode.WRITE_AND_VERIFY_16;
    cdb[1] = flags({ ...o, fua: false }) | ((o.bytchk ?? 0) << 1);
    lba64(cdb, o.lba);
    cdb.writeUInt32BE(o.blocks >>> 0, 10);
    return cdb;
  },
  orWrite16: (o: { lba: number | bigint; blocks: number } & FlagOptions): Buffer => {
    const cdb = Buffer.alloc(16);
    cdb[0] = Opcode.ORWRITE_16;
    cdb[1] = flags(o);
    lba64(cdb, o.lba);
    cdb.writeUInt32BE(o.blocks >>> 0, 10);
    return cdb;
  },
  writeAtomic16: (
    o: { lba: number | bigint; blocks: number; boundary?: number } & FlagOptions,
  ): Buffer => {
    const cdb = Buffer.alloc(16);
    cdb[0] = Opcode.WRITE_ATOMIC_16;
    cdb[1] = flags(o);
    lba64(cdb, o.lba);
    cdb.writeUInt16BE(o.boundary ?? 0, 10);
    cdb.writeUInt16BE(o.blocks, 12);
    return cdb;
  },
  readDefectData10: (
    o: { plist?: boolean; glist?: boolean; format?: number; allocationLength?: number } = {},
  ): Buffer => {
    const cdb = Buffer.alloc(10);
    cdb[0] = Opcode.READ_DEFECT_DATA_10;
    cdb[2] = (o.plist ? 0x10 : 0) | (o.glist ? 0x08 : 0) | (o.format ?? 0);
    cdb.writeUInt16BE(o.allocationLength ?? 512, 7);
    return cdb;
  },
  readDefectData12: (
    o: {
      plist?: boolean;
      glist?: boolean;
      format?: number;
      index?: number;
      allocationLength?: number;
    } = {},
  ): Buffer => {
    const cdb = Buffer.alloc(12);
    cdb[0] = Opcode.READ_DEFECT_DATA_12;
    cdb[1] = (o.plist ? 0x10 : 0) | (o.glist ? 0x08 : 0) | (o.format ?? 0);
    cdb.writeUInt32BE(o.index ?? 0, 2);
    cdb.writeUInt32BE(o.allocationLength ?? 512, 6);
    return cdb;
  },
  preventAllow: (prevent: number): Buffer =>
    Buffer.from([Opcode.PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, prevent & 0x03, 0]),
  reportTmf: (o: { repd?: boolean; allocationLength?: number } = {}): Buffer => {
    const cdb = Buffer.alloc(12);
    cdb[0] = Opcode.MAINTENANCE_IN;
    cdb[1] = MaintenanceIn.REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS;
    cdb[2] = o.repd ? 0x80 : 0;
    cdb.writeUInt32BE(o.allocationLength ?? 64, 6);
    return cdb;
  },
  extendedCopy: (parameterListLength: number): Buffer => {
    const cdb = Buffer.alloc(16);
    cdb[0] = Opcode.THIRD_PARTY_COPY_OUT;
    cdb[1] = ThirdPartyCopyOut.EXTENDED_COPY_LID1;
    cdb.writeUInt32BE(parameterListLength, 10);
    return cdb;
  },
  receiveCopyResults: (serviceAction: number, listId = 0, allocationLength = 1024): Buffer => {
    const cdb = Buffer.alloc(16);
    cdb[0] = Opcode.THIRD_PARTY_COPY_IN;
    cdb[1] = serviceAction;
    cdb[2] = listId;
    cdb.writeUInt32BE(allocationLength, 10);
    return cdb;
  },
  copyStatus: (listId: number, allocationLength = 1024): Buffer =>
    CopyCdb.receiveCopyResults(ThirdPartyCopyIn.RECEIVE_COPY_STATUS_LID1, listId, allocationLength),
  operatingParameters: (allocationLength = 1024): Buffer =>
    CopyCdb.receiveCopyResults(
      ThirdPartyCopyIn.RECEIVE_COPY_OPERATING_PARAMETERS,
      0,
      allocationLength,
    ),
  failedSegmentDetails: (listId: number, allocationLength = 1024): Buffer =>
    CopyCdb.receiveCopyResults(
      ThirdPartyCopyIn.RECEIVE_COPY_FAILED_SEGMENT_DETAILS,
      listId,
      allocationLength,
    ),
};

/** An Identification descriptor CSCD descriptor (E4h) naming a volume by its NAA designator. */
export function identificationCscd(
  volumeId: string,
  blockSize: number,
  o: { type?: number; luIdType?: number; peripheral?: number; designatorType?: number } = {},
): Buffer {
  const d = Buffer.alloc(32);
  d[0] = o.type ?? 0xe4;
  d[1] = ((o.luIdType ?? 0) << 6) | (o.peripheral ?? 0);
  const naa = naaRegisteredExtended(volumeId);
  d[4] = 0x01; // CODE SET binary
  d[5] = o.designatorType ?? 0x03; // ASSOCIATION logical unit, DESIGNATOR TYPE NAA
  d[7] = naa.length;
  naa.copy(d, 8);
  d.writeUIntBE(blockSize, 29, 3);
  return d;
}

/** A block device to block device segment descriptor (02h). */
export function blockSegment(o: {
  source: number;
  destination: number;
  blocks: number;
  sourceLba: number | bigint;
  destinationLba: number | bigint;
  dc?: boolean;
  type?: number;
}): Buffer {
  const d = Buffer.alloc(28);
  d[0] = o.type ?? 0x02;
  d[1] = o.dc ? 0x02 : 0;
  d.writeUInt16BE(0x18, 2);
  d.writeUInt16BE(o.source, 4);
  d.writeUInt16BE(o.destination, 6);
  d.writeUInt16BE(o.blocks, 10);
  d.writeBigUInt64BE(BigInt(o.sourceLba), 12);
  d.writeBigUInt64BE(BigInt(o.destinationLba), 20);
  return d;
}

/** An EXTENDED COPY (LID1) parameter list: header, CSCD descriptors, segment descriptors. */
export function copyParameterList(o: {
  listId?: number;
  listIdUsage?: number;
  cscds: readonly Buffer[];
  segments: readonly Buffer[];
  inline?: Buffer;
}): Buffer {
  const cscds = Buffer.concat(o.cscds);
  const segments = Buffer.concat(o.segments);
  const inline = o.inline ?? Buffer.alloc(0);
  const header = Buffer.alloc(16);
  header[0] = o.listId ?? 0;
  header[1] = (o.listIdUsage ?? 0) << 3;
  header.writeUInt16BE(cscds.length, 2);
  header.writeUInt32BE(segments.length, 8);
  header.writeUInt32BE(inline.length, 12);
  return Buffer.concat([header, cscds, segments, inline]);
}

interface Held {
  readonly op: VolumeOp;
  readonly lba: number | undefined;
  readonly release: () => void;
}

/**
 * A MemoryVolume whose calls can be stopped before they touch the data: `hold(op)` makes every
 * later call of `op` wait until `releaseAll()` (or the returned entry's `release`). `events`
 * records when each call starts and ends, to check interleavings.
 */
export class HoldingVolume extends MemoryVolume {
  readonly held: Held[] = [];
  readonly events: string[] = [];
  private readonly holding = new Set<VolumeOp>();

  constructor(options: MemoryVolumeOptions) {
    super(options);
  }

  hold(op: VolumeOp): void {
    this.holding.add(op);
  }

  stopHolding(): void {
    this.holding.clear();
  }

  releaseAll(): void {
    for (const h of this.held.splice(0)) h.release();
  }

  private async gate(op: VolumeOp, lba: number): Promise<void> {
    this.events.push(`${op} ${lba} start`);
    if (!this.holding.has(op)) return;
    await new Promise<void>((release) => this.held.push({ op, lba, release }));
  }

  override async read(lba: number, blocks: number): Promise<Buffer> {
    await this.gate("read", lba);
    const out = await super.read(lba, blocks);
    this.events.push(`read ${lba} end`);
    return out;
  }

  override async write(
    lba: number,
    data: Buffer,
    options?: Parameters<MemoryVolume["write"]>[2],
  ): Promise<void> {
    await this.gate("write", lba);
    await super.write(lba, data, options);
    this.events.push(`write ${lba} end`);
  }
}

/** Let every pending promise reaction run (several macrotask turns). */
export async function settle(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
}
