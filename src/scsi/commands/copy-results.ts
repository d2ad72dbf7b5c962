/**
 * The copy manager's limits and results (SPC-4 third-party copy, LID1 commands): the limits
 * every report agrees on, the Third-party Copy VPD page (SPC-4 7.8.17), RECEIVE COPY RESULTS
 * (THIRD-PARTY COPY IN, opcode 84h) and the results held for it.
 *
 * The copy manager is the logical unit that receives the EXTENDED COPY. Results are held per
 * (I_T nexus, logical unit, LIST IDENTIFIER) for commands sent with LIST ID USAGE 00b, and
 * only for commands whose segment processing began (errors detected before are reported with
 * ILLEGAL REQUEST sense and leave nothing behind). Held results go with the I_T nexus (they
 * are kept in a WeakMap keyed by it), are replaced by a new EXTENDED COPY with the same list
 * identifier, and are discarded once everything held has been delivered.
 *
 * RECEIVE COPY RESULTS service actions served:
 *  - 00h COPY STATUS: 12 bytes (AVAILABLE DATA 8, HDD=0 + COPY MANAGER STATUS, SEGMENTS
 *    PROCESSED, TRANSFER COUNT UNITS, TRANSFER COUNT). Status 00h while the copy runs (another
 *    command may ask while an EXTENDED COPY is in progress), 01h when it completed without
 *    error, 02h when it completed with an error. A list identifier with nothing held is
 *    INVALID FIELD IN CDB (pointing at the LIST IDENTIFIER field), as libiscsi's
 *    ReceiveCopyResults.CopyStatus expects before any copy.
 *  - 03h OPERATING PARAMETERS: the limits below (the list identifier is ignored).
 *  - 04h FAILED SEGMENT DETAILS: the status and sense data of a held EXTENDED COPY that ended
 *    in CHECK CONDITION; AVAILABLE DATA 0 when there is none (SPC-3/SPC-4).
 * RECEIVE DATA (01h) is not supported: no segment type that holds data is implemented.
 */
import { Opcode, ScsiStatus, ThirdPartyCopyIn, ThirdPartyCopyOut } from "../constants.js";
import type { LunHandler, NexusContext } from "../context.js";
import { invalidCdbField } from "../sense.js";
import { dataIn } from "./common.js";

/**
 * The copy manager's limits, reported identically by RECEIVE COPY OPERATING PARAMETERS and the
 * Third-party Copy VPD page, and enforced by EXTENDED COPY.
 *
 * Descriptor counts: VMware and sg_xcopy send two CSCD descriptors (source, destination) and
 * one segment per command; 8 CSCDs and 64 segments leave room for copies between several
 * volumes. MAXIMUM DESCRIPTOR LIST LENGTH is exactly what those fill (8 x 32 + 64 x 28 bytes),
 * so that a list of more descriptors than the counts allow is too long as well.
 */
export const CopyLimits = {
  MAX_CSCD_DESCRIPTORS: 8,
  MAX_SEGMENT_DESCRIPTORS: 64,
  /** Bytes of CSCD descriptors plus segment descriptors. */
  MAX_DESCRIPTOR_LIST_LENGTH: 8 * 32 + 64 * 28,
  /**
   * A block-to-block segment names at most FFFFh blocks (a 16-bit field): 256 MiB - 4 KiB on
   * 4 KiB LUNs. Every such segment is accepted, so this is also the MAXIMUM SEGMENT LENGTH.
   */
  MAX_SEGMENT_LENGTH: 0xffff * 4096,
  /** No segment type that carries inline or embedded data is supported. */
  MAX_INLINE_DATA_LENGTH: 0,
  /** No segment type that holds data for RECEIVE DATA is supported. */
  HELD_DATA_LIMIT: 0,
  /** EXTENDED COPY commands one copy manager (logical unit) processes at once. */
  TOTAL_CONCURRENT_COPIES: 64,
  /** Of those, commands with a list identifier (LIST ID USAGE 00b or 10b). */
  MAX_IDENTIFIED_CONCURRENT_COPIES: 64,
  /** Block device to block device segment descriptor (type 02h). */
  SEGMENT_BLOCK_TO_BLOCK: 0x02,
  /** Identification descriptor CSCD descriptor (type E4h). */
  CSCD_IDENTIFICATION: 0xe4,
} as const;

/** Descriptor type codes we implement, as IMPLEMENTED DESCRIPTOR LIST reports them. */
const IMPLEMENTED_DESCRIPTORS = [CopyLimits.SEGMENT_BLOCK_TO_BLOCK, CopyLimits.CSCD_IDENTIFICATION];

/** COPY MANAGER STATUS values (RECEIVE COPY STATUS (LID1)). */
export const CopyManagerStatus = {
  IN_PROGRESS: 0x00,
  COMPLETED: 0x01,
  COMPLETED_WITH_ERRORS: 0x02,
} as const;

/** What is held for one EXTENDED COPY, updated while it runs. */
export interface HeldCopy {
  status: number;
  segmentsProcessed: number;
  /** Bytes written to destination CSCDs. */
  bytesWritten: number;
  /** For a command that ended in CHECK CONDITION: its sense data (FAILED SEGMENT DETAILS). */
  sense?: Buffer;
  statusDelivered: boolean;
  detailsDelivered: boolean;
}

/** Per I_T nexus: volume id → list identifier → held results. */
const held = new WeakMap<NexusContext, Map<string, Map<number, HeldCopy>>>();

function heldFor(nexus: NexusContext, volumeId: string): Map<number, HeldCopy> {
  let byVolume = held.get(nexus);
  if (!byVolume) {
    byVolume = new Map();
    held.set(nexus, byVolume);
  }
  let byList = byVolume.get(volumeId);
  if (!byList) {
    byList = new Map();
    byVolume.set(volumeId, byList);
  }
  return byList;
}

/** Start holding results for an EXTENDED COPY (replacing anything held for `listId`). */
export function holdCopy(nexus: NexusContext, volumeId: string, listId: number): HeldCopy {
  const entry: HeldCopy = {
    status: CopyManagerStatus.IN_PROGRESS,
    segmentsProcessed: 0,
    bytesWritten: 0,
    statusDelivered: false,
    detailsDelivered: false,
  };
  heldFor(nexus, volumeId).set(listId, entry);
  return entry;
}

/** The results held for `listId`, if any (for tests and for RECEIVE COPY RESULTS). */
export function heldCopy(
  nexus: NexusContext,
  volumeId: string,
  listId: number,
): HeldCopy | undefined {
  return held.get(nexus)?.get(volumeId)?.get(listId);
}

function discardIfDelivered(nexus: NexusContext, volumeId: string, listId: number): void {
  const byList = held.get(nexus)?.get(volumeId);
  const entry = byList?.get(listId);
  if (!byList || !entry || entry.status === CopyManagerStatus.IN_PROGRESS) return;
  if (entry.statusDelivered && (entry.detailsDelivered || entry.sense === undefined)) {
    byList.delete(listId);
  }
}

/** RECEIVE COPY RESULTS CDB fields, SPC-4 (LID1 service actions). */
export interface ReceiveCopyResultsCdb {
  readonly serviceAction: number;
  readonly listId: number;
  readonly allocationLength: number;
}

export function decodeReceiveCopyResults(cdb: Buffer): ReceiveCopyResultsCdb {
  return {
    serviceAction: cdb[1]! & 0x1f,
    listId: cdb[2]!,
    allocationLength: cdb.readUInt32BE(10),
  };
}

const LIST_ID_BYTE = 2;

/** RECEIVE COPY STATUS (LID1): 00h. */
export const receiveCopyStatus: LunHandler = (cmd, lu) => {
  const d = decodeReceiveCopyResults(cmd.cdb);
  const entry = heldCopy(lu.nexus, lu.entry.volumeId, d.listId);
  if (!entry) throw invalidCdbField(LIST_ID_BYTE);
  const { units, count } = transferCount(entry.bytesWritten);
  const out = Buffer.alloc(12);
  out.writeUInt32BE(8, 0); // AVAILABLE DATA
  out[4] = entry.status; // HDD=0, COPY MANAGER STATUS
  out.writeUInt16BE(Math.min(entry.segmentsProcessed, 0xffff), 5);
  out[7] = units;
  out.writeUInt32BE(count, 8);
  if (d.allocationLength >= out.length && entry.status !== CopyManagerStatus.IN_PROGRESS) {
    entry.statusDelivered = true;
    discardIfDelivered(lu.nexus, lu.entry.volumeId, d.listId);
  }
  return dataIn(out, d.allocationLength);
};

/**
 * TRANSFER COUNT UNITS and TRANSFER COUNT: the smallest power-of-1024 unit (00h bytes, 01h
 * KiB, 02h MiB, ...) in which the count fits 32 bits, rounded down.
 */
export function transferCount(bytes: number): { units: number; count: number } {
  let units = 0;
  let count = bytes;
  while (count > 0xffffffff) {
    count = Math.floor(count / 1024);
    units++;
  }
  return { units, count };
}

/** RECEIVE COPY OPERATING PARAMETERS: 03h. */
export const receiveCopyOperatingParameters: LunHandler = (cmd) => {
  const d = decodeReceiveCopyResults(cmd.cdb);
  const out = Buffer.alloc(44 + IMPLEMENTED_DESCRIPTORS.length);
  out.writeUInt32BE(out.length - 4, 0); // AVAILABLE DATA
  out[4] = 0x01; // SNLID: LIST ID USAGE 11b (no list identifier) is supported
  out.writeUInt16BE(CopyLimits.MAX_CSCD_DESCRIPTORS, 8);
  out.writeUInt16BE(CopyLimits.MAX_SEGMENT_DESCRIPTORS, 10);
  out.writeUInt32BE(CopyLimits.MAX_DESCRIPTOR_LIST_LENGTH, 12);
  out.writeUInt32BE(CopyLimits.MAX_SEGMENT_LENGTH, 16);
  out.writeUInt32BE(CopyLimits.MAX_INLINE_DATA_LENGTH, 20);
  out.writeUInt32BE(CopyLimits.HELD_DATA_LIMIT, 24);
  out.writeUInt32BE(0, 28); // MAXIMUM STREAM DEVICE TRANSFER SIZE: no stream devices
  out.writeUInt16BE(CopyLimits.TOTAL_CONCURRENT_COPIES, 34);
  out[36] = CopyLimits.MAX_IDENTIFIED_CONCURRENT_COPIES; // MAXIMUM CONCURRENT COPIES
  out[37] = 0; // DATA SEGMENT GRANULARITY (log2): any block multiple
  out[38] = 0; // INLINE DATA GRANULARITY (log2)
  out[39] = 0; // HELD DATA GRANULARITY (log2)
  out[43] = IMPLEMENTED_DESCRIPTORS.length; // IMPLEMENTED DESCRIPTOR LIST LENGTH
  Buffer.from(IMPLEMENTED_DESCRIPTORS).copy(out, 44);
  return dataIn(out, d.allocationLength);
};

/** RECEIVE COPY FAILED SEGMENT DETAILS: 04h. */
export const receiveCopyFailedSegmentDetails: LunHandler = (cmd, lu) => {
  const d = decodeReceiveCopyResults(cmd.cdb);
  const entry = heldCopy(lu.nexus, lu.entry.volumeId, d.listId);
  const sense = entry && entry.status !== CopyManagerStatus.IN_PROGRESS ? entry.sense : undefined;
  if (!entry || !sense) return dataIn(Buffer.alloc(4), d.allocationLength);
  const out = Buffer.alloc(60 + sense.length);
  out.writeUInt32BE(out.length - 4, 0); // AVAILABLE DATA
  out[56] = ScsiStatus.CHECK_CONDITION; // COPY COMMAND STATUS
  out.writeUInt16BE(sense.length, 58); // SENSE DATA LENGTH
  sense.copy(out, 60);
  // Discarded once delivered in full, or when asked with ALLOCATION LENGTH 0 (SPC-4).
  if (d.allocationLength === 0 || d.allocationLength >= out.length) {
    entry.detailsDelivered = true;
    discardIfDelivered(lu.nexus, lu.entry.volumeId, d.listId);
  }
  return dataIn(out, d.allocationLength);
};

/**
 * Third-party Copy VPD page payload, SPC-4 7.8.17: the third-party copy descriptors a copy
 * manager supporting EXTENDED COPY (LID1) reports. Each descriptor is DESCRIPTOR TYPE (2
 * bytes), DESCRIPTOR LENGTH (2 bytes, what follows) and a body padded to a multiple of 4.
 */
export function thirdPartyCopyPage(): Buffer {
  return Buffer.concat([
    supportedCommandsDescriptor(),
    parameterDataDescriptor(),
    supportedDescriptorsDescriptor(),
    supportedCscdIdsDescriptor(),
    generalCopyOperationsDescriptor(),
  ]);
}

/** One third-party copy descriptor: header, then `body` padded to a multiple of 4 bytes. */
function tpcDescriptor(type: number, body: Buffer): Buffer {
  const padded = (body.length + 3) & ~3;
  const out = Buffer.alloc(4 + padded);
  out.writeUInt16BE(type, 0);
  out.writeUInt16BE(padded, 2);
  body.copy(out, 4);
  return out;
}

/**
 * Supported Commands (0001h): COMMANDS SUPPORTED LIST LENGTH, then per operation code the
 * OPERATION CODE, SERVICE ACTIONS LIST LENGTH and the service actions.
 */
function supportedCommandsDescriptor(): Buffer {
  const commands = [
    [Opcode.THIRD_PARTY_COPY_OUT, [ThirdPartyCopyOut.EXTENDED_COPY_LID1]],
    [
      Opcode.THIRD_PARTY_COPY_IN,
      [
        ThirdPartyCopyIn.RECEIVE_COPY_STATUS_LID1,
        ThirdPartyCopyIn.RECEIVE_COPY_OPERATING_PARAMETERS,
        ThirdPartyCopyIn.RECEIVE_COPY_FAILED_SEGMENT_DETAILS,
      ],
    ],
  ] as const;
  const list: number[] = [];
  for (const [opcode, actions] of commands) list.push(opcode, actions.length, ...actions);
  return tpcDescriptor(0x0001, Buffer.from([list.length, ...list]));
}

/** Parameter Data (0004h): the descriptor counts and lengths (28 bytes of body). */
function parameterDataDescriptor(): Buffer {
  const body = Buffer.alloc(0x1c);
  // Bytes 4-7 of the descriptor (0-3 here) are reserved.
  body.writeUInt16BE(CopyLimits.MAX_CSCD_DESCRIPTORS, 4);
  body.writeUInt16BE(CopyLimits.MAX_SEGMENT_DESCRIPTORS, 6);
  body.writeUInt32BE(CopyLimits.MAX_DESCRIPTOR_LIST_LENGTH, 8);
  body.writeUInt32BE(CopyLimits.MAX_INLINE_DATA_LENGTH, 12);
  return tpcDescriptor(0x0004, body);
}

/** Supported Descriptors (0008h): the segment and CSCD descriptor type codes implemented. */
function supportedDescriptorsDescriptor(): Buffer {
  return tpcDescriptor(
    0x0008,
    Buffer.from([IMPLEMENTED_DESCRIPTORS.length, ...IMPLEMENTED_DESCRIPTORS]),
  );
}

/** Supported CSCD Descriptor IDs (000Ch): none (no CSCD descriptor ID is implemented). */
function supportedCscdIdsDescriptor(): Buffer {
  return tpcDescriptor(0x000c, Buffer.alloc(2));
}

/** General Copy Operations (8001h): concurrency, segment length and granularities. */
function generalCopyOperationsDescriptor(): Buffer {
  const body = Buffer.alloc(0x20);
  body.writeUInt32BE(CopyLimits.TOTAL_CONCURRENT_COPIES, 0);
  body.writeUInt32BE(CopyLimits.MAX_IDENTIFIED_CONCURRENT_COPIES, 4);
  body.writeUInt32BE(CopyLimits.MAX_SEGMENT_LENGTH, 8);
  body[12] = 0; // DATA SEGMENT GRANULARITY (log2)
  body[13] = 0; // INLINE DATA GRANULARITY (log2)
  return tpcDescriptor(0x8001, body);
}
