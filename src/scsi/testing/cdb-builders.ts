/**
 * CDB builders for tests (fixtures built with code, not hex dumps, like libiscsi's
 * scsi-lowlevel builders). Each returns a CDB of the command's exact length.
 */
import { MaintenanceIn, Opcode, ServiceActionIn16 } from "../constants.js";

export interface RwOptions {
  readonly lba: number | bigint;
  readonly blocks: number;
  readonly fua?: boolean;
  readonly dpo?: boolean;
  /** RDPROTECT / WRPROTECT (3 bits). */
  readonly protect?: number;
  readonly group?: number;
}

function flags(o: RwOptions): number {
  return ((o.protect ?? 0) << 5) | (o.dpo ? 0x10 : 0) | (o.fua ? 0x08 : 0);
}

function rw6(opcode: number, o: RwOptions): Buffer {
  const lba = Number(o.lba);
  return Buffer.from([
    opcode,
    (lba >>> 16) & 0x1f,
    (lba >>> 8) & 0xff,
    lba & 0xff,
    o.blocks & 0xff,
    0,
  ]);
}

function rw10(opcode: number, o: RwOptions): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = opcode;
  cdb[1] = flags(o);
  cdb.writeUInt32BE(Number(BigInt(o.lba) & 0xffffffffn), 2);
  cdb[6] = o.group ?? 0;
  cdb.writeUInt16BE(o.blocks & 0xffff, 7);
  return cdb;
}

function rw12(opcode: number, o: RwOptions): Buffer {
  const cdb = Buffer.alloc(12);
  cdb[0] = opcode;
  cdb[1] = flags(o);
  cdb.writeUInt32BE(Number(BigInt(o.lba) & 0xffffffffn), 2);
  cdb.writeUInt32BE(o.blocks >>> 0, 6);
  cdb[10] = o.group ?? 0;
  return cdb;
}

function rw16(opcode: number, o: RwOptions): Buffer {
  const cdb = Buffer.alloc(16);
  cdb[0] = opcode;
  cdb[1] = flags(o);
  cdb.writeBigUInt64BE(BigInt(o.lba) & 0xffff_ffff_ffff_ffffn, 2);
  cdb.writeUInt32BE(o.blocks >>> 0, 10);
  cdb[14] = o.group ?? 0;
  return cdb;
}

export const Cdb = {
  testUnitReady: (): Buffer => Buffer.from([Opcode.TEST_UNIT_READY, 0, 0, 0, 0, 0]),
  requestSense: (allocationLength = 252, desc = false): Buffer =>
    Buffer.from([Opcode.REQUEST_SENSE, desc ? 1 : 0, 0, 0, allocationLength, 0]),
  inquiry: (o: { evpd?: boolean; page?: number; allocationLength?: number } = {}): Buffer => {
    const cdb = Buffer.from([Opcode.INQUIRY, o.evpd ? 1 : 0, o.page ?? 0, 0, 0, 0]);
    cdb.writeUInt16BE(o.allocationLength ?? 4096, 3);
    return cdb;
  },
  reportLuns: (allocationLength = 4096, selectReport = 0): Buffer => {
    const cdb = Buffer.alloc(12);
    cdb[0] = Opcode.REPORT_LUNS;
    cdb[2] = selectReport;
    cdb.writeUInt32BE(allocationLength, 6);
    return cdb;
  },
  read6: (o: RwOptions): Buffer => rw6(Opcode.READ_6, o),
  write6: (o: RwOptions): Buffer => rw6(Opcode.WRITE_6, o),
  read10: (o: RwOptions): Buffer => rw10(Opcode.READ_10, o),
  write10: (o: RwOptions): Buffer => rw10(Opcode.WRITE_10, o),
  read12: (o: RwOptions): Buffer => rw12(Opcode.READ_12, o),
  write12: (o: RwOptions): Buffer => rw12(Opcode.WRITE_12, o),
  read16: (o: RwOptions): Buffer => rw16(Opcode.READ_16, o),
  write16: (o: RwOptions): Buffer => rw16(Opcode.WRITE_16, o),
  verify10: (o: RwOptions & { bytchk?: number }): Buffer => {
    const cdb = rw10(Opcode.VERIFY_10, { ...o, fua: false });
    cdb[1] = (cdb[1]! & ~0x08) | ((o.bytchk ?? 0) << 1);
    return cdb;
  },
  verify12: (o: RwOptions & { bytchk?: number }): Buffer => {
    const cdb = rw12(Opcode.VERIFY_12, { ...o, fua: false });
    cdb[1] = (cdb[1]! & ~0x08) | ((o.bytchk ?? 0) << 1);
    return cdb;
  },
  verify16: (o: RwOptions & { bytchk?: number }): Buffer => {
    const cdb = rw16(Opcode.VERIFY_16, { ...o, fua: false });
    cdb[1] = (cdb[1]! & ~0x08) | ((o.bytchk ?? 0) << 1);
    return cdb;
  },
  preFetch10: (o: { lba: number | bigint; blocks: number; immed?: boolean }): Buffer => {
    const cdb = rw10(Opcode.PRE_FETCH_10, o);
    cdb[1] = o.immed ? 0x02 : 0;
    return cdb;
  },
  preFetch16: (o: { lba: number | bigint; blocks: number; immed?: boolean }): Buffer => {
    const cdb = rw16(Opcode.PRE_FETCH_16, o);
    cdb[1] = o.immed ? 0x02 : 0;
    return cdb;
  },
  syncCache10: (o: { lba?: number | bigint; blocks?: number; immed?: boolean } = {}): Buffer => {
    const cdb = rw10(Opcode.SYNCHRONIZE_CACHE_10, { lba: o.lba ?? 0, blocks: o.blocks ?? 0 });
    cdb[1] = o.immed ? 0x02 : 0;
    return cdb;
  },
  syncCache16: (o: { lba?: number | bigint; blocks?: number; immed?: boolean } = {}): Buffer => {
    const cdb = rw16(Opcode.SYNCHRONIZE_CACHE_16, { lba: o.lba ?? 0, blocks: o.blocks ?? 0 });
    cdb[1] = o.immed ? 0x02 : 0;
    return cdb;
  },
  writeSame10: (o: {
    lba: number | bigint;
    blocks: number;
    unmap?: boolean;
    anchor?: boolean;
  }): Buffer => {
    const cdb = rw10(Opcode.WRITE_SAME_10, o);
    cdb[1] = (o.unmap ? 0x08 : 0) | (o.anchor ? 0x10 : 0);
    return cdb;
  },
  writeSame16: (o: {
    lba: number | bigint;
    blocks: number;
    unmap?: boolean;
    anchor?: boolean;
    ndob?: boolean;
  }): Buffer => {
    const cdb = rw16(Opcode.WRITE_SAME_16, o);
    cdb[1] = (o.unmap ? 0x08 : 0) | (o.anchor ? 0x10 : 0) | (o.ndob ? 0x01 : 0);
    return cdb;
  },
  unmap: (parameterListLength: number, anchor = false): Buffer => {
    const cdb = Buffer.alloc(10);
    cdb[0] = Opcode.UNMAP;
    cdb[1] = anchor ? 0x01 : 0;
    cdb.writeUInt16BE(parameterListLength, 7);
    return cdb;
  },
  readCapacity10: (o: { lba?: number; pmi?: boolean } = {}): Buffer => {
    const cdb = Buffer.alloc(10);
    cdb[0] = Opcode.READ_CAPACITY_10;
    cdb.writeUInt32BE(o.lba ?? 0, 2);
    cdb[8] = o.pmi ? 1 : 0;
    return cdb;
  },
  readCapacity16: (allocationLength = 32): Buffer => {
    const cdb = Buffer.alloc(16);
    cdb[0] = Opcode.SERVICE_ACTION_IN_16;
    cdb[1] = ServiceActionIn16.READ_CAPACITY_16;
    cdb.writeUInt32BE(allocationLength, 10);
    return cdb;
  },
  getLbaStatus: (lba: number | bigint, allocationLength = 4096): Buffer => {
    const cdb = Buffer.alloc(16);
    cdb[0] = Opcode.SERVICE_ACTION_IN_16;
    cdb[1] = ServiceActionIn16.GET_LBA_STATUS;
    cdb.writeBigUInt64BE(BigInt(lba) & 0xffff_ffff_ffff_ffffn, 2);
    cdb.writeUInt32BE(allocationLength, 10);
    return cdb;
  },
  modeSense6: (
    o: {
      page?: number;
      subpage?: number;
      pc?: number;
      dbd?: boolean;
      allocationLength?: number;
    } = {},
  ): Buffer =>
    Buffer.from([
      Opcode.MODE_SENSE_6,
      o.dbd ? 0x08 : 0,
      ((o.pc ?? 0) << 6) | (o.page ?? 0x3f),
      o.subpage ?? 0,
      o.allocationLength ?? 255,
      0,
    ]),
  modeSense10: (
    o: {
      page?: number;
      subpage?: number;
      pc?: number;
      dbd?: boolean;
      llbaa?: boolean;
      allocationLength?: number;
    } = {},
  ): Buffer => {
    const cdb = Buffer.alloc(10);
    cdb[0] = Opcode.MODE_SENSE_10;
    cdb[1] = (o.dbd ? 0x08 : 0) | (o.llbaa ? 0x10 : 0);
    cdb[2] = ((o.pc ?? 0) << 6) | (o.page ?? 0x3f);
    cdb[3] = o.subpage ?? 0;
    cdb.writeUInt16BE(o.allocationLength ?? 4096, 7);
    return cdb;
  },
  modeSelect6: (parameterListLength: number, o: { pf?: boolean; sp?: boolean } = {}): Buffer =>
    Buffer.from([
      Opcode.MODE_SELECT_6,
      (o.pf === false ? 0 : 0x10) | (o.sp ? 1 : 0),
      0,
      0,
      parameterListLength,
      0,
    ]),
  modeSelect10: (parameterListLength: number, o: { pf?: boolean; sp?: boolean } = {}): Buffer => {
    const cdb = Buffer.alloc(10);
    cdb[0] = Opcode.MODE_SELECT_10;
    cdb[1] = (o.pf === false ? 0 : 0x10) | (o.sp ? 1 : 0);
    cdb.writeUInt16BE(parameterListLength, 7);
    return cdb;
  },
  reserve6: (): Buffer => Buffer.from([Opcode.RESERVE_6, 0, 0, 0, 0, 0]),
  release6: (): Buffer => Buffer.from([Opcode.RELEASE_6, 0, 0, 0, 0, 0]),
  startStopUnit: (
    o: { immed?: boolean; start?: boolean; loej?: boolean; powerCondition?: number } = {},
  ): Buffer =>
    Buffer.from([
      Opcode.START_STOP_UNIT,
      o.immed ? 1 : 0,
      0,
      0,
      ((o.powerCondition ?? 0) << 4) | (o.loej ? 0x02 : 0) | (o.start === false ? 0 : 0x01),
      0,
    ]),
  reportSupportedOpcodes: (
    o: {
      options?: number;
      rctd?: boolean;
      opcode?: number;
      serviceAction?: number;
      allocationLength?: number;
    } = {},
  ): Buffer => {
    const cdb = Buffer.alloc(12);
    cdb[0] = Opcode.MAINTENANCE_IN;
    cdb[1] = MaintenanceIn.REPORT_SUPPORTED_OPERATION_CODES;
    cdb[2] = (o.rctd ? 0x80 : 0) | (o.options ?? 0);
    cdb[3] = o.opcode ?? 0;
    cdb.writeUInt16BE(o.serviceAction ?? 0, 4);
    cdb.writeUInt32BE(o.allocationLength ?? 8192, 6);
    return cdb;
  },
};
