/**
 * EXTENDED COPY (LID1), SPC-4 (THIRD-PARTY COPY OUT, opcode 83h, service action 00h): the
 * logical unit that receives it (the copy manager) copies blocks between logical units the
 * issuing initiator can address, without the data crossing the network.
 *
 * Scope and safety: a CSCD (copy source or copy destination) is named by an Identification
 * descriptor CSCD descriptor (E4h) carrying the NAA designator VPD page 83h reports. It is
 * resolved against the issuing I_T nexus's LUN view only, so EXTENDED COPY reaches exactly the
 * volumes the agent has a mapping for, and reads and writes each of them through that
 * mapping's channel (its read-only guard and its counters), as if the agent had sent READ and
 * WRITE itself. Reservations held on a CSCD by another I_T nexus refuse the access. When both
 * volumes can copy by reference (`Volume.copyFrom`, the pool), no data moves at all; otherwise
 * the copy manager reads and writes 1 MiB at a time. Every access goes through the units'
 * gates (./io-gate.ts), so a COMPARE AND WRITE on a copied range is never split by a copy.
 *
 * Supported descriptors: CSCD descriptor E4h for block devices (peripheral device type 00h),
 * segment descriptor 02h (block device to block device). The parameter list is checked whole
 * before any data moves ("errors detected before processing segment descriptors": ILLEGAL
 * REQUEST sense, nothing held):
 *  1. PARAMETER LIST LENGTH 0: GOOD, nothing done (SPC-4: not an error);
 *  2. a list shorter than its 16-byte header, or than the header says (descriptor lists +
 *     inline data), or descriptor lists longer than MAXIMUM DESCRIPTOR LIST LENGTH: PARAMETER
 *     LIST LENGTH ERROR (libiscsi ExtendedCopy.ParamHdr, DescrLimits);
 *  3. LIST ID USAGE 01b (reserved): INVALID FIELD IN PARAMETER LIST;
 *  4. inline data: INLINE DATA LENGTH EXCEEDED (the maximum is 0);
 *  5. more CSCD / segment descriptors than the maxima: TOO MANY TARGET / SEGMENT DESCRIPTORS;
 *  6. a CSCD or segment descriptor type we do not implement: UNSUPPORTED TARGET / SEGMENT
 *     DESCRIPTOR TYPE CODE (libiscsi DescrType); a malformed descriptor: INVALID FIELD IN
 *     PARAMETER LIST with a field pointer;
 *  7. a list identifier still in use by a copy of this I_T nexus on this unit: OPERATION IN
 *     PROGRESS; more concurrent copies than reported: INSUFFICIENT RESOURCES.
 * The LU ID TYPE and NUL fields of the CSCD descriptor are ignored, as SPC-4 makes them
 * obsolete (libiscsi ExtendedCopy.ValidTgtDescr expects a reserved LU ID TYPE to be ignored by
 * an SPC-4 device), and so are PRIORITY, STR and the RELATIVE INITIATOR PORT IDENTIFIER.
 *
 * Errors found while processing segment descriptors end the command with COPY ABORTED, built
 * as SPC-2 7.2.3 and SPC-4 describe for "errors detected during processing of segment
 * descriptors": the COMMAND-SPECIFIC INFORMATION field carries the number of the segment being
 * processed (bytes 2-3) and the offsets of any CSCD sense data appended to the sense data
 * (byte 0 for the source, byte 1 for the destination); the SENSE KEY SPECIFIC field is a segment
 * pointer to the field in error (SD=1: relative to that segment descriptor); INFORMATION holds
 * the residual (destination blocks of the segment not written) once part of the segment was
 * written. ASC (our choices where the standard leaves it open are marked *):
 *  - a CSCD index with no descriptor, or a designator no LUN of the view has: UNREACHABLE COPY
 *    TARGET (libiscsi ExtendedCopy.ValidSegDescr);
 *  - a CSCD that is not a block device: INCORRECT COPY TARGET DEVICE TYPE;
 *  - a CSCD whose reservation refuses this I_T nexus: COPY TARGET DEVICE NOT REACHABLE (*);
 *  - a DISK BLOCK LENGTH that is not the logical unit's: INVALID FIELD IN PARAMETER LIST (*);
 *  - a segment whose byte count is not whole blocks on both sides: UNEXPECTED INEXACT SEGMENT;
 *  - what the CSCD itself refused (range beyond its capacity, write protection, a medium or
 *    write failure): NO ADDITIONAL SENSE INFORMATION (*), with the CSCD's own sense data (as
 *    its READ or WRITE would have returned it) appended, so the cause is not lost (libiscsi
 *    ValidSegDescr, beyond EOL, accepts this ASC).
 *
 * Results are held for RECEIVE COPY RESULTS as ./copy-results.ts describes.
 */
import { Asc } from "../asc.js";
import { readUInt64 } from "../cdb.js";
import { ScsiStatus, SenseKey } from "../constants.js";
import type { LunContext, LunHandler, NexusContext } from "../context.js";
import { naaRegisteredExtended } from "../identity.js";
import { conflictsWithPersistentReservation } from "../pr/access.js";
import { prNexusOf } from "../pr/state.js";
import {
  CheckCondition,
  checkCondition,
  encodeFixedSense,
  invalidParameterField,
  parameterListLengthError,
  type SenseSpec,
} from "../sense.js";
import { senseForFailure } from "../sense-map.js";
import type { LunEntry, ScsiCommand, ScsiResult } from "../types.js";
import type { LogicalUnitState } from "../unit-state.js";
import { goodWithDataOut, isWriteProtected, requireDataOut } from "./common.js";
import { CopyLimits, CopyManagerStatus, type HeldCopy, holdCopy } from "./copy-results.js";
import { type BlockRange, blockRange, gateOf, type UnitGate } from "./io-gate.js";

/** EXTENDED COPY (LID1) CDB: PARAMETER LIST LENGTH, bytes 10-13. */
export function decodeExtendedCopy(cdb: Buffer): { readonly parameterListLength: number } {
  return { parameterListLength: cdb.readUInt32BE(10) };
}

/** LIST ID USAGE field of the parameter list header (byte 1, bits 4-3). */
export const ListIdUsage = {
  /** Hold results for RECEIVE COPY RESULTS; the list identifier is unique. */
  HOLD: 0b00,
  RESERVED: 0b01,
  /** Do not hold results; the list identifier is unique. */
  DISCARD: 0b10,
  /** No list identifier (the field is ignored), nothing held. */
  NONE: 0b11,
} as const;

const HEADER_LENGTH = 16;
const CSCD_DESCRIPTOR_LENGTH = 32;
/** IPv6 (EAh) and IP Copy Service (EBh) CSCD descriptors are 64 bytes long. */
const LONG_CSCD_TYPES: ReadonlySet<number> = new Set([0xea, 0xeb]);
/** DESCRIPTOR LENGTH of a block device to block device segment descriptor. */
const BLOCK_SEGMENT_LENGTH = 0x18;
/** Designation descriptor of an E4h CSCD descriptor: bytes 4-23, designator at most 16 bytes. */
const MAX_DESIGNATOR_LENGTH = 16;
const DESIGNATOR_TYPE_NAA = 0x3;
const CODE_SET_BINARY = 0x1;
const ASSOCIATION_LOGICAL_UNIT = 0x0;
const PERIPHERAL_BLOCK_DEVICE = 0x00;

/** One CSCD descriptor of the parameter list (E4h fields decoded; others just located). */
export interface CscdDescriptor {
  /** Byte offset of the descriptor in the parameter list. */
  readonly offset: number;
  readonly type: number;
  readonly peripheralType: number;
  readonly codeSet: number;
  readonly association: number;
  readonly designatorType: number;
  readonly designator: Buffer;
  /** DISK BLOCK LENGTH of the block device type specific parameters. */
  readonly blockLength: number;
}

/** A block device to block device segment descriptor (02h). */
export interface BlockSegment {
  /** Byte offset of the descriptor in the parameter list. */
  readonly offset: number;
  readonly type: number;
  /** DC: NUMBER OF BLOCKS counts destination blocks (else source blocks). */
  readonly dc: boolean;
  readonly source: number;
  readonly destination: number;
  readonly blocks: number;
  readonly sourceLba: number;
  readonly destinationLba: number;
}

export interface CopyParameterList {
  readonly listId: number;
  readonly listIdUsage: number;
  readonly cscds: readonly CscdDescriptor[];
  readonly segments: readonly BlockSegment[];
}

/**
 * Parse and check an EXTENDED COPY (LID1) parameter list (steps 2 to 6 of the module comment).
 * Throws `CheckCondition` (ILLEGAL REQUEST) for the first error found.
 */
export function parseCopyParameterList(list: Buffer): CopyParameterList {
  if (list.length < HEADER_LENGTH) throw parameterListLengthError();
  const listIdUsage = (list[1]! >>> 3) & 0x03;
  const cscdLength = list.readUInt16BE(2);
  const segmentLength = list.readUInt32BE(8);
  const inlineLength = list.readUInt32BE(12);
  if (cscdLength + segmentLength > CopyLimits.MAX_DESCRIPTOR_LIST_LENGTH) {
    throw parameterListLengthError();
  }
  if (HEADER_LENGTH + cscdLength + segmentLength + inlineLength > list.length) {
    throw parameterListLengthError();
  }
  if (listIdUsage === ListIdUsage.RESERVED) throw invalidParameterField(1, 4);
  if (inlineLength > CopyLimits.MAX_INLINE_DATA_LENGTH) {
    throw checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.INLINE_DATA_LENGTH_EXCEEDED, {
      fieldPointer: { inCdb: false, byte: 12 },
    });
  }

  const cscdEnd = HEADER_LENGTH + cscdLength;
  const cscdOffsets: number[] = [];
  for (let at = HEADER_LENGTH; at < cscdEnd; ) {
    const length = LONG_CSCD_TYPES.has(list[at]!) ? 64 : CSCD_DESCRIPTOR_LENGTH;
    if (at + length > cscdEnd) throw invalidParameterField(2);
    cscdOffsets.push(at);
    at += length;
  }
  const segmentEnd = cscdEnd + segmentLength;
  const segmentOffsets: number[] = [];
  for (let at = cscdEnd; at < segmentEnd; ) {
    if (at + 4 > segmentEnd) throw invalidParameterField(8);
    const length = 4 + list.readUInt16BE(at + 2);
    if (at + length > segmentEnd) throw invalidParameterField(at + 2);
    segmentOffsets.push(at);
    at += length;
  }
  if (cscdOffsets.length > CopyLimits.MAX_CSCD_DESCRIPTORS) {
    throw checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.TOO_MANY_TARGET_DESCRIPTORS, {
      fieldPointer: { inCdb: false, byte: 2 },
    });
  }
  if (segmentOffsets.length > CopyLimits.MAX_SEGMENT_DESCRIPTORS) {
    throw checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.TOO_MANY_SEGMENT_DESCRIPTORS, {
      fieldPointer: { inCdb: false, byte: 8 },
    });
  }
  return {
    listId: list[0]!,
    listIdUsage,
    cscds: cscdOffsets.map((at) => parseCscd(list, at)),
    segments: segmentOffsets.map((at) => parseSegment(list, at)),
  };
}

function parseCscd(list: Buffer, at: number): CscdDescriptor {
  const type = list[at]!;
  if (type !== CopyLimits.CSCD_IDENTIFICATION) {
    throw checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE, {
      fieldPointer: { inCdb: false, byte: at, bit: 7 },
    });
  }
  // Byte 1: LU ID TYPE (obsolete, ignored), NUL (obsolete, ignored), PERIPHERAL DEVICE TYPE.
  // Bytes 4-23: designation descriptor (the VPD 83h format, SPC-4 7.8.6); bytes 28-31: device type
  // specific parameters (block devices: PAD, DISK BLOCK LENGTH).
  const designatorLength = list[at + 7]!;
  if (designatorLength > MAX_DESIGNATOR_LENGTH) throw invalidParameterField(at + 7);
  return {
    offset: at,
    type,
    peripheralType: list[at + 1]! & 0x1f,
    codeSet: list[at + 4]! & 0x0f,
    association: (list[at + 5]! >>> 4) & 0x03,
    designatorType: list[at + 5]! & 0x0f,
    designator: list.subarray(at + 8, at + 8 + designatorLength),
    blockLength: list.readUIntBE(at + 29, 3),
  };
}

function parseSegment(list: Buffer, at: number): BlockSegment {
  const type = list[at]!;
  if (type !== CopyLimits.SEGMENT_BLOCK_TO_BLOCK) {
    throw checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE, {
      fieldPointer: { inCdb: false, byte: at, bit: 7 },
    });
  }
  if (list.readUInt16BE(at + 2) !== BLOCK_SEGMENT_LENGTH) throw invalidParameterField(at + 2);
  return {
    offset: at,
    type,
    dc: (list[at + 1]! & 0x02) !== 0,
    source: list.readUInt16BE(at + 4),
    destination: list.readUInt16BE(at + 6),
    blocks: list.readUInt16BE(at + 10),
    sourceLba: readUInt64(list, at + 12),
    destinationLba: readUInt64(list, at + 20),
  };
}

/** Bytes of a segment descriptor that COPY ABORTED field pointers name. */
const SegmentField = {
  SOURCE_INDEX: 4,
  DESTINATION_INDEX: 6,
  BLOCKS: 10,
  SOURCE_LBA: 12,
  DESTINATION_LBA: 20,
} as const;

/** Copy manager bookkeeping of one logical unit: copies running, list identifiers in use. */
interface CopyManager {
  running: number;
  identified: number;
  readonly listIds: Map<NexusContext, Set<number>>;
}

const managers = new WeakMap<LogicalUnitState, CopyManager>();

function managerOf(unit: LogicalUnitState): CopyManager {
  let m = managers.get(unit);
  if (!m) {
    m = { running: 0, identified: 0, listIds: new Map() };
    managers.set(unit, m);
  }
  return m;
}

export const extendedCopy: LunHandler = (cmd, lu) => {
  const length = decodeExtendedCopy(cmd.cdb).parameterListLength;
  if (length === 0) return goodWithDataOut(0);
  const data = requireDataOut(cmd, length);
  let list: CopyParameterList;
  try {
    list = parseCopyParameterList(data);
  } catch (err) {
    if (err instanceof CheckCondition) throw new CheckCondition(err.sense, length);
    throw err;
  }
  const manager = managerOf(lu.unit);
  const identified = list.listIdUsage !== ListIdUsage.NONE;
  let ids = manager.listIds.get(lu.nexus);
  if (identified && ids?.has(list.listId)) {
    throw new CheckCondition(
      { key: SenseKey.ILLEGAL_REQUEST, asc: Asc.OPERATION_IN_PROGRESS },
      length,
    );
  }
  if (
    manager.running >= CopyLimits.TOTAL_CONCURRENT_COPIES ||
    (identified && manager.identified >= CopyLimits.MAX_IDENTIFIED_CONCURRENT_COPIES)
  ) {
    throw new CheckCondition(
      { key: SenseKey.ILLEGAL_REQUEST, asc: Asc.INSUFFICIENT_RESOURCES },
      length,
    );
  }
  manager.running++;
  if (identified) {
    manager.identified++;
    if (!ids) {
      ids = new Set();
      manager.listIds.set(lu.nexus, ids);
    }
    ids.add(list.listId);
  }
  const held =
    list.listIdUsage === ListIdUsage.HOLD
      ? holdCopy(lu.nexus, lu.entry.volumeId, list.listId)
      : undefined;
  return runCopy(cmd, lu, list, length, held).finally(() => {
    manager.running--;
    if (identified) {
      manager.identified--;
      const set = manager.listIds.get(lu.nexus);
      set?.delete(list.listId);
      if (set?.size === 0) manager.listIds.delete(lu.nexus);
    }
  });
};

/** Progress of one EXTENDED COPY (the held results when they are held). */
type Progress = Pick<HeldCopy, "segmentsProcessed" | "bytesWritten">;

/** A segment could not be processed: the command ends with this COPY ABORTED sense data. */
class CopyAborted extends Error {
  override readonly name = "CopyAborted";
  constructor(readonly sense: Buffer) {
    super("EXTENDED COPY aborted");
  }
}

async function runCopy(
  cmd: ScsiCommand,
  lu: LunContext,
  list: CopyParameterList,
  dataOutLength: number,
  held: HeldCopy | undefined,
): Promise<ScsiResult> {
  const progress: Progress = held ?? { segmentsProcessed: 0, bytesWritten: 0 };
  const resolved = new Map<string, Cscd>();
  try {
    for (const [index, segment] of list.segments.entries()) {
      await copySegment(cmd, lu, list, segment, index, resolved, progress);
      progress.segmentsProcessed++;
    }
    if (held) held.status = CopyManagerStatus.COMPLETED;
    return goodWithDataOut(dataOutLength);
  } catch (err) {
    const sense =
      err instanceof CopyAborted
        ? err.sense
        : copyAbortedSense({
            asc: Asc.INTERNAL_TARGET_FAILURE,
            segment: progress.segmentsProcessed,
          });
    if (!(err instanceof CopyAborted)) {
      lu.nexus.logger.warn(
        { err, volumeId: lu.entry.volumeId, lun: lu.entry.lun },
        "EXTENDED COPY failed unexpectedly",
      );
    }
    if (held) {
      held.status = CopyManagerStatus.COMPLETED_WITH_ERRORS;
      held.sense = sense;
    }
    return { status: ScsiStatus.CHECK_CONDITION, sense, dataOutLength };
  }
}

/** A resolved CSCD: the LUN of the view it names, its unit state and gate. */
interface Cscd {
  readonly entry: LunEntry;
  readonly unit: LogicalUnitState;
  readonly gate: UnitGate;
}

const CHUNK_BYTES = 1024 * 1024;

async function copySegment(
  cmd: ScsiCommand,
  lu: LunContext,
  list: CopyParameterList,
  segment: BlockSegment,
  index: number,
  resolved: Map<string, Cscd>,
  progress: Progress,
): Promise<void> {
  const abort = (asc: number, byte: number, extra: Partial<CopyAbortedOptions> = {}) =>
    new CopyAborted(
      copyAbortedSense({ asc, segment: index, pointer: { sd: true, byte }, ...extra }),
    );
  const src = await resolveCscd(
    lu,
    list,
    segment.source,
    index,
    SegmentField.SOURCE_INDEX,
    "read",
    resolved,
  );
  const dst = await resolveCscd(
    lu,
    list,
    segment.destination,
    index,
    SegmentField.DESTINATION_INDEX,
    "write",
    resolved,
  );
  const srcVolume = src.entry.volume;
  const dstVolume = dst.entry.volume;
  const srcSize = srcVolume.blockSize;
  const dstSize = dstVolume.blockSize;
  const bytes = segment.blocks * (segment.dc ? dstSize : srcSize);
  if (bytes % srcSize !== 0 || bytes % dstSize !== 0) {
    throw abort(Asc.UNEXPECTED_INEXACT_SEGMENT, SegmentField.BLOCKS);
  }
  const srcBlocks = bytes / srcSize;
  const dstBlocks = bytes / dstSize;
  const context = { volumeId: lu.entry.volumeId, lun: lu.entry.lun, opcode: cmd.cdb[0] ?? -1 };
  // What the CSCD itself would have answered to the READ or WRITE.
  const refusedBy = (side: "source" | "destination", spec: SenseSpec, byte: number, written = 0) =>
    abort(Asc.NO_ADDITIONAL_SENSE, byte, {
      [side === "source" ? "sourceSense" : "destinationSense"]: encodeFixedSense(spec),
      ...(written > 0 ? { residual: dstBlocks - written / dstSize } : {}),
    });
  const failedOn = (side: "source" | "destination", err: unknown, byte: number, written: number) =>
    refusedBy(side, senseForFailure(err, lu.nexus.logger, context), byte, written);

  if (!inRange(segment.sourceLba, srcBlocks, srcVolume.blockCount())) {
    throw refusedBy("source", LBA_OUT_OF_RANGE, SegmentField.SOURCE_LBA);
  }
  if (!inRange(segment.destinationLba, dstBlocks, dstVolume.blockCount())) {
    throw refusedBy("destination", LBA_OUT_OF_RANGE, SegmentField.DESTINATION_LBA);
  }
  if (isWriteProtected(dst))
    throw refusedBy("destination", WRITE_PROTECTED, SegmentField.DESTINATION_INDEX);
  if (bytes === 0) return;
  const fua = !dst.unit.writeCacheEnabled;
  const srcRange = blockRange(segment.sourceLba, srcBlocks);
  const dstRange = blockRange(segment.destinationLba, dstBlocks);

  // By reference, when both volumes can (the pool): no data moves.
  if (srcVolume.copyFrom && dstVolume.copyFrom && srcSize === dstSize) {
    let copied: boolean;
    try {
      copied = await sharedOnBoth(src.gate, srcRange, dst.gate, dstRange, () =>
        dstVolume.copyFrom!(srcVolume, segment.sourceLba, segment.destinationLba, dstBlocks, {
          fua,
        }),
      );
    } catch (err) {
      throw failedOn("destination", err, SegmentField.DESTINATION_LBA, 0);
    }
    if (copied) {
      progress.bytesWritten += bytes;
      return;
    }
  }

  // Through the channels: read, then write, a chunk at a time. Within one volume, a copy to
  // higher addresses that overlaps its source goes from the end backwards (as memmove does), so
  // that no chunk is read after it was overwritten.
  const backwards =
    src.entry.volumeId === dst.entry.volumeId &&
    segment.destinationLba > segment.sourceLba &&
    segment.sourceLba + srcBlocks > segment.destinationLba;
  const chunks = Math.ceil(bytes / CHUNK_BYTES);
  let written = 0;
  for (let i = 0; i < chunks; i++) {
    const chunk = backwards ? chunks - 1 - i : i;
    const offset = chunk * CHUNK_BYTES;
    const n = Math.min(CHUNK_BYTES, bytes - offset);
    const srcLba = segment.sourceLba + offset / srcSize;
    const dstLba = segment.destinationLba + offset / dstSize;
    let data: Buffer;
    try {
      data = await src.gate.shared(blockRange(srcLba, n / srcSize), () =>
        srcVolume.read(srcLba, n / srcSize),
      );
    } catch (err) {
      throw failedOn("source", err, SegmentField.SOURCE_LBA, written);
    }
    try {
      await dst.gate.shared(blockRange(dstLba, n / dstSize), () =>
        dstVolume.write(dstLba, data, { fua }),
      );
    } catch (err) {
      throw failedOn("destination", err, SegmentField.DESTINATION_LBA, written);
    }
    written += n;
    progress.bytesWritten += n;
  }
}

const LBA_OUT_OF_RANGE: SenseSpec = { key: SenseKey.ILLEGAL_REQUEST, asc: Asc.LBA_OUT_OF_RANGE };
const WRITE_PROTECTED: SenseSpec = { key: SenseKey.DATA_PROTECT, asc: Asc.WRITE_PROTECTED };

/** lba + blocks within the capacity, without overflow (as `checkLbaRange`). */
function inRange(lba: number, blocks: number, capacity: number): boolean {
  return lba <= capacity && blocks <= capacity - lba;
}

/** Run `work` as a shared access of both ranges (one access when both are on one unit). */
function sharedOnBoth<T>(
  a: UnitGate,
  aRange: BlockRange,
  b: UnitGate,
  bRange: BlockRange,
  work: () => Promise<T>,
): Promise<T> {
  if (a === b) {
    // Nesting two shared accesses of one gate could wait on an exclusive command that waits
    // for the outer one: take one access covering both ranges instead.
    const cover = {
      start: Math.min(aRange.start, bRange.start),
      end: Math.max(aRange.end, bRange.end),
    };
    return a.shared(cover, work);
  }
  return a.shared(aRange, () => b.shared(bRange, work));
}

/** NAA designators of volume ids, computed once (a SHA-256 each). */
const naaCache = new Map<string, Buffer>();

function naaOf(volumeId: string): Buffer {
  let naa = naaCache.get(volumeId);
  if (!naa) {
    naa = naaRegisteredExtended(volumeId);
    naaCache.set(volumeId, naa);
  }
  return naa;
}

/**
 * The LUN of the issuing nexus's view that CSCD descriptor `index` names. For a destination, a
 * writable mapping of the volume is preferred when the view maps it more than once.
 */
async function resolveCscd(
  lu: LunContext,
  list: CopyParameterList,
  index: number,
  segment: number,
  indexByte: number,
  access: "read" | "write",
  resolved: Map<string, Cscd>,
): Promise<Cscd> {
  const unreachable = (asc: number, pointer: CopyAbortedOptions["pointer"]) =>
    new CopyAborted(copyAbortedSense({ asc, segment, pointer }));
  const cscd = list.cscds[index];
  if (!cscd) throw unreachable(Asc.UNREACHABLE_COPY_TARGET, { sd: true, byte: indexByte });
  // Cached per descriptor and access: a view may map a volume twice, read-only and read-write.
  const key = `${index}/${access}`;
  let found = resolved.get(key);
  if (!found) {
    if (cscd.peripheralType !== PERIPHERAL_BLOCK_DEVICE) {
      throw unreachable(Asc.INCORRECT_COPY_TARGET_DEVICE_TYPE, {
        sd: false,
        byte: cscd.offset + 1,
        bit: 4,
      });
    }
    const entry = findEntry(lu.nexus, cscd, access);
    if (!entry) {
      throw unreachable(Asc.UNREACHABLE_COPY_TARGET, { sd: false, byte: cscd.offset + 4 });
    }
    if (cscd.blockLength !== entry.volume.blockSize) {
      throw unreachable(Asc.INVALID_FIELD_IN_PARAMETER_LIST, {
        sd: false,
        byte: cscd.offset + 29,
      });
    }
    const unit = lu.nexus.unitOf(entry.volumeId);
    found = { entry, unit, gate: gateOf(unit) };
    resolved.set(key, found);
  }
  if (await refusedByReservation(lu.nexus, found.unit, access)) {
    throw unreachable(Asc.COPY_TARGET_DEVICE_NOT_REACHABLE, { sd: true, byte: indexByte });
  }
  return found;
}

function findEntry(
  nexus: NexusContext,
  cscd: CscdDescriptor,
  access: "read" | "write",
): LunEntry | undefined {
  if (
    cscd.designatorType !== DESIGNATOR_TYPE_NAA ||
    cscd.codeSet !== CODE_SET_BINARY ||
    cscd.association !== ASSOCIATION_LOGICAL_UNIT
  ) {
    return undefined;
  }
  let match: LunEntry | undefined;
  for (const entry of nexus.view.list()) {
    if (!naaOf(entry.volumeId).equals(cscd.designator)) continue;
    if (access === "read" || !entry.readOnly) return entry;
    match ??= entry;
  }
  return match;
}

/**
 * Does a reservation on the CSCD's unit refuse this I_T nexus the access? The copy manager
 * reads and writes on behalf of the nexus that sent EXTENDED COPY, so the CSCD's reservations
 * apply as they would to that nexus's own READ (a "read" class command) or WRITE ("write").
 */
async function refusedByReservation(
  nexus: NexusContext,
  unit: LogicalUnitState,
  access: "read" | "write",
): Promise<boolean> {
  const holder = unit.reservationHolder;
  if (holder !== undefined) return holder !== nexus;
  if (!unit.pr.ready) await unit.pr.load();
  if (!unit.pr.registered) return false;
  return conflictsWithPersistentReservation(unit.pr.state, prNexusOf(nexus.identity), access);
}

export interface CopyAbortedOptions {
  readonly asc: number;
  /** Number of the segment descriptor being processed (0 for the first). */
  readonly segment: number;
  /** Segment pointer: SD=1 relative to the segment descriptor, SD=0 to the parameter list. */
  readonly pointer?: { readonly sd: boolean; readonly byte: number; readonly bit?: number };
  /** Destination blocks of the segment not written, once some were. */
  readonly residual?: number;
  /** Sense data the source / destination CSCD returned, appended to ours. */
  readonly sourceSense?: Buffer;
  readonly destinationSense?: Buffer;
}

/**
 * Fixed-format COPY ABORTED sense data for an error found while processing segment
 * descriptors (see the module comment for the fields).
 */
export function copyAbortedSense(o: CopyAbortedOptions): Buffer {
  const head = encodeFixedSense({
    key: SenseKey.COPY_ABORTED,
    asc: o.asc,
    ...(o.residual !== undefined ? { information: o.residual } : {}),
  });
  const appended: Buffer[] = [];
  let length = head.length;
  // COMMAND-SPECIFIC INFORMATION: byte 8 = offset of the source CSCD's sense data, byte 9 = of
  // the destination CSCD's (0: none), bytes 10-11 = the segment number.
  if (o.sourceSense) {
    head[8] = length;
    appended.push(o.sourceSense);
    length += o.sourceSense.length;
  }
  if (o.destinationSense) {
    head[9] = length;
    appended.push(o.destinationSense);
    length += o.destinationSense.length;
  }
  head.writeUInt16BE(o.segment & 0xffff, 10);
  if (o.pointer) {
    // SENSE KEY SPECIFIC as a segment pointer (SPC-4, COPY ABORTED): SKSV, SD, BPV, BIT POINTER,
    // then the FIELD POINTER.
    const p = o.pointer;
    head[15] = 0x80 | (p.sd ? 0x20 : 0) | (p.bit !== undefined ? 0x08 | (p.bit & 0x07) : 0);
    head.writeUInt16BE(p.byte & 0xffff, 16);
  }
  const sense = appended.length === 0 ? head : Buffer.concat([head, ...appended]);
  sense[7] = sense.length - 8; // ADDITIONAL SENSE LENGTH
  return sense;
}
