/**
 * Shared state of one logical unit (one volume), keyed by volume id in the ScsiTarget and
 * shared by every nexus and every channel that maps the volume:
 *  - mode parameters that can change (WCE of the Caching mode page, SWP of the Control mode
 *    page);
 *  - the RESERVE(6) holder (SPC-2 reservation);
 *  - the persistent reservations (SPC-4 5.13, `pr`: see ./pr/);
 *  - per I_T nexus: pending unit attention conditions (SAM-5 5.14) and deferred errors
 *    (SPC-4 4.5.1).
 *
 * Nexuses are identified by object identity (`NexusKey`); the state never calls them.
 */
import { Asc } from "./asc.js";
import { Limits, SenseKey } from "./constants.js";
import { type Pacer, UNPACED } from "./pacer.js";
import type { ReservationStore } from "./pr/store.js";
import { PersistentReservations } from "./pr/unit.js";
import type { SenseSpec } from "./sense.js";
import type { NexusIdentity } from "./types.js";

/** Opaque identity of an I_T nexus. */
export type NexusKey = object;

interface NexusConditions {
  /** Unit attention ASC/ASCQ codes, oldest first. */
  attentions: number[];
  /** Deferred errors, oldest first. */
  deferred: SenseSpec[];
}

export interface LogicalUnitOptions {
  /** Where persistent reservation state goes while APTPL is set; none: APTPL unsupported. */
  readonly reservationStore?: ReservationStore;
  /** The open nexuses whose view maps this volume (persistent reservation unit attentions). */
  readonly nexuses?: () => Iterable<{ readonly identity: NexusIdentity }>;
  /** Paces the writes of a SANITIZE (shared by the target's units); none: unpaced. */
  readonly sanitizePacer?: Pacer;
}

export class LogicalUnitState {
  /** Caching mode page WCE (SBC-4): true = write-back cache reported, writes may be volatile. */
  writeCacheEnabled = true;
  /**
   * Control mode page SWP (SPC-4 7.5.8): true = software write protect, every command that
   * writes to the medium is refused with DATA PROTECT / WRITE PROTECTED, for every I_T nexus
   * (the Control page is shared: TST=000b, one task set for the logical unit, and there is no
   * Mode Page Policy VPD page making it per nexus). Set by MODE SELECT through a read-write
   * mapping; like WCE, not reverted by resets, and not saved across restarts (no saved pages).
   */
  softwareWriteProtect = false;
  /** The I_T nexus holding a RESERVE(6) reservation, if any. */
  reservationHolder: NexusKey | undefined;
  /**
   * Persistent reservations (SPC-4 5.13). Unlike the RESERVE(6) reservation they survive
   * logical unit resets, target resets and I_T nexus loss (SPC-4 5.13.1).
   */
  readonly pr: PersistentReservations;
  /** Paces the writes of a SANITIZE on this unit (./commands/sanitize.ts, ./pacer.ts). */
  readonly sanitizePacer: Pacer;
  /** Only nexuses with something pending have an entry, so the hot path checks `size`. */
  private readonly pending = new Map<NexusKey, NexusConditions>();

  constructor(
    readonly volumeId: string,
    options: LogicalUnitOptions = {},
  ) {
    const nexuses = options.nexuses ?? (() => []);
    this.sanitizePacer = options.sanitizePacer ?? UNPACED;
    this.pr = new PersistentReservations(volumeId, options.reservationStore, {
      nexuses,
      addUnitAttention: (nexus, asc) => this.addUnitAttention(nexus, asc),
    });
  }

  /** True when some nexus has a unit attention or deferred error pending on this unit. */
  get hasPending(): boolean {
    return this.pending.size !== 0;
  }

  /**
   * Establish a unit attention for `nexus`. Duplicates are not queued twice. Reset conditions
   * (ASC 29h) take precedence (SAM-5 5.14): they go first and replace older reset conditions.
   */
  addUnitAttention(nexus: NexusKey, asc: number): void {
    const c = this.conditions(nexus);
    const isReset = asc >>> 8 === 0x29;
    if (isReset) {
      c.attentions = c.attentions.filter((a) => a >>> 8 !== 0x29);
      c.attentions.unshift(asc);
    } else if (!c.attentions.includes(asc)) {
      c.attentions.push(asc);
    }
    if (c.attentions.length > Limits.MAX_PENDING_UNIT_ATTENTIONS) {
      // Keep the reset condition at the front; drop the oldest of the rest.
      c.attentions.splice(isReset || c.attentions[0]! >>> 8 === 0x29 ? 1 : 0, 1);
    }
  }

  /** Report-and-clear: the oldest unit attention for `nexus`, as sense data. */
  takeUnitAttention(nexus: NexusKey): SenseSpec | undefined {
    const c = this.pending.get(nexus);
    if (!c || c.attentions.length === 0) return undefined;
    const asc = c.attentions.shift()!;
    this.prune(nexus, c);
    return { key: SenseKey.UNIT_ATTENTION, asc };
  }

  /** Clear one unit attention code for `nexus` without reporting it. */
  clearUnitAttention(nexus: NexusKey, asc: number): void {
    const c = this.pending.get(nexus);
    if (!c) return;
    c.attentions = c.attentions.filter((a) => a !== asc);
    this.prune(nexus, c);
  }

  /** The unit attention codes pending for `nexus` (for tests and diagnostics). */
  pendingUnitAttentions(nexus: NexusKey): readonly number[] {
    return this.pending.get(nexus)?.attentions.slice() ?? [];
  }

  /** Queue a deferred error (e.g. a failed SYNCHRONIZE CACHE with IMMED=1) for `nexus`. */
  addDeferredError(nexus: NexusKey, sense: SenseSpec): void {
    this.conditions(nexus).deferred.push({ ...sense, deferred: true });
  }

  /** Report-and-clear: the oldest deferred error for `nexus`. */
  takeDeferredError(nexus: NexusKey): SenseSpec | undefined {
    const c = this.pending.get(nexus);
    if (!c || c.deferred.length === 0) return undefined;
    const sense = c.deferred.shift()!;
    this.prune(nexus, c);
    return sense;
  }

  /**
   * What a command that reports pending conditions must report first for `nexus`: a deferred
   * error, else a unit attention. Clears what it returns.
   */
  takeReportable(nexus: NexusKey): SenseSpec | undefined {
    return this.takeDeferredError(nexus) ?? this.takeUnitAttention(nexus);
  }

  /**
   * Logical unit reset (SAM-5 6.3.3): release the RESERVE(6) reservation and establish a reset
   * unit attention for every nexus in `nexuses`. Persistent reservations are not affected.
   */
  reset(nexuses: Iterable<NexusKey>, asc: number = Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED): void {
    this.reservationHolder = undefined;
    for (const n of nexuses) this.addUnitAttention(n, asc);
  }

  /**
   * I_T nexus loss: drop what was pending for it and release its RESERVE(6) reservation (its
   * persistent reservation registrations stay).
   */
  forgetNexus(nexus: NexusKey): void {
    this.pending.delete(nexus);
    if (this.reservationHolder === nexus) this.reservationHolder = undefined;
  }

  private conditions(nexus: NexusKey): NexusConditions {
    let c = this.pending.get(nexus);
    if (!c) {
      c = { attentions: [], deferred: [] };
      this.pending.set(nexus, c);
    }
    return c;
  }

  private prune(nexus: NexusKey, c: NexusConditions): void {
    if (c.attentions.length === 0 && c.deferred.length === 0) this.pending.delete(nexus);
  }
}
