/**
 * Small helpers shared by command handlers: results, allocation lengths, Data-Out, LBA ranges,
 * write protection and failure translation.
 */

import { isAbortError } from "../../volume/errors.js";
import { Asc } from "../asc.js";
import { Limits, ScsiStatus, SenseKey } from "../constants.js";
import type { LunContext } from "../context.js";
import {
  CheckCondition,
  checkConditionResult,
  invalidCdbField,
  lbaOutOfRange,
  writeProtected,
} from "../sense.js";
import { senseForFailure } from "../sense-map.js";
import type { ScsiCommand, ScsiResult } from "../types.js";

/**
 * TASK ABORTED (SAM-5 5.3): a command aborted before its volume work started. The transport
 * sends nothing for a task it aborted itself; this status reaches an initiator only when
 * another I_T nexus aborted the command (a LUN RESET removing queued commands of every nexus).
 */
export const TASK_ABORTED: ScsiResult = Object.freeze({ status: ScsiStatus.TASK_ABORTED });

/** GOOD status, no data. Shared: results are never mutated. */
export const GOOD: ScsiResult = Object.freeze({ status: ScsiStatus.GOOD });

/** GOOD with Data-In limited by the CDB's allocation length (SPC-4, ALLOCATION LENGTH field). */
export function dataIn(data: Buffer, allocationLength: number): ScsiResult {
  return {
    status: ScsiStatus.GOOD,
    data: allocationLength < data.length ? data.subarray(0, allocationLength) : data,
  };
}

/** GOOD for a command that consumed `dataOutLength` bytes of Data-Out. */
export function goodWithDataOut(dataOutLength: number): ScsiResult {
  return { status: ScsiStatus.GOOD, dataOutLength };
}

/**
 * The first `length` bytes of Data-Out, for commands whose Data-Out is a parameter list or a
 * pattern (MODE SELECT, UNMAP, VERIFY): less than that is refused with CHECK CONDITION,
 * ILLEGAL REQUEST / INVALID FIELD IN COMMAND INFORMATION UNIT (FCP-4's option for a data
 * overrun), and the command is not executed. `dataOutLength` still reports what the CDB called
 * for, so that the transport reports the overflow residual. More Data-Out than needed is
 * ignored (the transport reports an underflow).
 */
export function requireDataOut(cmd: ScsiCommand, length: number): Buffer {
  const data = cmd.dataOut;
  if (data.length < length) throw overrun(length);
  return data.length === length ? data : data.subarray(0, length);
}

/**
 * The Data-Out of a WRITE: the CDB asks for `length` bytes of `blockSize`-byte blocks.
 *  - at least `length` bytes arrived: the first `length` (extra Data-Out is ignored, underflow);
 *  - fewer, but whole blocks (iSCSI EDTL < SCSI transfer length): those blocks, possibly none.
 *    The command is processed normally except that data beyond EDTL is not transferred (SAM /
 *    FCP-4 "process the command normally"), which libiscsi's Write*Residuals tests require:
 *    GOOD, the first EDTL bytes written, the rest untouched, an overflow residual;
 *  - a partial block: INVALID FIELD IN COMMAND INFORMATION UNIT and nothing written, since
 *    writing part of a block would need a read-modify-write that mixes old and new data.
 */
export function writeDataOut(cmd: ScsiCommand, length: number, blockSize: number): Buffer {
  const data = cmd.dataOut;
  if (data.length >= length) return data.length === length ? data : data.subarray(0, length);
  if (data.length % blockSize !== 0) throw overrun(length);
  return data;
}

function overrun(length: number): CheckCondition {
  return new CheckCondition(
    { key: SenseKey.ILLEGAL_REQUEST, asc: Asc.INVALID_FIELD_IN_COMMAND_IU },
    length,
  );
}

/**
 * SBC-4 LBA range rule: LOGICAL BLOCK ADDRESS OUT OF RANGE when lba + blocks exceeds the
 * capacity. A zero-length access at lba == capacity is accepted (as LIO does); any lba beyond
 * the capacity is out of range. Written so that no sum can overflow.
 */
export function checkLbaRange(lba: number, blocks: number, capacity: number): void {
  if (lba > capacity || blocks > capacity - lba) throw lbaOutOfRange();
}

/**
 * Transfers larger than the MAXIMUM TRANSFER LENGTH of the Block Limits VPD page are
 * INVALID FIELD IN CDB, pointing at the TRANSFER LENGTH field (SBC-4).
 */
export function checkTransferLength(blocks: number, blockSize: number, lengthByte: number): void {
  if (blocks > Limits.MAX_TRANSFER_BYTES / blockSize) throw invalidCdbField(lengthByte);
}

/**
 * Commands that write to the medium are refused with DATA PROTECT / WRITE PROTECTED before the
 * volume is touched: through a read-only mapping, and while the unit's software write protect
 * is on (SWP of the Control mode page, SPC-4 7.5.8), whichever nexus set it.
 */
export function checkWritable(lu: LunContext): void {
  if (isWriteProtected(lu)) throw writeProtected();
}

/** A read-only mapping, or SWP=1 on the unit: see `checkWritable`. */
export function isWriteProtected(lu: Pick<LunContext, "entry" | "unit">): boolean {
  return lu.entry.readOnly || lu.unit.softwareWriteProtect;
}

/**
 * The result for anything a command failed with: CHECK CONDITION sense from a CheckCondition,
 * or the sense-map translation (with logging) for whatever the volume rejected with.
 */
export function failureResult(
  err: unknown,
  cmd: ScsiCommand,
  lu: LunContext,
  dataOutLength?: number,
): ScsiResult {
  if (err instanceof CheckCondition) {
    return checkConditionResult(err.sense, err.dataOutLength ?? dataOutLength);
  }
  // The command's signal aborted while its volume call still waited (Volume, "Aborts").
  if (isAbortError(err)) return TASK_ABORTED;
  const sense = senseForFailure(err, lu.nexus.logger, {
    volumeId: lu.entry.volumeId,
    lun: lu.entry.lun,
    opcode: cmd.cdb[0] ?? -1,
  });
  return checkConditionResult(sense, dataOutLength);
}
