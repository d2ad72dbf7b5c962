/**
 * The medium-access gate of a logical unit: what makes COMPARE AND WRITE, ORWRITE, WRITE ATOMIC
 * and WRITE AND VERIFY (BYTCHK=1) atomic with respect to every other command that reads or
 * writes the same blocks, from any I_T nexus and any channel of the volume.
 *
 * SBC-4 5.2 (COMPARE AND WRITE): the read, compare and write are "an uninterrupted series of
 * actions": no other command may access those logical blocks in between. SBC-4 (atomic
 * writes) asks the same of WRITE ATOMIC: no read returns a mix of old and new data.
 *
 * Design: a reader-writer scheme keyed by LBA range, shaped so that the ordinary READ / WRITE
 * path pays almost nothing when no atomic command is running.
 *
 *  - Ordinary medium commands are *shared*. A shared command joins the current *epoch* (a
 *    counter: `active++`) and leaves it when its result settles (one promise reaction with a
 *    callback bound once per epoch, so nothing is allocated per command but that reaction).
 *    While no atomic command is registered on the unit that is all: no range is decoded, no
 *    list is searched.
 *  - An atomic command is *exclusive* on its range. It registers its range (from then on, a
 *    shared command that overlaps it waits for it, one that does not overlap runs at once),
 *    closes the current epoch and waits until every command of that epoch and of older ones
 *    has settled (the commands that were already running when it arrived, whatever their
 *    range), and until every earlier exclusive command on an overlapping range is done. Then
 *    it runs, and releases the range.
 *  - A shared command that has to wait still joins its epoch on arrival, so an exclusive
 *    command that arrives after it (and overlaps it) waits for it: overlapping commands are
 *    served in arrival order and nobody starves.
 *
 * The wait graph only points at earlier arrivals, so it has no cycle. Exclusive commands only
 * stall the ranges they cover, and only for one read + write of at most a few hundred blocks.
 *
 * Which existing commands are shared, and the ranges they touch, is the table `MEDIUM_ACCESS`
 * below; `gateMediumAccess` wraps those dispatch table rows. Commands of this folder that access
 * the medium in several steps (EXTENDED COPY, WRITE AND VERIFY) call `shared` / `exclusive`
 * themselves.
 */

import { readUInt64 } from "../cdb.js";
import { Opcode } from "../constants.js";
import type { LunContext, LunHandler } from "../context.js";
import type { CommandSpec } from "../dispatch.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import type { LogicalUnitState } from "../unit-state.js";
import { failureResult } from "./common.js";

/** A range of logical blocks: [start, end). `end` may be Infinity (the whole unit). */
export interface BlockRange {
  readonly start: number;
  readonly end: number;
}

/** Every block of the unit (UNMAP, whose ranges are in its parameter list). */
export const WHOLE_UNIT: BlockRange = Object.freeze({ start: 0, end: Number.POSITIVE_INFINITY });

export function blockRange(lba: number, blocks: number): BlockRange {
  return { start: lba, end: lba + blocks };
}

function overlaps(a: BlockRange, b: BlockRange): boolean {
  return a.start < b.end && b.start < a.end;
}

/**
 * A generation of shared commands. Epochs retire in order: an epoch is retired once it is
 * closed (a newer one is current), it has no command left, and every older epoch is retired.
 */
class Epoch {
  active = 0;
  closed = false;
  retired = false;
  older: Epoch | undefined;
  newer: Epoch | undefined;
  private waiters: (() => void)[] | undefined;

  /** Bound once per epoch: the reaction every shared command of this epoch settles with. */
  readonly release = (): void => {
    if (--this.active === 0 && this.closed) retireFrom(this);
  };

  whenRetired(): Promise<void> {
    if (this.retired) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiters ??= [];
      this.waiters.push(resolve);
    });
  }

  retire(): void {
    this.retired = true;
    const waiters = this.waiters;
    this.waiters = undefined;
    if (waiters) for (const w of waiters) w();
  }
}

/** Retire `epoch` and then every newer epoch that has become retirable. */
function retireFrom(epoch: Epoch | undefined): void {
  let e = epoch;
  while (e?.closed && e.active === 0 && e.older === undefined && !e.retired) {
    e.retire();
    const next = e.newer;
    if (next) next.older = undefined;
    e.newer = undefined;
    e = next;
  }
}

interface Exclusive {
  readonly range: BlockRange;
  readonly done: Promise<void>;
}

/** The gate of one logical unit. Obtain it with `gateOf(unit)`. */
export class UnitGate {
  private current = new Epoch();
  private readonly exclusives: Exclusive[] = [];

  /** Number of exclusive commands registered (running or waiting); for tests and metrics. */
  get exclusiveCount(): number {
    return this.exclusives.length;
  }

  /**
   * Run a shared command handler. On the fast path (no exclusive command registered) the
   * handler is called synchronously, so that its synchronous CHECK CONDITION reaches the caller
   * as a throw, exactly as without the gate.
   */
  runShared(
    cmd: ScsiCommand,
    lu: LunContext,
    rangeOf: (cdb: Buffer) => BlockRange,
    handler: LunHandler,
  ): ScsiResult | Promise<ScsiResult> {
    const epoch = this.current;
    epoch.active++;
    const blockers = this.exclusives.length === 0 ? undefined : this.blockers(rangeOf(cmd.cdb));
    if (blockers === undefined) {
      let result: ScsiResult | Promise<ScsiResult>;
      try {
        result = handler(cmd, lu);
      } catch (err) {
        epoch.release();
        throw err;
      }
      if (result instanceof Promise) result.then(epoch.release, epoch.release);
      else epoch.release();
      return result;
    }
    return Promise.all(blockers)
      .then(() => handler(cmd, lu))
      .catch((err: unknown) => failureResult(err, cmd, lu))
      .finally(epoch.release);
  }

  /**
   * Run `work` as a shared access of `range` (used by commands that access the medium in
   * several steps, e.g. each chunk of an EXTENDED COPY).
   */
  async shared<T>(range: BlockRange, work: () => Promise<T>): Promise<T> {
    const epoch = this.current;
    epoch.active++;
    try {
      const blockers = this.exclusives.length === 0 ? undefined : this.blockers(range);
      if (blockers) await Promise.all(blockers);
      return await work();
    } finally {
      epoch.release();
    }
  }

  /**
   * Run `work` with `range` to itself: no other command of this unit that touches the range
   * runs between the moment `work` starts and the moment it settles.
   */
  async exclusive<T>(range: BlockRange, work: () => Promise<T>): Promise<T> {
    const earlier = this.blockers(range);
    let release!: () => void;
    const entry: Exclusive = {
      range,
      done: new Promise<void>((resolve) => {
        release = resolve;
      }),
    };
    this.exclusives.push(entry);
    const drained = this.rotate();
    try {
      await drained;
      if (earlier) await Promise.all(earlier);
      return await work();
    } finally {
      this.exclusives.splice(this.exclusives.indexOf(entry), 1);
      release();
    }
  }

  /** The `done` promises of registered exclusive commands overlapping `range`, or undefined. */
  private blockers(range: BlockRange): Promise<void>[] | undefined {
    let out: Promise<void>[] | undefined;
    for (const x of this.exclusives) {
      if (!overlaps(x.range, range)) continue;
      out ??= [];
      out.push(x.done);
    }
    return out;
  }

  /**
   * Close the current epoch and open a new one; resolves when every shared command that
   * started before (in the closed epoch or older ones) has settled.
   */
  private rotate(): Promise<void> {
    const old = this.current;
    if (old.active === 0 && old.older === undefined) return Promise.resolve();
    const next = new Epoch();
    old.closed = true;
    old.newer = next;
    next.older = old;
    this.current = next;
    retireFrom(old);
    return old.whenRetired();
  }
}

const gates = new WeakMap<LogicalUnitState, UnitGate>();

/** The gate of a logical unit (created on first use, lives as long as the unit state). */
export function gateOf(unit: LogicalUnitState): UnitGate {
  let gate = gates.get(unit);
  if (!gate) {
    gate = new UnitGate();
    gates.set(unit, gate);
  }
  return gate;
}

/** Blocks of READ(6)/WRITE(6): 21-bit LBA, TRANSFER LENGTH 0 meaning 256 (SBC-4). */
function range6(cdb: Buffer): BlockRange {
  const lba = ((cdb[1]! & 0x1f) << 16) | cdb.readUInt16BE(2);
  return blockRange(lba, cdb[4] === 0 ? 256 : cdb[4]!);
}

/** Blocks of the (10) CDBs: LBA bytes 2-5, length bytes 7-8. */
function range10(cdb: Buffer): BlockRange {
  return blockRange(cdb.readUInt32BE(2), cdb.readUInt16BE(7));
}

/** Blocks of the (12) CDBs: LBA bytes 2-5, length bytes 6-9. */
function range12(cdb: Buffer): BlockRange {
  return blockRange(cdb.readUInt32BE(2), cdb.readUInt32BE(6));
}

/** Blocks of the (16) CDBs: LBA bytes 2-9, length bytes 10-13. */
export function range16(cdb: Buffer): BlockRange {
  return blockRange(readUInt64(cdb, 2), cdb.readUInt32BE(10));
}

function wholeUnit(): BlockRange {
  return WHOLE_UNIT;
}

/**
 * The existing commands that read or write logical block data, with the blocks they touch.
 * A range only matters while an exclusive command is registered; a CDB whose fields are out of
 * range just yields a range that overlaps nothing real, and the handler rejects it.
 */
const MEDIUM_ACCESS: ReadonlyMap<number, (cdb: Buffer) => BlockRange> = new Map([
  [Opcode.READ_6, range6],
  [Opcode.WRITE_6, range6],
  [Opcode.READ_10, range10],
  [Opcode.WRITE_10, range10],
  [Opcode.VERIFY_10, range10],
  [Opcode.WRITE_SAME_10, range10],
  [Opcode.UNMAP, wholeUnit],
  [Opcode.READ_12, range12],
  [Opcode.WRITE_12, range12],
  [Opcode.VERIFY_12, range12],
  [Opcode.READ_16, range16],
  [Opcode.WRITE_16, range16],
  [Opcode.VERIFY_16, range16],
  [Opcode.WRITE_SAME_16, range16],
]);

/**
 * A dispatch table row, its handler routed through the unit's gate when the command accesses
 * the medium (see `MEDIUM_ACCESS`); any other row is returned unchanged.
 */
export function gateMediumAccess(spec: CommandSpec): CommandSpec {
  const rangeOf = MEDIUM_ACCESS.get(spec.opcode);
  if (!rangeOf || spec.scope !== "lun" || !spec.supported) return spec;
  const handler = spec.handler;
  const gated: LunHandler = (cmd, lu) => gateOf(lu.unit).runShared(cmd, lu, rangeOf, handler);
  return { ...spec, handler: gated };
}
