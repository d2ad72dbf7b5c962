/**
 * What a command handler sees. Handlers never hold on to these beyond the command.
 */
import type { ScsiLogger } from "./sense-map.js";
import type {
  LunEntry,
  LunView,
  NexusIdentity,
  ScsiCommand,
  ScsiResult,
  TargetInfo,
} from "./types.js";
import type { LogicalUnitState } from "./unit-state.js";

/** One I_T nexus as handlers see it. Also the key of its per-nexus entries in unit state. */
export interface NexusContext {
  readonly identity: NexusIdentity;
  readonly info: TargetInfo;
  readonly logger: ScsiLogger;
  readonly view: LunView;
  /** Shared state of the logical unit backing a volume (created on first use). */
  unitOf(volumeId: string): LogicalUnitState;
  /**
   * Establish a unit attention on every open nexus whose view maps `volumeId`; `except` (when
   * given) is left out, e.g. the nexus whose MODE SELECT changed the parameters.
   */
  raiseUnitAttention(volumeId: string, asc: number, except?: NexusContext): void;
  /**
   * Call `hook` if the transport aborts `cmd` (ScsiNexus.abortTask) before the returned function
   * is called. For the rare command whose result need not wait for its work (SANITIZE, IMMED=0);
   * every other command simply runs to its end.
   */
  onAbort(cmd: ScsiCommand, hook: () => void): () => void;
}

/** One addressed logical unit: the nexus, the mapping and the shared unit state. */
export interface LunContext {
  readonly nexus: NexusContext;
  readonly entry: LunEntry;
  readonly unit: LogicalUnitState;
}

/** A command addressed to a logical unit in the initiator's view. */
export type LunHandler = (cmd: ScsiCommand, lu: LunContext) => ScsiResult | Promise<ScsiResult>;

/**
 * A command that also works for a LUN outside the view (INQUIRY, REPORT LUNS, REQUEST SENSE):
 * `lu` is undefined then.
 */
export type NexusHandler = (
  cmd: ScsiCommand,
  nexus: NexusContext,
  lu: LunContext | undefined,
) => ScsiResult | Promise<ScsiResult>;
