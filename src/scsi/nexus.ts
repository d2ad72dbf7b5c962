/**
 * One I_T nexus (one iSCSI session): routes commands to handlers through the dispatch table,
 * after the checks SAM-5 orders before a command runs.
 *
 * For each command:
 *  1. the LUN is looked up in the view. Outside it, only "nexus" commands (INQUIRY,
 *     REPORT LUNS, REQUEST SENSE) run; anything else is ILLEGAL REQUEST / LOGICAL UNIT NOT
 *     SUPPORTED (SPC-4, "incorrect logical unit": INQUIRY answers with qualifier 011b, REQUEST
 *     SENSE returns the sense as data, REPORT LUNS works from any LUN).
 *  2. unless the command is INQUIRY, REPORT LUNS or REQUEST SENSE, a pending deferred error or
 *     unit attention of this nexus on this logical unit is reported (CHECK CONDITION) and
 *     cleared, before the CDB is even validated (SAM-5 5.14);
 *  3. the CDB is validated against the command's usage map;
 *  4. reservations (`admit`): a RESERVE(6) reservation held by another nexus, or a persistent
 *     reservation the command conflicts with, answers RESERVATION CONFLICT (see ./pr/access.ts
 *     for what each row of the dispatch table is under a reservation);
 *  5. the handler runs.
 * Before step 2, a command to a unit whose persistent reservations are still being loaded
 * waits for them (./pr/unit.ts); INQUIRY, REPORT LUNS and REQUEST SENSE do not wait.
 * Handlers throw `CheckCondition` for validation failures and catch their own volume failures,
 * so the hot path is one synchronous call plus the handler's single await on the volume.
 */

import { isAbortError } from "../volume/errors.js";
import type { CommandSignal, WriteReservation } from "../volume/volume.js";
import { Asc } from "./asc.js";
import { validateCdbUsage } from "./cdb.js";
import { GOOD, TASK_ABORTED } from "./commands/common.js";
import { SenseKey } from "./constants.js";
import type { LunContext, NexusContext } from "./context.js";
import { type CommandSpec, lookupCommand, RESERVATION_CONFLICT } from "./dispatch.js";
import { conflictsWithPersistentReservation, legacyReserveOutcome } from "./pr/access.js";
import { type PrNexus, prNexusOf } from "./pr/state.js";
import { CheckCondition, checkCondition, checkConditionResult } from "./sense.js";
import { type ScsiLogger, senseForFailure } from "./sense-map.js";
import type {
  LunEntry,
  LunView,
  NexusIdentity,
  ScsiCommand,
  ScsiResult,
  TargetInfo,
} from "./types.js";
import type { LogicalUnitState } from "./unit-state.js";

/** What a nexus needs from the target that owns it. */
export interface NexusHost {
  readonly info: TargetInfo;
  readonly logger: ScsiLogger;
  unitOf(volumeId: string): LogicalUnitState;
  raiseUnitAttention(volumeId: string, asc: number, except?: NexusContext): void;
  /** Logical unit reset of a volume: UA `asc` on every nexus mapping it, reservation released. */
  resetUnit(volumeId: string, asc: number): void;
  detach(nexus: Nexus): void;
}

const LUN_NOT_SUPPORTED = { key: SenseKey.ILLEGAL_REQUEST, asc: Asc.LOGICAL_UNIT_NOT_SUPPORTED };

export class Nexus implements NexusContext {
  readonly info: TargetInfo;
  readonly logger: ScsiLogger;
  /** LunContext per LUN, rebuilt when the view hands out a different entry. */
  private readonly bound = new Map<number, LunContext>();
  private closed = false;
  /** How persistent reservations see this I_T nexus. */
  private readonly prNexus: PrNexus;
  /** Commands that settle early when aborted (`onAbort`): usually empty. */
  private readonly abortHooks = new Map<ScsiCommand, () => void>();

  constructor(
    readonly identity: NexusIdentity,
    readonly view: LunView,
    private readonly host: NexusHost,
  ) {
    this.info = host.info;
    this.logger = host.logger;
    this.prNexus = prNexusOf(identity);
  }

  execute(cmd: ScsiCommand): Promise<ScsiResult> {
    let lu: LunContext | undefined;
    try {
      const entry = this.view.get(cmd.lun);
      lu = entry ? this.bind(entry) : undefined;
      const result = this.run(cmd, lu);
      return result instanceof Promise ? result : Promise.resolve(result);
    } catch (err) {
      return Promise.resolve(this.failure(err, cmd, lu));
    }
  }

  private run(cmd: ScsiCommand, lu: LunContext | undefined): ScsiResult | Promise<ScsiResult> {
    const cdb = cmd.cdb;
    if (cdb.length === 0)
      throw checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE);
    const spec = lookupCommand(cdb);
    if (!lu) {
      if (spec.scope !== "nexus") return checkConditionResult(LUN_NOT_SUPPORTED);
      this.validate(cdb, spec);
      return spec.handler(cmd, this, undefined);
    }
    if (spec.scope === "lun" && !lu.unit.pr.ready) return this.afterLoad(cmd, lu);
    return this.runOnUnit(cmd, spec, lu);
  }

  private runOnUnit(
    cmd: ScsiCommand,
    spec: CommandSpec,
    lu: LunContext,
  ): ScsiResult | Promise<ScsiResult> {
    const cdb = cmd.cdb;
    const unit = lu.unit;
    if (!spec.allowedWithUnitAttention && unit.hasPending) {
      const pending = unit.takeReportable(this);
      if (pending) return checkConditionResult(pending);
    }
    this.validate(cdb, spec);
    if (unit.reservationHolder !== undefined || unit.pr.registered) {
      const refused = this.admit(spec, cdb, lu);
      if (refused) return refused;
    }
    return spec.scope === "lun" ? spec.handler(cmd, lu) : spec.handler(cmd, this, lu);
  }

  /** Wait until the unit's persistent reservations are loaded, then run the command. */
  private async afterLoad(cmd: ScsiCommand, lu: LunContext): Promise<ScsiResult> {
    try {
      await lu.unit.pr.load();
      return await this.runOnUnit(cmd, lookupCommand(cmd.cdb), lu);
    } catch (err) {
      return this.failure(err, cmd, lu);
    }
  }

  /**
   * Reservation checks: undefined when the command may run, else its result (RESERVATION
   * CONFLICT, or GOOD for a RESERVE(6)/RELEASE(6) that SPC-4 5.13.3 completes without effect).
   */
  private admit(spec: CommandSpec, cdb: Buffer, lu: LunContext): ScsiResult | undefined {
    const access =
      typeof spec.reservation === "function" ? spec.reservation(cdb) : spec.reservation;
    const holder = lu.unit.reservationHolder;
    if (holder !== undefined) {
      // SPC-2 5.5.1: while a RESERVE(6) reservation exists, PERSISTENT RESERVE IN and OUT
      // conflict whoever sends them; other commands conflict from other nexuses as the table
      // says. (No I_T nexus can be registered then: REGISTER conflicts.)
      if (access === "persistent-reserve") return RESERVATION_CONFLICT;
      return spec.conflictsWithReservation && holder !== this ? RESERVATION_CONFLICT : undefined;
    }
    const state = lu.unit.pr.state;
    switch (access) {
      case "persistent-reserve":
        return undefined;
      case "reserve-release":
        return legacyReserveOutcome(state, this.prNexus) === "good" ? GOOD : RESERVATION_CONFLICT;
      default:
        return conflictsWithPersistentReservation(state, this.prNexus, access)
          ? RESERVATION_CONFLICT
          : undefined;
    }
  }

  private validate(cdb: Buffer, spec: CommandSpec): void {
    if (!spec.supported) return;
    if (cdb.length < spec.cdbLength) {
      throw checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_FIELD_IN_CDB);
    }
    validateCdbUsage(cdb, spec.usage);
  }

  private failure(err: unknown, cmd: ScsiCommand, lu: LunContext | undefined): ScsiResult {
    if (err instanceof CheckCondition) return checkConditionResult(err.sense, err.dataOutLength);
    if (isAbortError(err)) return TASK_ABORTED;
    const sense = senseForFailure(err, this.logger, {
      volumeId: lu?.entry.volumeId ?? "",
      lun: cmd.lun,
      opcode: cmd.cdb[0] ?? -1,
    });
    return checkConditionResult(sense);
  }

  private bind(entry: LunEntry): LunContext {
    const cached = this.bound.get(entry.lun);
    if (cached && cached.entry === entry) return cached;
    const lu: LunContext = { nexus: this, entry, unit: this.host.unitOf(entry.volumeId) };
    this.bound.set(entry.lun, lu);
    return lu;
  }

  unitOf(volumeId: string): LogicalUnitState {
    return this.host.unitOf(volumeId);
  }

  raiseUnitAttention(volumeId: string, asc: number, except?: NexusContext): void {
    this.host.raiseUnitAttention(volumeId, asc, except);
  }

  /** True when the view currently maps `volumeId` under some LUN. */
  maps(volumeId: string): boolean {
    return this.view.list().some((e) => e.volumeId === volumeId);
  }

  onAbort(cmd: ScsiCommand, hook: () => void): () => void {
    this.abortHooks.set(cmd, hook);
    return () => {
      if (this.abortHooks.get(cmd) === hook) this.abortHooks.delete(cmd);
    };
  }

  /** The transport aborted `cmd` (see ScsiNexus.abortTask). */
  abortTask(cmd: ScsiCommand): void {
    const hook = this.abortHooks.get(cmd);
    if (hook === undefined) return;
    this.abortHooks.delete(cmd);
    hook();
  }

  /**
   * Reserve the turn of a write whose data has not arrived (see ScsiNexus.admitWrite): through
   * the LUN's volume (Volume.reserveWrite, the arbiter), when it has one.
   */
  admitWrite(
    lun: number,
    bytes: number,
    signal: CommandSignal,
  ): Promise<WriteReservation> | undefined {
    if (this.closed) return undefined;
    const entry = this.view.get(lun);
    if (entry === undefined || entry.readOnly) return undefined;
    const volume = entry.volume;
    return volume.reserveWrite === undefined ? undefined : volume.reserveWrite(bytes, signal);
  }

  /** TMF LOGICAL UNIT RESET (SAM-5 7.8): reset the unit behind `lun` for every nexus. */
  lunReset(lun: number): void {
    const entry = this.view.get(lun);
    if (entry) this.host.resetUnit(entry.volumeId, Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED);
  }

  /**
   * TMF TARGET WARM RESET: a hard reset (SAM-5 6.3.2) of every logical unit this initiator can
   * address (RFC 7143: "all LUs known by the issuing initiator"; other agents' volumes are not
   * ours to reset). Unit attention POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29h/00h),
   * the generic reset code SAM-5 allows for a hard reset.
   */
  targetReset(): void {
    const seen = new Set<string>();
    for (const entry of this.view.list()) {
      if (seen.has(entry.volumeId)) continue;
      seen.add(entry.volumeId);
      this.host.resetUnit(entry.volumeId, Asc.POWER_ON_RESET_OCCURRED);
    }
  }

  /**
   * I_T nexus loss: forget pending conditions and release reservations held by this nexus. Its
   * tasks are aborted (SAM-5 6.3.4), which settles those waiting in `onAbort`.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.bound.clear();
    for (const cmd of [...this.abortHooks.keys()]) this.abortTask(cmd);
    this.host.detach(this);
  }
}
