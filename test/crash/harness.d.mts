/** Types of test/crash/harness.mjs (the crash harness; its header comment says what it checks). */

export declare const DEFAULT_CLI: string;

export interface CrashOptions {
  /** Kill points with writers running (default 10). */
  readonly iterations?: number;
  /** Seed of the PRNG that picks kill delays and seeds the writers (default: random, reported). */
  readonly seed?: number;
  /** `backend:` of the volumes; omitted (the config default, pool) when undefined. */
  readonly backend?: "pool" | "file";
  /** Volumes (default 2), each of `volumeMiB` MiB (default 32), 512-byte blocks. */
  readonly volumes?: number;
  readonly volumeMiB?: number;
  /** Writer processes per volume, on disjoint regions (default 2). */
  readonly writersPerVolume?: number;
  /** Commands in flight per writer (default 16). */
  readonly depth?: number;
  /** The kill comes this long after every writer logged in (default 200..2000 ms). */
  readonly minDelayMs?: number;
  readonly maxDelayMs?: number;
  /** Chance that the restart after a kill is itself killed once, during recovery (default 0.1). */
  readonly restartKillChance?: number;
  /** Violations kept in `details` (default 20). */
  readonly maxDetails?: number;
  /** sanmux entry point (default $SANMUX_CLI, else dist/cli/main.js). */
  readonly cli?: string;
  /** SANMUX_MASTER_KEY (64 hex; default random, the same for every restart of the run). */
  readonly masterKey?: string;
  /** A prebuilt test/tools/crash-writer (default: compiled with gcc into the work directory). */
  readonly writerBin?: string;
  /** Work directory (data/, logs, dumps); kept. Default: a temporary one, removed on success. */
  readonly workDir?: string;
  /** Keep the temporary work directory even on success (it is always kept on a violation). */
  readonly keep?: boolean;
  /** Progress lines (one per iteration, and the first violations). */
  readonly log?: (line: string) => void;
  /**
   * Fault injection, to test the harness itself: runs after each kill, before the restart, with
   * the server down.
   */
  readonly afterKill?: (at: { iteration: number; dataDir: string }) => Promise<void>;
}

export type ViolationKind =
  | "torn-or-garbage"
  | "phantom-version"
  | "reverted-to-zeros"
  | "lost-synced-write"
  | "no-restart"
  | "server-died"
  | "unreadable"
  | "harness";

export interface Violation {
  readonly seed: number;
  readonly iteration: number;
  readonly kind: ViolationKind;
  readonly volume?: number;
  /** Grain index in the volume, and its first LBA (512-byte blocks). */
  readonly grain?: number;
  readonly lba?: number;
  readonly expected?: string;
  readonly found?: string;
  readonly message?: string;
}

export interface IterationStats {
  readonly iteration: number;
  readonly killAfterMs: number;
  readonly writersReady: number;
  /** Exit code (3 = connection dropped, as expected) or signal of each writer. */
  readonly writerExits: ReadonlyArray<number | string | null>;
  /** Commands (a multi-grain write is one), acknowledged GOOD, of which with FUA. */
  readonly writesIssued: number;
  readonly writesAcked: number;
  readonly fuaAcked: number;
  /** SYNCHRONIZE CACHE commands that returned GOOD. */
  readonly syncs: number;
  readonly inFlightAtKill: number;
  readonly restartKilledAfterMs: number | undefined;
  readonly restartKillListened: boolean | undefined;
  /** Time from spawn to "listening" of the restart that was verified. */
  readonly restartMs: number;
  /** Log lines of that restart that speak of recovery, or warn (JSON, without pino's fields). */
  readonly recovery: readonly string[];
  readonly grainsChanged: number;
  /** Grains whose newest acknowledged (not synced) version did not survive: allowed. */
  readonly ackedButLost: number;
  readonly violations: number;
  readonly ms: number;
}

export interface CrashReport {
  readonly seed: number;
  readonly backend: string;
  readonly workDir: string;
  readonly iterations: number;
  /** SIGKILLs sent: one per iteration, plus those during restarts. */
  readonly killPoints: number;
  readonly writesIssued: number;
  readonly writesAcked: number;
  readonly fuaAcked: number;
  readonly syncs: number;
  readonly grainsChecked: number;
  readonly violations: number;
  readonly violationsByKind: Readonly<Partial<Record<ViolationKind, number>>>;
  /** The first `maxDetails` violations. */
  readonly details: readonly Violation[];
  /** Writes or syncs that returned a SCSI error status (the first `maxDetails`). */
  readonly commandErrors: readonly string[];
  readonly perIteration: readonly IterationStats[];
  /** Exit code of the last server after SIGTERM (0 = clean shutdown). */
  readonly finalStopCode: number | null;
}

export declare function runCrash(options?: CrashOptions): Promise<CrashReport>;
export declare function buildWriter(dir: string): Promise<string>;
export declare function summarize(report: CrashReport): string;
