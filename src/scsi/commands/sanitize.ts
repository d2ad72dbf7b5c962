/**
 * SANITIZE (SBC-4, opcode 48h): make every block of the logical unit unreadable, for every agent
 * and channel that maps the volume. The service actions and their parameter list lengths follow
 * SBC-4's table of SANITIZE service action codes (restated in Seagate's SCSI Commands Reference
 * Manual, rev. J, 3.41):
 *
 *  - OVERWRITE (01h): PARAMETER LIST LENGTH greater than 4 and less than the block length + 5,
 *    else INVALID FIELD IN CDB. The parameter list: INVERT (byte 0 bit 7), TEST (bits 6-5),
 *    OVERWRITE COUNT (bits 4-0), a reserved byte, INITIALIZATION PATTERN LENGTH (bytes 2-3), the
 *    pattern. The pattern is repeated to fill each block, each block starting with its first
 *    byte; OVERWRITE COUNT passes write every block; with INVERT the pattern is inverted between
 *    consecutive passes, the last pass writing it as given (an even count starts inverted).
 *    Refused with INVALID FIELD IN PARAMETER LIST: OVERWRITE COUNT 0 (reserved), a pattern
 *    length of 0 or above the block length (SBC-4), a pattern length that is not what the list
 *    holds (a malformed list is no ground for a destructive command), a non-zero TEST field (its
 *    test modes are not implemented) and reserved bits. Each pass is flushed before the next
 *    starts, so that every pass reaches the backing store, not just the page cache.
 *  - BLOCK ERASE (02h), list length 0: deallocate every block (Volume.unmap of the whole
 *    volume, then a flush). LBPRZ=1: every block then reads as zeros, and reads complete without
 *    error (WABEREQ=01b in the Block Device Characteristics VPD page, ./vpd.ts).
 *  - CRYPTOGRAPHIC ERASE (03h): not offered. No backend encrypts, so there is no key to change;
 *    it is answered as any unsupported service action (INVALID FIELD IN CDB), WACEREQ=00b.
 *  - EXIT FAILURE MODE (1Fh), list length 0: leaves the failure mode of an unrestricted
 *    sanitize (see below). Without a failed sanitize there is nothing to leave: GOOD.
 *
 * Checks, in order, after the nexus's (unit attention, CDB usage map: IMMED and AUSE only, ZNR
 * is for zoned devices; reservations: SANITIZE conflicts like a write under RESERVE(6) and
 * persistent reservations): a sanitize in progress (NOT READY, SANITIZE IN PROGRESS), the
 * PARAMETER LIST LENGTH, write protection (a read-only mapping, or the unit's software write
 * protect, SWP of the Control mode page, gets DATA PROTECT / WRITE PROTECTED, EXIT FAILURE MODE
 * included: a read-only agent must not change what the writers see), the restricted failure
 * mode, then the parameter list (short Data-Out: INVALID FIELD IN COMMAND INFORMATION UNIT).
 *
 * The sanitize operation (SBC-4, sanitize operations):
 *  - While it runs, every command to the logical unit from any nexus, SANITIZE included, ends in
 *    NOT READY / LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS (04h/1Bh), except INQUIRY, REPORT
 *    LUNS and REQUEST SENSE (`refuseWhileSanitizing`, which wraps every dispatch table row).
 *    That sense data carries the PROGRESS INDICATION (SPC-4 4.5.2.4.4: SKSV=1, the fraction done
 *    in 65536ths, counted in blocks written over all passes), and REQUEST SENSE returns it as
 *    parameter data once the nexus has no deferred error or unit attention pending
 *    (`sanitizeSense`, ./request-sense.ts): that is how an initiator follows a SANITIZE sent
 *    with IMMED=1. Commands that were already running are waited for: the operation holds the
 *    whole unit exclusively in the unit's gate (./io-gate.ts) before it touches a block.
 *  - It goes on through ABORT TASK, ABORT TASK SET, resets and I_T nexus loss: it belongs to the
 *    logical unit, not to the command. IMMED=1 returns GOOD once the CDB and parameter list are
 *    validated; IMMED=0 returns when the operation is done, or at once with TASK ABORTED when
 *    the transport aborts the command (ScsiNexus.abortTask), which the transport does not
 *    send: the TMF is answered while the operation goes on (`unlessAborted`).
 *  - OVERWRITE writes at the pace of the target's sanitize pacer (../pacer.ts, ScsiTarget option
 *    `sanitizeBytesPerSecond`, 64 MiB/s by default): a bounded share of the pool's bandwidth,
 *    which every other agent shares. BLOCK ERASE writes nothing and is not paced.
 *  - If it fails (a volume error: I/O error, full pool, ...), SANITIZE with IMMED=0 ends in
 *    MEDIUM ERROR / SANITIZE COMMAND FAILED (31h/03h), and the unit enters the failure mode:
 *    every command that reads or writes blocks ends in that same sense until a sanitize
 *    succeeds, or, when the failed one had AUSE=1 (unrestricted completion mode), until EXIT
 *    FAILURE MODE. After a failure with AUSE=0 (restricted mode), EXIT FAILURE MODE and a
 *    SANITIZE with AUSE=1 are INVALID FIELD IN CDB (SBC-4 AUSE bit).
 *  - Every sanitize is logged at warn level, naming the initiator, the LUN, the channel and the
 *    volume: it destroys the data of every agent that maps the volume, which is what the
 *    operator granted to an agent with a read-write mapping.
 *
 * Not done: the state lives in memory, so a server restart during a sanitize leaves the volume
 * partly sanitized and in no failure mode (SBC-4 wants the operation resumed after a power on);
 * an EXTENDED COPY sent to another logical unit that writes into this one waits at this unit's
 * gate until the sanitize is over instead of failing; BLOCK ERASE reports no intermediate
 * progress (one Volume.unmap call).
 */

import { Opcode, ScsiStatus, SenseKey } from "../constants.js";
import type { LunContext, LunHandler } from "../context.js";
import type { CommandSpec } from "../dispatch.js";
import {
  type CheckCondition,
  checkCondition,
  checkConditionResult,
  invalidCdbField,
  invalidParameterField,
  type SenseSpec,
} from "../sense.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import type { LogicalUnitState } from "../unit-state.js";
import { checkWritable, GOOD, requireDataOut } from "./common.js";
import { gateOf, WHOLE_UNIT } from "./io-gate.js";

/** SBC-4: SANITIZE. */
export const SANITIZE = 0x48;

/** SBC-4: SANITIZE service action codes. */
export const SanitizeAction = {
  OVERWRITE: 0x01,
  BLOCK_ERASE: 0x02,
  CRYPTOGRAPHIC_ERASE: 0x03,
  EXIT_FAILURE_MODE: 0x1f,
} as const;

/** 04h/1Bh LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS. */
export const ASC_SANITIZE_IN_PROGRESS = 0x041b;
/** 31h/03h SANITIZE COMMAND FAILED. */
export const ASC_SANITIZE_COMMAND_FAILED = 0x3103;

/** The OVERWRITE passes write chunks of at most this many bytes. */
const CHUNK_BYTES = 1024 * 1024;

/**
 * A sanitize operation in progress: how much of its work is done, for the PROGRESS INDICATION
 * of NOT READY / SANITIZE IN PROGRESS sense data (SPC-4 4.5.2.4.4). The work is counted in
 * blocks: every block of every OVERWRITE pass, or every block once for BLOCK ERASE.
 */
export class SanitizeProgress {
  done = 0;
  constructor(readonly total: number) {}

  /** Done / total in 65536ths, at most FFFFh (SPC-4: "numerator of a fraction ... 65 536"). */
  get indication(): number {
    if (this.total <= 0) return 0;
    return Math.min(0xffff, Math.floor((this.done / this.total) * 0x10000));
  }
}

type Condition =
  | { readonly state: "running"; readonly progress: SanitizeProgress }
  | { readonly state: "failed"; readonly unrestricted: boolean };

/** The sanitize condition of each logical unit that has one. */
const conditions = new WeakMap<LogicalUnitState, Condition>();
/** How many units have a condition: the fast path of `refuseWhileSanitizing` checks it only. */
let unitsWithCondition = 0;

function setCondition(unit: LogicalUnitState, c: Condition): void {
  if (!conditions.has(unit)) unitsWithCondition++;
  conditions.set(unit, c);
}

function clearCondition(unit: LogicalUnitState): void {
  if (conditions.delete(unit)) unitsWithCondition--;
}

/** "running", "failed" or "idle": for tests and diagnostics. */
export function sanitizeState(unit: LogicalUnitState): "running" | "failed" | "idle" {
  return conditions.get(unit)?.state ?? "idle";
}

function sanitizeInProgress(progress: SanitizeProgress): CheckCondition {
  return checkCondition(SenseKey.NOT_READY, ASC_SANITIZE_IN_PROGRESS, {
    progress: progress.indication,
  });
}

/**
 * While a sanitize operation runs on `unit`: NOT READY / SANITIZE IN PROGRESS with its progress
 * indication, which REQUEST SENSE returns when nothing else is pending (SBC-4, sanitize
 * operations: REQUEST SENSE is processed, and reports the progress); else undefined.
 */
export function sanitizeSense(unit: LogicalUnitState): SenseSpec | undefined {
  if (unitsWithCondition === 0) return undefined;
  const c = conditions.get(unit);
  return c?.state === "running" ? sanitizeInProgress(c.progress).sense : undefined;
}

function sanitizeFailed(): CheckCondition {
  return checkCondition(SenseKey.MEDIUM_ERROR, ASC_SANITIZE_COMMAND_FAILED);
}

/** Commands that read or write logical blocks: refused in the failure mode. */
const MEDIUM_ACCESS = new Set<number>([
  Opcode.READ_6,
  Opcode.WRITE_6,
  Opcode.READ_10,
  Opcode.WRITE_10,
  Opcode.WRITE_AND_VERIFY_10,
  Opcode.VERIFY_10,
  Opcode.PRE_FETCH_10,
  Opcode.SYNCHRONIZE_CACHE_10,
  Opcode.WRITE_SAME_10,
  Opcode.UNMAP,
  Opcode.THIRD_PARTY_COPY_OUT,
  Opcode.READ_16,
  Opcode.COMPARE_AND_WRITE,
  Opcode.WRITE_16,
  Opcode.ORWRITE_16,
  Opcode.WRITE_AND_VERIFY_16,
  Opcode.VERIFY_16,
  Opcode.PRE_FETCH_16,
  Opcode.SYNCHRONIZE_CACHE_16,
  Opcode.WRITE_SAME_16,
  Opcode.WRITE_ATOMIC_16,
  Opcode.READ_12,
  Opcode.WRITE_12,
  Opcode.WRITE_AND_VERIFY_12,
  Opcode.VERIFY_12,
]);

/**
 * A dispatch table row whose handler first refuses the command while its logical unit is being
 * sanitized (every row that addresses a logical unit, SANITIZE excepted: it checks for itself),
 * or in the failure mode (the rows of `MEDIUM_ACCESS`). Rows that also answer outside the view
 * (INQUIRY, REPORT LUNS, REQUEST SENSE) and placeholders are returned unchanged. On the fast
 * path, with no unit sanitizing anywhere, this costs one comparison.
 */
export function refuseWhileSanitizing(spec: CommandSpec): CommandSpec {
  if (spec.scope !== "lun" || !spec.supported || spec.opcode === SANITIZE) return spec;
  const handler = spec.handler;
  const medium = MEDIUM_ACCESS.has(spec.opcode);
  const guarded: LunHandler = (cmd, lu) => {
    if (unitsWithCondition !== 0) {
      const c = conditions.get(lu.unit);
      if (c?.state === "running") throw sanitizeInProgress(c.progress);
      if (c !== undefined && medium) throw sanitizeFailed();
    }
    return handler(cmd, lu);
  };
  return { ...spec, handler: guarded };
}

interface OverwriteParameters {
  readonly invert: boolean;
  readonly passes: number;
  readonly pattern: Buffer;
}

/** The OVERWRITE parameter list (see the module comment for what is refused). */
export function decodeOverwriteParameters(list: Buffer, blockSize: number): OverwriteParameters {
  const test = (list[0]! >> 5) & 0x03;
  if (test !== 0) throw invalidParameterField(0, 6);
  const passes = list[0]! & 0x1f;
  if (passes === 0) throw invalidParameterField(0, 4);
  if (list[1] !== 0) throw invalidParameterField(1, 31 - Math.clz32(list[1]!));
  const patternLength = list.readUInt16BE(2);
  if (patternLength === 0 || patternLength > blockSize || patternLength !== list.length - 4) {
    throw invalidParameterField(2);
  }
  return {
    invert: (list[0]! & 0x80) !== 0,
    passes,
    pattern: Buffer.from(list.subarray(4, 4 + patternLength)),
  };
}

/** SANITIZE, every service action we offer (the dispatch table routes by service action). */
export const sanitize: LunHandler = (cmd, lu) => {
  const cdb = cmd.cdb;
  const immed = (cdb[1]! & 0x80) !== 0;
  const ause = (cdb[1]! & 0x20) !== 0;
  const action = cdb[1]! & 0x1f;
  const listLength = cdb.readUInt16BE(7);
  const unit = lu.unit;
  const condition = conditions.get(unit);
  if (condition?.state === "running") throw sanitizeInProgress(condition.progress);
  const blockSize = lu.entry.volume.blockSize;
  const lengthOk =
    action === SanitizeAction.OVERWRITE
      ? listLength > 4 && listLength < blockSize + 5
      : listLength === 0;
  if (!lengthOk) throw invalidCdbField(7);
  checkWritable(lu);
  const restricted = condition?.state === "failed" && !condition.unrestricted;
  if (action === SanitizeAction.EXIT_FAILURE_MODE) {
    if (restricted) throw invalidCdbField(1, 4);
    if (condition !== undefined) {
      clearCondition(unit);
      lu.nexus.logger.warn(describe(cmd, lu), "SANITIZE: failure mode exited");
    }
    return GOOD;
  }
  if (restricted && ause) throw invalidCdbField(1, 5);
  const capacity = lu.entry.volume.blockCount();
  let erase: () => Promise<void>;
  let progress: SanitizeProgress;
  if (action === SanitizeAction.OVERWRITE) {
    const p = decodeOverwriteParameters(requireDataOut(cmd, listLength), blockSize);
    progress = new SanitizeProgress(capacity * p.passes);
    erase = () => overwrite(lu, p, progress);
  } else {
    progress = new SanitizeProgress(capacity);
    erase = () => blockErase(lu, progress);
  }
  const dataOutLength = listLength;
  setCondition(unit, { state: "running", progress });
  const fields = describe(cmd, lu);
  lu.nexus.logger.warn(
    fields,
    "SANITIZE: erasing the whole volume, for every agent that maps it; its other commands get " +
      "NOT READY until it is done",
  );
  const done = run(unit, erase, ause).then(
    (): ScsiResult => {
      lu.nexus.logger.warn(fields, "SANITIZE: done");
      return { status: ScsiStatus.GOOD, dataOutLength };
    },
    (err: unknown): ScsiResult => {
      lu.nexus.logger.warn({ ...fields, err }, "SANITIZE: failed; the unit is in failure mode");
      return checkConditionResult(sanitizeFailed().sense, dataOutLength);
    },
  );
  return immed ? { status: ScsiStatus.GOOD, dataOutLength } : unlessAborted(cmd, lu, done);
};

/**
 * The result of a SANITIZE with IMMED=0: `done`, unless the transport aborts the command first.
 * An abort ends the command, not the operation (SBC-4: the sanitize operation continues after
 * a task management function aborts the SANITIZE command, a reset or an I_T nexus loss), so the
 * command settles at once with TASK ABORTED, which the transport drops, and the operation goes
 * on, reported by TEST UNIT READY and REQUEST SENSE as before.
 */
function unlessAborted(
  cmd: ScsiCommand,
  lu: LunContext,
  done: Promise<ScsiResult>,
): Promise<ScsiResult> {
  return new Promise((resolve) => {
    const release = lu.nexus.onAbort(cmd, () =>
      resolve({ status: ScsiStatus.TASK_ABORTED, dataOutLength: cmd.cdb.readUInt16BE(7) }),
    );
    void done.then((result) => {
      release();
      resolve(result);
    });
  });
}

/**
 * The operation: wait until the commands already running on the unit have settled (the new ones
 * are refused), erase, and set the unit's condition from the outcome.
 */
async function run(unit: LogicalUnitState, erase: () => Promise<void>, ause: boolean) {
  try {
    await gateOf(unit).exclusive(WHOLE_UNIT, erase);
  } catch (err) {
    setCondition(unit, { state: "failed", unrestricted: ause });
    throw err;
  }
  clearCondition(unit);
}

/**
 * Every pass writes every block, one chunk at a time, then flushes. Each chunk waits for the
 * target's sanitize pacer first (../pacer.ts), so that the operation takes a bounded share of
 * the pool's bandwidth; progress is counted per chunk.
 */
async function overwrite(
  lu: LunContext,
  p: OverwriteParameters,
  progress: SanitizeProgress,
): Promise<void> {
  const volume = lu.entry.volume;
  const blockSize = volume.blockSize;
  const capacity = volume.blockCount();
  const chunkBlocks = Math.max(1, Math.min(capacity, Math.floor(CHUNK_BYTES / blockSize)));
  const plain = Buffer.alloc(chunkBlocks * blockSize);
  for (let at = 0; at < plain.length; at += blockSize) plain.fill(p.pattern, at, at + blockSize);
  let inverted: Buffer | undefined;
  if (p.invert && p.passes > 1) {
    inverted = Buffer.allocUnsafe(plain.length);
    for (let i = 0; i < plain.length; i++) inverted[i] = ~plain[i]! & 0xff;
  }
  for (let pass = 0; pass < p.passes; pass++) {
    // The last pass writes the pattern as given; earlier ones alternate when INVERT is set.
    const chunk = inverted && (p.passes - 1 - pass) % 2 === 1 ? inverted : plain;
    for (let lba = 0; lba < capacity; ) {
      const n = Math.min(chunkBlocks, capacity - lba);
      await lu.unit.sanitizePacer.take(n * blockSize);
      // Sequential: the volume hands the buffer back when the write settles.
      await volume.write(lba, n === chunkBlocks ? chunk : chunk.subarray(0, n * blockSize));
      lba += n;
      progress.done += n;
    }
    await volume.flush();
  }
}

/**
 * Deallocate every block in one call (the backend knows how to free a whole range best: the
 * file backend truncates, the pool drops block map entries). Nothing is written, so nothing is
 * paced; the progress goes from 0 to done at once.
 */
async function blockErase(lu: LunContext, progress: SanitizeProgress): Promise<void> {
  const volume = lu.entry.volume;
  await volume.unmap(0, volume.blockCount());
  await volume.flush();
  progress.done = progress.total;
}

/** The log fields that say who sanitizes what. */
function describe(cmd: ScsiCommand, lu: LunContext): object {
  const cdb = cmd.cdb;
  return {
    initiator: lu.nexus.identity.initiatorName,
    isid: lu.nexus.identity.isid,
    lun: lu.entry.lun,
    channel: lu.entry.channel,
    volumeId: lu.entry.volumeId,
    volume: lu.entry.volume.name,
    serviceAction: cdb[1]! & 0x1f,
    immed: (cdb[1]! & 0x80) !== 0,
    ause: (cdb[1]! & 0x20) !== 0,
  };
}
