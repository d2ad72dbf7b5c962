/**
 * The persistent reservations of one logical unit at run time: the current state, its loading
 * from the store, the serialization of PERSISTENT RESERVE OUT commands, and the delivery of
 * their unit attentions. Owned by LogicalUnitState (`unit.pr`).
 *
 * Loading: with a store, the state is unknown until `load()` resolved; the dispatcher makes
 * commands to the unit wait for it (SPC-4 5.13.5.2 allows refusing them with NOT READY while
 * nonvolatile memory is not ready; waiting is kinder). A load that fails leaves the unit
 * "failed": every command retries the load, and gets HARDWARE ERROR while it keeps failing
 * (SPC-4 5.13.5.3.3 b, unrecoverable loss of persistent reservation information).
 *
 * Each PERSISTENT RESERVE OUT runs alone (SPC-4 5.13.1: "each is processed as a single
 * indivisible command"): `serialize` queues them. Within one, the new state is computed, saved
 * when APTPL is (or was) set, and only then becomes current (`commit`), so that GOOD means
 * durable (SPC-4 5.13.5.1) and a failed save changes nothing. Other commands check against
 * the current state while a save is in flight, which SPC-4 5.13.1 allows ("the time at which a
 * reservation is established with respect to other commands ... is vendor specific").
 */
import type { NexusIdentity } from "../types.js";
import type { Attention } from "./out.js";
import { appliesTo, EMPTY_STATE, type PrState, prNexusOf } from "./state.js";
import type { ReservationStore } from "./store.js";

/** What the unit's persistent reservations need from their surroundings. */
export interface PrHost {
  /** The open nexuses whose view maps this unit's volume. */
  nexuses(): Iterable<{ readonly identity: NexusIdentity }>;
  /** Establish a unit attention for one of those nexuses. */
  addUnitAttention(nexus: object, asc: number): void;
}

const NO_NEXUSES: PrHost["nexuses"] = () => [];

export class PersistentReservations {
  private current: PrState = EMPTY_STATE;
  private phase: "unloaded" | "loading" | "ready" | "failed";
  private loading: Promise<void> | undefined;
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    readonly volumeId: string,
    private readonly store: ReservationStore | undefined,
    private readonly host: PrHost = { nexuses: NO_NEXUSES, addUnitAttention() {} },
  ) {
    this.phase = store ? "unloaded" : "ready";
  }

  /** The committed state. */
  get state(): PrState {
    return this.current;
  }

  /** The state is known (loaded, or there is no store). */
  get ready(): boolean {
    return this.phase === "ready";
  }

  /** Some I_T nexus is registered (a persistent reservation needs one). */
  get registered(): boolean {
    return this.current.registrations.length !== 0;
  }

  /** APTPL=1 can be honoured (PTPL_C, SPC-4 6.15.4). */
  get aptplSupported(): boolean {
    return this.store !== undefined;
  }

  /** Load the saved state (once; again after a failure). Rejects with the store's error. */
  load(): Promise<void> {
    if (this.phase === "ready") return Promise.resolve();
    if (this.loading) return this.loading;
    const store = this.store!;
    this.phase = "loading";
    this.loading = store.load(this.volumeId).then(
      (saved) => {
        // A restart is a power on: PRgeneration starts again at zero (SPC-4 6.15.2), whatever
        // APTPL kept of the registrations and the reservation.
        this.current = saved ? { ...saved, generation: 0 } : EMPTY_STATE;
        this.phase = "ready";
        this.loading = undefined;
      },
      (err: unknown) => {
        this.phase = "failed";
        this.loading = undefined;
        throw err;
      },
    );
    return this.loading;
  }

  /** Run `fn` after every PERSISTENT RESERVE OUT queued before it has finished. */
  serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Make `next` the current state, after saving it when APTPL is set, or forgetting the saved
   * state when APTPL was set and no longer is. Call within `serialize`. Rejects (and changes
   * nothing) when the store fails.
   */
  async commit(next: PrState): Promise<void> {
    const prev = this.current;
    if (next === prev) return;
    if (this.store && (next.aptpl || prev.aptpl)) {
      await this.store.save(this.volumeId, next.aptpl ? next : undefined);
    }
    this.current = next;
  }

  /**
   * Establish `attentions` on every open nexus their registrations apply to, except `sender`
   * (the nexus the PERSISTENT RESERVE OUT came through).
   */
  notify(attentions: readonly Attention[], sender: object): void {
    if (attentions.length === 0) return;
    for (const nexus of this.host.nexuses()) {
      if (nexus === sender) continue;
      const n = prNexusOf(nexus.identity);
      for (const a of attentions) {
        if (a.to.some((r) => appliesTo(r, n))) this.host.addUnitAttention(nexus, a.asc);
      }
    }
  }

  /** Relative target port identifiers the device server knows: those of open nexuses. */
  targetPorts(sender: NexusIdentity): Set<number> {
    const ports = new Set([sender.tpgt]);
    for (const nexus of this.host.nexuses()) ports.add(nexus.identity.tpgt);
    return ports;
  }
}
