/**
 * Decoders for primary (SPC-4) command CDBs. Reserved bits are rejected beforehand by
 * `validateCdbUsage` (see ./cdb.ts).
 */

/** INQUIRY, SPC-4 6.6.1. */
export interface InquiryCdb {
  readonly evpd: boolean;
  readonly pageCode: number;
  readonly allocationLength: number;
}

export function decodeInquiry(cdb: Buffer): InquiryCdb {
  return {
    evpd: (cdb[1]! & 0x01) !== 0,
    pageCode: cdb[2]!,
    allocationLength: cdb.readUInt16BE(3),
  };
}

/** MODE SENSE (6) / (10), SPC-4 6.13 / 6.14. */
export interface ModeSenseCdb {
  /** Disable block descriptors. */
  readonly dbd: boolean;
  /** Long LBA accepted (MODE SENSE (10) only): 16-byte block descriptors. */
  readonly llbaa: boolean;
  /** PC: 0 current, 1 changeable, 2 default, 3 saved. */
  readonly pageControl: number;
  readonly pageCode: number;
  readonly subpageCode: number;
  readonly allocationLength: number;
}

export function decodeModeSense6(cdb: Buffer): ModeSenseCdb {
  return {
    dbd: (cdb[1]! & 0x08) !== 0,
    llbaa: false,
    pageControl: cdb[2]! >>> 6,
    pageCode: cdb[2]! & 0x3f,
    subpageCode: cdb[3]!,
    allocationLength: cdb[4]!,
  };
}

export function decodeModeSense10(cdb: Buffer): ModeSenseCdb {
  return {
    dbd: (cdb[1]! & 0x08) !== 0,
    llbaa: (cdb[1]! & 0x10) !== 0,
    pageControl: cdb[2]! >>> 6,
    pageCode: cdb[2]! & 0x3f,
    subpageCode: cdb[3]!,
    allocationLength: cdb.readUInt16BE(7),
  };
}

/** MODE SELECT (6) / (10), SPC-4 6.11 / 6.12. */
export interface ModeSelectCdb {
  /** Page format: pages follow the SPC-4 mode page format. */
  readonly pf: boolean;
  /** Save pages (not supported). */
  readonly sp: boolean;
  readonly parameterListLength: number;
}

export function decodeModeSelect6(cdb: Buffer): ModeSelectCdb {
  return {
    pf: (cdb[1]! & 0x10) !== 0,
    sp: (cdb[1]! & 0x01) !== 0,
    parameterListLength: cdb[4]!,
  };
}

export function decodeModeSelect10(cdb: Buffer): ModeSelectCdb {
  return {
    pf: (cdb[1]! & 0x10) !== 0,
    sp: (cdb[1]! & 0x01) !== 0,
    parameterListLength: cdb.readUInt16BE(7),
  };
}

/** REPORT LUNS, SPC-4. */
export interface ReportLunsCdb {
  readonly selectReport: number;
  readonly allocationLength: number;
}

export function decodeReportLuns(cdb: Buffer): ReportLunsCdb {
  return { selectReport: cdb[2]!, allocationLength: cdb.readUInt32BE(6) };
}

/** REQUEST SENSE, SPC-4. */
export interface RequestSenseCdb {
  /** Descriptor format sense data requested. */
  readonly desc: boolean;
  readonly allocationLength: number;
}

export function decodeRequestSense(cdb: Buffer): RequestSenseCdb {
  return { desc: (cdb[1]! & 0x01) !== 0, allocationLength: cdb[4]! };
}

/** REPORT SUPPORTED OPERATION CODES, SPC-4 (MAINTENANCE IN, service action 0Ch). */
export interface ReportSupportedOpcodesCdb {
  /** Return command timeouts descriptors. */
  readonly rctd: boolean;
  readonly reportingOptions: number;
  readonly requestedOpcode: number;
  readonly requestedServiceAction: number;
  readonly allocationLength: number;
}

export function decodeReportSupportedOpcodes(cdb: Buffer): ReportSupportedOpcodesCdb {
  return {
    rctd: (cdb[2]! & 0x80) !== 0,
    reportingOptions: cdb[2]! & 0x07,
    requestedOpcode: cdb[3]!,
    requestedServiceAction: cdb.readUInt16BE(4),
    allocationLength: cdb.readUInt32BE(6),
  };
}
