/**
 * Small helpers shared by command handlers: results, allocation lengths, Data-Out, LBA ranges,
 * write protection and failure translation.
 */
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
 * The first `length` bytes of Data-Out.
 *
 * When the initiator sent less than the CDB requires (iSCSI EDTL < SCSI transfer length), the
 * command is not executed: CHECK CONDITION, ILLEGAL REQUEST / INVALID FIELD IN COMMAND
 * INFORMATION UNIT, nothing written (the option FCP-4 gives a target for a data overrun, and
 * what LIO does; libiscsi's residual tests accept it). Writing a prefix would store data the
 * initiator did not mean to be partial. `dataOutLength` still reports what the CDB called for,
 * so that the transport reports the overflow residual. Extra Data-Out (EDTL > transfer length)
 * is ignored: only what the CDB specifies is written, and the transport reports an underflow.
 */
export function requireDataOut(cmd: ScsiCommand, length: number): Buffer {
  const data = cmd.dataOut;
  if (data.length < length) {
    throw new CheckCondition(
      { key: SenseKey.ILLEGAL_REQUEST, asc: Asc.INVALID_FIELD_IN_COMMAND_IU },
      length,
    );
  }
  return data.length === length ? data : data.subarray(0, length);
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

/** Read-only mappings refuse writes before the volume is touched. */
export function checkWritable(lu: LunContext): void {
  if (lu.entry.readOnly) throw writeProtected();
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
  const sense = senseForFailure(err, lu.nexus.logger, {
    volumeId: lu.entry.volumeId,
    lun: lu.entry.lun,
    opcode: cmd.cdb[0] ?? -1,
  });
  return checkConditionResult(sense, dataOutLength);
}
