/**
 * The declarative config file: which agents exist, which volumes, and which agent sees which
 * volume at which LUN. Parsed with `yaml` (keeping every node's position) and validated with
 * `zod` strict schemas, then with the cross-reference rules zod cannot express.
 *
 * Every problem is reported as `<file>:<line>: <path>: <problem>`, e.g.
 *   sanmux.yaml:14: mappings[1].volume: unknown volume "vol9"
 * and all problems of a file are reported at once (one per line of the message), sorted by line.
 *
 * Compatibility: the file format only grows. New keys are optional with a default, so that
 * every file that was valid stays valid with the same meaning. Keys are snake_case in YAML and
 * camelCase in the TypeScript types.
 */
import { readFile } from "node:fs/promises";
import { hostname } from "node:os";
import { isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument } from "yaml";
import { z } from "zod";
import type { BalanceMode, CapacityRules, SpeedLimits } from "../arbiter/policy.js";
import { isErrnoException } from "../util/atomic-file.js";
import { NAME_PATTERN, NAME_RULE } from "../util/names.js";
import {
  ISCSI_NAME_MAX_BYTES,
  iqnSuffixFromHostName,
  iscsiNameProblem,
  normalizeIscsiName,
} from "./iscsi-name.js";

// ---------------------------------------------------------------------------------------------
// Types of a validated config

export type BlockSize = 512 | 4096;
export type AccessMode = "rw" | "ro";
/**
 * Where a volume's blocks live: "pool" (the deduplicated, compressed, encrypted shared pool, the
 * default) or "file" (one sparse file per volume in the data directory).
 */
export type VolumeBackend = "pool" | "file";

/** The dedup domain every agent and pool volume belongs to unless the config names another. */
export const SHARED_DOMAIN = "shared";

export interface ChapConfig {
  /** CHAP_N the initiator must send. */
  readonly user: string;
  /** Secret the initiator proves it knows (12..255 bytes). */
  readonly secret: string;
  /** Mutual CHAP: CHAP_N the target answers with. Set together with `targetSecret`. */
  readonly targetUser?: string;
  /** Mutual CHAP: secret the target proves it knows; never equal to any initiator secret. */
  readonly targetSecret?: string;
}

/**
 * How persistent reservation registrations (SPC-4 5.13.7) of the agent's sessions are keyed:
 * "nexus" (the standard: initiator name + ISID, and target port) or "initiator" (initiator
 * name and target port only: a re-login with a new ISID keeps the registration).
 */
export type ReservationKeyBy = "nexus" | "initiator";

export interface ReservationsConfig {
  readonly keyBy: ReservationKeyBy;
}

export interface AgentConfig {
  readonly name: string;
  /** Initiator names as written in the file (compare with `normalizeIscsiName`). */
  readonly initiators: readonly string[];
  readonly chap?: ChapConfig;
  /** Persistent reservation options; absent means `{ keyBy: "nexus" }`. */
  readonly reservations?: ReservationsConfig;
  /**
   * Dedup domain of the agent's pool volumes: its own keys, and dedup only with volumes of the
   * same domain. Default `SHARED_DOMAIN`.
   */
  readonly domain: string;
  /** Share of the server under contention, relative to other agents (absent: 1). */
  readonly weight?: number;
  /** Capacity limit, reservation and soft threshold (docs/arbitration.md). */
  readonly capacity?: CapacityRules;
  /** Speed limits of the agent as a whole, across all its volumes and sessions. */
  readonly limits?: SpeedLimits;
  /**
   * Commands each session of the agent may have outstanding: the CmdSN window its initiators
   * get (MaxCmdSN). Absent: `iscsi.queueDepth`, else the target's default (128).
   */
  readonly queueDepth?: number;
}

export type { BalanceMode, CapacityRules, SpeedLimits };

export interface VolumeConfig {
  readonly name: string;
  /** Capacity in bytes: positive, a multiple of `blockSize`. */
  readonly size: number;
  readonly blockSize: BlockSize;
  readonly backend: VolumeBackend;
  /**
   * Dedup domain (pool volumes): the volume's own `domain:`, else the domain of the agents that
   * map it read-write (they must agree), else `SHARED_DOMAIN`.
   */
  readonly domain: string;
  /** Write-back cache (WCE=1, the default) or write-through (every write durable before GOOD). */
  readonly writeCache: boolean;
  /** Speed limits of the volume, shared by every agent that maps it. */
  readonly limits?: SpeedLimits;
}

export interface MappingConfig {
  readonly agent: string;
  readonly lun: number;
  /**
   * What the LUN shows: a volume's name, or for a snapshot `volume@snapshot` (names cannot
   * contain "@"), so that every layer above keys LUNs by this one string.
   */
  readonly volume: string;
  readonly mode: AccessMode;
  /** Set for a snapshot mapping: the volume and the snapshot's name (always read-only). */
  readonly snapshot?: { readonly volume: string; readonly name: string };
}

/** The LUN key of a snapshot mapping (see MappingConfig.volume). */
export function snapshotKey(volume: string, snapshot: string): string {
  return `${volume}@${snapshot}`;
}

/**
 * Target-side iSCSI settings (docs/iscsi.md). Each is optional: unset keeps sanmux's default.
 * Login keys are what sanmux offers or accepts at most; the initiator still negotiates.
 */
export interface IscsiSettings {
  readonly immediateData?: boolean;
  readonly initialR2T?: boolean;
  readonly maxRecvDataSegmentLength?: number;
  readonly maxBurstLength?: number;
  readonly firstBurstLength?: number;
  readonly maxOutstandingR2T?: number;
  /** Commands one session may have outstanding (the CmdSN window). */
  readonly queueDepth?: number;
  /** Seconds of silence before a NOP-In ping; 0 disables. */
  readonly nopInterval?: number;
  /** Seconds to wait for the ping's answer. */
  readonly nopTimeout?: number;
}

export interface SanmuxConfig {
  /** The iSCSI target name; the default is derived from the host name (`defaultTargetName`). */
  readonly target: string;
  readonly iscsi: IscsiSettings;
  readonly agents: readonly AgentConfig[];
  readonly volumes: readonly VolumeConfig[];
  readonly mappings: readonly MappingConfig[];
  readonly pool: PoolSettings;
}

/** The `pool:` section. */
export interface PoolSettings {
  /** Extra device directories the pool spans, besides DATA/pool (absolute paths). */
  readonly devices: readonly string[];
  /** Fraction of the pool at which the soft-threshold warning fires (absent: 0.8). */
  readonly softThreshold?: number;
  /** Lend unused weight to agents whose queues back up (absent: "off"). */
  readonly balance?: BalanceMode;
  /**
   * Commands in the volumes, or with their response being sent, at once, server-wide: the
   * arbiter's budget; more queue and leave by weight (absent: 64).
   */
  readonly concurrency?: number;
  /** The most bytes the pool may store (its size for quotas, reservations and thresholds). */
  readonly maxSize?: number;
  /** Seconds between background GC passes; 0 turns them off (absent: 600). */
  readonly gcInterval?: number;
  /** Bytes of plaintext grains kept for readers of the same grains; 0: none (absent: 64 MiB). */
  readonly cacheSize?: number;
}

// ---------------------------------------------------------------------------------------------
// Constants

export const DEFAULT_BLOCK_SIZE: BlockSize = 512;
export const BLOCK_SIZES: readonly BlockSize[] = [512, 4096];
/** Highest LUN: the flat / peripheral addressing methods of SAM-5 4.7 reach 0..16383. */
export const MAX_LUN = 16383;
/** RFC 7143 9.2.1: a CHAP secret with fewer than 96 random bits is unsafe without IPsec. */
export const CHAP_SECRET_MIN_BYTES = 12;
export const CHAP_SECRET_MAX_BYTES = 255;
export const CHAP_USER_MAX_BYTES = 255;
/** Naming authority of default target names (RFC 7143 4.2.7.4). */
export const TARGET_IQN_PREFIX = "iqn.2026-11.io.sanmux";

/**
 * The config the server writes when it is started without one: agent `demo`, one 1 GiB volume
 * `demo`, mapped read-write at LUN 0.
 */
export const DEMO_CONFIG_YAML = `# sanmux config: the desired agents, volumes and mappings.
# Written by sanmux because it was started without a config file; edit it freely.

# target: ${TARGET_IQN_PREFIX}:demo   # default: derived from this machine's host name

agents:
  - name: demo
    initiators: [${TARGET_IQN_PREFIX}:demo-initiator]
    # chap: { user: demo, secret: "at-least-12-chars" }   # mutual: add target_user, target_secret
    # reservations: { key_by: initiator }   # keep SCSI-3 PR registrations across re-logins
    # domain: private1   # dedup only with this domain's volumes, under its own keys
    # weight: 2          # share of the server when it is busy (default 1)
    # capacity: { limit: 2TiB, reserved: 500GiB, soft_threshold: 80% }
    # limits: { read_bps: 200MB, write_bps: 100MB, iops: 5000, burst: 1s }

volumes:
  - name: demo
    size: 1GiB
    block_size: 512
    # backend: pool      # pool (default: thin, deduplicated, compressed, encrypted) or file
    # write_cache: true  # false: every write is durable before it is acknowledged (WCE=0)

# pool: { devices: [/srv/disk2/sanmux] }   # more directories for the pool's containers
# pool: { soft_threshold: 85%, balance: auto }   # warn at 85% full; lend idle agents' shares

mappings:
  - { agent: demo, lun: 0, volume: demo, mode: rw }
`;

/** The target name used when the config names none: `iqn.2026-11.io.sanmux:<host name>`. */
export function defaultTargetName(hostName: string = hostname()): string {
  const prefix = `${TARGET_IQN_PREFIX}:`;
  const suffix = iqnSuffixFromHostName(hostName).slice(0, ISCSI_NAME_MAX_BYTES - prefix.length);
  return `${prefix}${suffix.replace(/[.-]+$/, "")}`;
}

// ---------------------------------------------------------------------------------------------
// Sizes

const SIZE_UNITS: Readonly<Record<string, bigint>> = {
  b: 1n,
  kib: 1n << 10n,
  mib: 1n << 20n,
  gib: 1n << 30n,
  tib: 1n << 40n,
  kb: 1000n,
  mb: 1000n ** 2n,
  gb: 1000n ** 3n,
  tb: 1000n ** 4n,
};
const SIZE_SYNTAX = /^(\d+)(?:\.(\d+))?\s*([a-z][a-z0-9]*)?$/i;
const SIZE_HINT = "a number with an optional unit B, KiB, MiB, GiB, TiB, KB, MB, GB or TB";

/**
 * Parse a size such as "10GiB", "1.5 TiB", "500MB" or "4096" (plain numbers are bytes) into
 * bytes. Binary units are powers of 1024, decimal ones powers of 1000; units are
 * case-insensitive. Fractions are allowed when the result is a whole number of bytes. Throws a
 * RangeError for anything else, or when the result exceeds Number.MAX_SAFE_INTEGER.
 */
export function parseSize(text: string): number {
  const m = SIZE_SYNTAX.exec(text.trim());
  if (m === null) throw new RangeError(`"${text}" is not a size: expected ${SIZE_HINT}`);
  const unit = SIZE_UNITS[(m[3] ?? "b").toLowerCase()];
  if (unit === undefined) {
    throw new RangeError(`"${text}" has an unknown unit "${m[3]}": expected ${SIZE_HINT}`);
  }
  const fraction = m[2] ?? "";
  const scale = 10n ** BigInt(fraction.length);
  const scaled = BigInt(`${m[1]}${fraction}`) * unit;
  if (scaled % scale !== 0n) throw new RangeError(`"${text}" is not a whole number of bytes`);
  const bytes = scaled / scale;
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`"${text}" is too large`);
  return Number(bytes);
}

/** Format bytes with the largest binary unit that divides them exactly: 1073741824 → "1 GiB". */
export function formatSize(bytes: number): string {
  for (const [unit, factor] of [
    ["TiB", 2 ** 40],
    ["GiB", 2 ** 30],
    ["MiB", 2 ** 20],
    ["KiB", 2 ** 10],
  ] as const) {
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor} ${unit}`;
  }
  return `${bytes} B`;
}

// ---------------------------------------------------------------------------------------------
// Errors

export interface ConfigIssue {
  /** Where in the document, e.g. `mappings[1].volume`; empty for the document as a whole. */
  readonly path: string;
  readonly message: string;
  /** 1-based line, when the problem has a position. */
  readonly line?: number;
  /** 1-based column, when the problem has a position. */
  readonly column?: number;
}

/** A config file that cannot be used; `message` lists every issue, one per line. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(
    readonly fileName: string,
    readonly issues: readonly ConfigIssue[],
  ) {
    super(issues.map((issue) => formatIssue(fileName, issue)).join("\n"));
  }

  /** Line of the first issue. */
  get line(): number | undefined {
    return this.issues[0]?.line;
  }
}

function formatIssue(fileName: string, issue: ConfigIssue): string {
  const where = issue.line === undefined ? fileName : `${fileName}:${issue.line}`;
  return issue.path === ""
    ? `${where}: ${issue.message}`
    : `${where}: ${issue.path}: ${issue.message}`;
}

// ---------------------------------------------------------------------------------------------
// Schemas of the file (snake_case, as written)

const nameSchema = z.string().superRefine((value, ctx) => {
  if (!NAME_PATTERN.test(value)) {
    ctx.addIssue({ code: "custom", message: `"${value}" is not a valid name: use ${NAME_RULE}` });
  }
});

const iscsiNameSchema = z.string().superRefine((value, ctx) => {
  const problem = iscsiNameProblem(value);
  if (problem !== undefined) {
    ctx.addIssue({ code: "custom", message: `"${value}" is not a valid iSCSI name: ${problem}` });
  }
});

const chapUserSchema = z.string().superRefine((value, ctx) => {
  const bytes = Buffer.byteLength(value, "utf8");
  if (bytes === 0 || bytes > CHAP_USER_MAX_BYTES || /[\p{Cc}]/u.test(value)) {
    ctx.addIssue({
      code: "custom",
      message: `must be 1 to ${CHAP_USER_MAX_BYTES} bytes without control characters`,
    });
  }
});

const chapSecretSchema = z.string().superRefine((value, ctx) => {
  const bytes = Buffer.byteLength(value, "utf8");
  if (bytes < CHAP_SECRET_MIN_BYTES || bytes > CHAP_SECRET_MAX_BYTES) {
    ctx.addIssue({
      code: "custom",
      message: `must be ${CHAP_SECRET_MIN_BYTES} to ${CHAP_SECRET_MAX_BYTES} bytes long (it is ${bytes})`,
    });
  }
});

/**
 * A positive byte count, as a number or as a string parseSize understands. Rates (bytes per
 * second) also take a trailing "/s" ("20MB/s") and fractional numbers; sizes are whole bytes.
 */
function byteCountSchema(kind: "size" | "rate") {
  const rate = kind === "rate";
  return z.unknown().transform((value, ctx): number => {
    if (typeof value === "number") {
      const ok = rate ? Number.isFinite(value) : Number.isSafeInteger(value);
      if (ok && value > 0) return value;
      const what = rate ? "number of bytes per second" : "whole number of bytes";
      ctx.addIssue({ code: "custom", message: `${value} is not a positive ${what}` });
      return z.NEVER;
    }
    if (typeof value === "string") {
      try {
        const bytes = parseSize(rate ? value.replace(/\s*\/\s*s$/i, "") : value);
        if (bytes > 0) return bytes;
        ctx.addIssue({ code: "custom", message: `"${value}" is not positive` });
      } catch (error) {
        ctx.addIssue({ code: "custom", message: (error as Error).message });
      }
      return z.NEVER;
    }
    const expected = rate ? "a rate like 20MB (bytes per second)" : "a size like 10GiB";
    ctx.addIssue({
      code: "custom",
      message: value === undefined ? "required" : `expected ${expected}, got ${describe(value)}`,
    });
    return z.NEVER;
  });
}

const sizeSchema = byteCountSchema("size");
/** A size, or 0 / "off" for none (`pool.cache_size`). */
const sizeOrOffSchema = z.unknown().transform((value, ctx): number => {
  if (value === 0 || value === "0" || value === "off") return 0;
  const parsed = sizeSchema.safeParse(value);
  if (parsed.success) return parsed.data;
  for (const issue of parsed.error.issues) ctx.addIssue({ code: "custom", message: issue.message });
  return z.NEVER;
});

/** A byte count that may be 0 (a reservation). */
const sizeOrZeroSchema = z.unknown().transform((value, ctx): number => {
  if (value === 0 || value === "0") return 0;
  const result = sizeSchema.safeParse(value);
  if (result.success) return result.data;
  for (const issue of result.error.issues) ctx.addIssue({ code: "custom", message: issue.message });
  return z.NEVER;
});

/** Bytes per second: a size ("20MB", "20MiB", "20MB/s") or a plain number of bytes. */
const rateSchema = byteCountSchema("rate");

/** Commands per second: a positive number. */
const iopsSchema = z.unknown().transform((value, ctx): number => {
  if (typeof value === "number" && Number.isFinite(value) && value > 0) return value;
  ctx.addIssue({
    code: "custom",
    message: `expected a positive number of commands per second, got ${describe(value)}`,
  });
  return z.NEVER;
});

/** Seconds: a positive number, or "1s", "500ms"; at most an hour. */
const durationSchema = z.unknown().transform((value, ctx): number => {
  let seconds: number | undefined;
  if (typeof value === "number") seconds = value;
  else if (typeof value === "string") {
    const m = /^(\d+(?:\.\d+)?)\s*(ms|s)?$/i.exec(value.trim());
    if (m) seconds = Number(m[1]) / (m[2]?.toLowerCase() === "ms" ? 1000 : 1);
  }
  if (seconds !== undefined && Number.isFinite(seconds) && seconds > 0 && seconds <= 3600) {
    return seconds;
  }
  ctx.addIssue({
    code: "custom",
    message: `expected a duration like 1s or 500ms (more than 0, at most 3600s), got ${describe(value)}`,
  });
  return z.NEVER;
});

/** Seconds between periodic jobs: "30s", "10m", "1h", a number of seconds, or 0 / "off". */
const intervalSchema = z.unknown().transform((value, ctx): number => {
  if (value === 0 || value === "0" || value === "off") return 0;
  const units: Record<string, number> = { s: 1, m: 60, h: 3600 };
  let seconds: number | undefined;
  if (typeof value === "number") seconds = value;
  else if (typeof value === "string") {
    const m = /^(\d+(?:\.\d+)?)\s*([smh])?$/i.exec(value.trim());
    if (m) seconds = Number(m[1]) * (units[m[2]?.toLowerCase() ?? "s"] ?? 1);
  }
  if (seconds !== undefined && Number.isFinite(seconds) && seconds >= 1 && seconds <= 7 * 86400) {
    return seconds;
  }
  ctx.addIssue({
    code: "custom",
    message: `expected an interval like 10m, 30s or 1h (1s to 7 days), or off, got ${describe(value)}`,
  });
  return z.NEVER;
});

/** A percentage "80%" (more than 0, at most 100), as a fraction. */
const percentSchema = z.unknown().transform((value, ctx): number => {
  const m = typeof value === "string" ? /^(\d+(?:\.\d+)?)\s*%$/.exec(value.trim()) : null;
  const percent = m ? Number(m[1]) : Number.NaN;
  if (percent > 0 && percent <= 100) return percent / 100;
  ctx.addIssue({
    code: "custom",
    message: `expected a percentage like 80% (more than 0, at most 100%), got ${describe(value)}`,
  });
  return z.NEVER;
});

const weightSchema = z.unknown().transform((value, ctx): number => {
  if (typeof value === "number" && Number.isFinite(value) && value > 0 && value <= 1e6) {
    return value;
  }
  ctx.addIssue({
    code: "custom",
    message: `expected a number more than 0 (at most 1000000), got ${describe(value)}`,
  });
  return z.NEVER;
});

/** An optional key; an empty value (`chap:` with nothing after it) counts as absent. */
function unset<T extends z.ZodType>(schema: T) {
  return schema.nullish().transform((value) => value ?? undefined);
}

/** A list key: absent or empty (`mappings:` with every entry commented out) means []. */
function list<T extends z.ZodType>(item: T) {
  return z
    .array(item)
    .nullish()
    .transform((value) => value ?? []);
}

const chapShape = {
  user: chapUserSchema,
  secret: chapSecretSchema,
  target_user: chapUserSchema.optional(),
  target_secret: chapSecretSchema.optional(),
};
const reservationsShape = {
  key_by: z.enum(["nexus", "initiator"]).default("nexus"),
};
const limitsShape = {
  read_iops: unset(iopsSchema),
  write_iops: unset(iopsSchema),
  iops: unset(iopsSchema),
  read_bps: unset(rateSchema),
  write_bps: unset(rateSchema),
  bps: unset(rateSchema),
  burst: unset(durationSchema),
};
const capacityShape = {
  limit: unset(sizeSchema),
  reserved: unset(sizeOrZeroSchema),
  soft_threshold: unset(percentSchema),
};
const agentShape = {
  name: nameSchema,
  initiators: z.array(iscsiNameSchema).min(1),
  chap: unset(z.strictObject(chapShape)),
  reservations: unset(z.strictObject(reservationsShape)),
  domain: unset(nameSchema),
  weight: unset(weightSchema),
  capacity: unset(z.strictObject(capacityShape)),
  limits: unset(z.strictObject(limitsShape)),
  queue_depth: unset(z.number().int().min(1).max(4096)),
};
const volumeShape = {
  name: nameSchema,
  size: sizeSchema,
  block_size: z.literal([512, 4096]).default(DEFAULT_BLOCK_SIZE),
  backend: z.enum(["pool", "file"]).default("pool"),
  domain: unset(nameSchema),
  write_cache: z.boolean().default(true),
  limits: unset(z.strictObject(limitsShape)),
};
const mappingShape = {
  agent: nameSchema,
  lun: z.number().int().min(0).max(MAX_LUN),
  volume: nameSchema,
  /** Default rw, or ro for a snapshot. */
  mode: z.enum(["rw", "ro"]).optional(),
  snapshot: unset(nameSchema),
};
const dataLength = z.number().int().min(512).max(16_777_215);
const iscsiShape = {
  immediate_data: z.boolean().optional(),
  initial_r2t: z.boolean().optional(),
  max_recv_data_segment_length: dataLength.optional(),
  max_burst_length: dataLength.optional(),
  first_burst_length: dataLength.optional(),
  max_outstanding_r2t: z.number().int().min(1).max(65535).optional(),
  queue_depth: z.number().int().min(1).max(4096).optional(),
  nop_interval: z.number().int().min(0).max(3600).optional(),
  nop_timeout: z.number().int().min(1).max(3600).optional(),
};
const poolShape = {
  devices: list(z.string().min(1)),
  soft_threshold: unset(percentSchema),
  balance: unset(z.enum(["auto", "off"])),
  concurrency: unset(z.number().int().min(1).max(65536)),
  max_size: unset(sizeSchema),
  gc_interval: unset(intervalSchema),
  cache_size: unset(sizeOrOffSchema),
};
const fileShape = {
  target: unset(iscsiNameSchema),
  iscsi: unset(z.strictObject(iscsiShape)),
  agents: list(z.strictObject(agentShape)),
  volumes: list(z.strictObject(volumeShape)),
  mappings: list(z.strictObject(mappingShape)),
  pool: unset(z.strictObject(poolShape)),
};
const fileSchema = z.strictObject(fileShape);
type ConfigFile = z.output<typeof fileSchema>;

/** Keys allowed in the object at `path` (for "did you mean" hints). */
function keysAt(path: readonly PropertyKey[]): readonly string[] {
  const [top, , sub] = path;
  if (path.length === 0) return Object.keys(fileShape);
  if (top === "iscsi" && path.length === 1) return Object.keys(iscsiShape);
  if (top === "agents" && path.length === 2) return Object.keys(agentShape);
  if (top === "agents" && sub === "chap" && path.length === 3) return Object.keys(chapShape);
  if (top === "agents" && sub === "reservations" && path.length === 3) {
    return Object.keys(reservationsShape);
  }
  if (top === "agents" && sub === "capacity" && path.length === 3) {
    return Object.keys(capacityShape);
  }
  if ((top === "agents" || top === "volumes") && sub === "limits" && path.length === 3) {
    return Object.keys(limitsShape);
  }
  if (top === "volumes" && path.length === 2) return Object.keys(volumeShape);
  if (top === "mappings" && path.length === 2) return Object.keys(mappingShape);
  if (top === "pool" && path.length === 1) return Object.keys(poolShape);
  return [];
}

// ---------------------------------------------------------------------------------------------
// Parsing

export interface ParseConfigOptions {
  /** Host name for the default target name. Default: `os.hostname()`. */
  readonly hostName?: string;
}

/** Read and validate a config file. Rejects with ConfigError naming `path`. */
export async function loadConfig(
  path: string,
  options: ParseConfigOptions = {},
): Promise<SanmuxConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    const message =
      isErrnoException(error) && error.code === "ENOENT"
        ? "no such file"
        : `cannot read: ${(error as Error).message}`;
    throw new ConfigError(path, [{ path: "", message }]);
  }
  return parseConfig(text, path, options);
}

/**
 * Validate the text of a config file. `fileName` is only used in messages. Throws ConfigError
 * listing every problem found.
 */
export function parseConfig(
  text: string,
  fileName: string,
  options: ParseConfigOptions = {},
): SanmuxConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number): { line: number; column: number } => {
    const pos = lineCounter.linePos(offset);
    return { line: pos.line, column: pos.col };
  };

  // 1. YAML syntax.
  const syntax: ConfigIssue[] = [...doc.errors, ...doc.warnings].map((error) => ({
    path: "",
    message: yamlProblem(error.code, error.message, text.slice(error.pos[0])),
    ...at(error.pos[0]),
  }));
  if (syntax.length > 0) throw new ConfigError(fileName, sortIssues(syntax));

  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 }) ?? {};
  } catch (error) {
    throw new ConfigError(fileName, [{ path: "", message: (error as Error).message, line: 1 }]);
  }

  const locate = (path: readonly PropertyKey[], message: string): ConfigIssue => {
    const offset = offsetOf(doc.contents, path);
    return { path: formatPath(path), message, ...(offset === undefined ? {} : at(offset)) };
  };

  // 2. Shape and types.
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issues: ConfigIssue[] = [];
    for (const issue of parsed.error.issues) {
      if (issue.code === "unrecognized_keys") {
        for (const key of issue.keys) {
          issues.push(locate([...issue.path, key], unknownKeyMessage(key, keysAt(issue.path))));
        }
      } else {
        issues.push(locate(issue.path, issueMessage(issue, valueAt(raw, issue.path))));
      }
    }
    throw new ConfigError(fileName, sortIssues(issues));
  }

  // 3. Cross-references and uniqueness.
  const problems = crossCheck(parsed.data);
  if (problems.length > 0) {
    const lineOf = (path: readonly PropertyKey[]): number | undefined => {
      const offset = offsetOf(doc.contents, path);
      return offset === undefined ? undefined : at(offset).line;
    };
    throw new ConfigError(
      fileName,
      sortIssues(problems.map((p) => locate(p.path, p.message(lineOf)))),
    );
  }
  return toConfig(parsed.data, options);
}

interface CrossProblem {
  readonly path: readonly PropertyKey[];
  /** Builds the message; `lineOf` resolves "first defined at line N" references. */
  readonly message: (lineOf: (path: readonly PropertyKey[]) => number | undefined) => string;
}

function crossCheck(file: ConfigFile): CrossProblem[] {
  const problems: CrossProblem[] = [];
  const seenAt = (
    lineOf: (path: readonly PropertyKey[]) => number | undefined,
    path: readonly PropertyKey[],
  ): string => {
    const line = lineOf(path);
    return line === undefined ? "" : ` (line ${line})`;
  };

  // Agents: unique names, each initiator belongs to one agent, CHAP rules.
  const agentIndex = new Map<string, number>();
  const initiatorOwner = new Map<string, { agent: number; item: number }>();
  const initiatorSecrets = new Map<string, number>();
  file.agents.forEach((agent, i) => {
    const first = agentIndex.get(agent.name);
    if (first === undefined) agentIndex.set(agent.name, i);
    else {
      problems.push({
        path: ["agents", i, "name"],
        message: (lineOf) =>
          `duplicate agent name "${agent.name}"${seenAt(lineOf, ["agents", first, "name"])}`,
      });
    }
    agent.initiators.forEach((initiator, k) => {
      const key = normalizeIscsiName(initiator);
      const owner = initiatorOwner.get(key);
      if (owner === undefined) {
        initiatorOwner.set(key, { agent: i, item: k });
        return;
      }
      const where = ["agents", owner.agent, "initiators", owner.item] as const;
      problems.push({
        path: ["agents", i, "initiators", k],
        message: (lineOf) =>
          owner.agent === i
            ? `initiator "${initiator}" is listed twice${seenAt(lineOf, where)}`
            : `initiator "${initiator}" is already listed by agent "${file.agents[owner.agent]?.name}"${seenAt(lineOf, where)}`,
      });
    });
    if (agent.chap !== undefined) {
      if (!initiatorSecrets.has(agent.chap.secret)) initiatorSecrets.set(agent.chap.secret, i);
    }
  });
  file.agents.forEach((agent, i) => {
    const chap = agent.chap;
    if (chap === undefined) return;
    const hasUser = chap.target_user !== undefined;
    const hasSecret = chap.target_secret !== undefined;
    if (hasUser !== hasSecret) {
      problems.push({
        path: ["agents", i, "chap", hasUser ? "target_user" : "target_secret"],
        message: () =>
          `mutual CHAP needs both target_user and target_secret (${hasUser ? "target_secret" : "target_user"} is missing)`,
      });
    }
    if (chap.target_secret !== undefined) {
      const owner =
        chap.target_secret === chap.secret ? i : initiatorSecrets.get(chap.target_secret);
      if (owner !== undefined) {
        problems.push({
          path: ["agents", i, "chap", "target_secret"],
          message: () =>
            owner === i
              ? "must differ from secret (RFC 7143 9.2.1: a secret authenticates one direction only)"
              : `equals the CHAP secret of agent "${file.agents[owner]?.name}" (RFC 7143 9.2.1: a secret authenticates one direction only)`,
        });
      }
    }
  });

  // Capacity: a reservation larger than the limit could never be used.
  file.agents.forEach((agent, i) => {
    const c = agent.capacity;
    if (c?.limit !== undefined && c.reserved !== undefined && c.reserved > c.limit) {
      problems.push({
        path: ["agents", i, "capacity", "reserved"],
        message: () =>
          `${formatSize(c.reserved as number)} is more than the agent's limit of ${formatSize(c.limit as number)}`,
      });
    }
  });

  // Volumes: unique names, size a multiple of the block size.
  const volumeIndex = new Map<string, number>();
  file.volumes.forEach((volume, i) => {
    const first = volumeIndex.get(volume.name);
    if (first === undefined) volumeIndex.set(volume.name, i);
    else {
      problems.push({
        path: ["volumes", i, "name"],
        message: (lineOf) =>
          `duplicate volume name "${volume.name}"${seenAt(lineOf, ["volumes", first, "name"])}`,
      });
    }
    if (volume.size % volume.block_size !== 0) {
      problems.push({
        path: ["volumes", i, "size"],
        message: () =>
          `${volume.size} bytes is not a multiple of the block size ${volume.block_size}`,
      });
    }
  });

  // Mappings: known agent and volume, one LUN per agent, one LUN per (agent, volume).
  const lunOwner = new Map<string, number>();
  const volumeLun = new Map<string, number>();
  file.mappings.forEach((mapping, i) => {
    const agentKnown = agentIndex.has(mapping.agent);
    if (!agentKnown) {
      problems.push({
        path: ["mappings", i, "agent"],
        message: () => `unknown agent "${mapping.agent}"`,
      });
    }
    if (!volumeIndex.has(mapping.volume)) {
      problems.push({
        path: ["mappings", i, "volume"],
        message: () => `unknown volume "${mapping.volume}"`,
      });
    }
    const lunKey = `${mapping.agent}\0${mapping.lun}`;
    const firstLun = lunOwner.get(lunKey);
    if (firstLun === undefined) lunOwner.set(lunKey, i);
    else {
      problems.push({
        path: ["mappings", i, "lun"],
        message: (lineOf) =>
          `agent "${mapping.agent}" already has LUN ${mapping.lun}${seenAt(lineOf, ["mappings", firstLun, "lun"])}`,
      });
      return;
    }
    if (mapping.snapshot !== undefined && mapping.mode === "rw") {
      problems.push({
        path: ["mappings", i, "mode"],
        message: () =>
          "a snapshot is read-only: map it with mode: ro (or make a writable clone with `sanmux snapshot clone`)",
      });
    }
    const target = file.volumes.find((v) => v.name === mapping.volume);
    if (mapping.snapshot !== undefined && target !== undefined && target.backend !== "pool") {
      problems.push({
        path: ["mappings", i, "snapshot"],
        message: () =>
          `volume "${mapping.volume}" is a file volume: only pool volumes have snapshots`,
      });
    }
    // The same volume twice for one agent would show one logical unit (one VPD 0x83 identity)
    // at two LUNs of one target: multipath tools would take them for two paths. Refuse it.
    const volumeKey = `${mapping.agent}\0${mapping.volume}\0${mapping.snapshot ?? ""}`;
    const firstVolume = volumeLun.get(volumeKey);
    if (firstVolume === undefined) volumeLun.set(volumeKey, i);
    else {
      problems.push({
        path: ["mappings", i, "volume"],
        message: (lineOf) =>
          `volume "${mapping.volume}" is already mapped to agent "${mapping.agent}" at LUN ${file.mappings[firstVolume]?.lun}${seenAt(lineOf, ["mappings", firstVolume, "volume"])}`,
      });
    }
  });

  // Domains: an agent writes only into volumes of its own dedup domain, or its data would be
  // deduplicated (and its contents revealed by dedup timing) with another domain's.
  file.mappings.forEach((mapping, i) => {
    const volume = file.volumes.find((v) => v.name === mapping.volume);
    const agent = file.agents.find((a) => a.name === mapping.agent);
    if (mapping.mode === "ro" || mapping.snapshot !== undefined) return;
    if (volume === undefined || agent === undefined) return;
    if (volume.backend !== "pool") return;
    const agentDomain = agent.domain ?? SHARED_DOMAIN;
    const domain = volumeDomain(file, volume.name);
    if (domain === undefined) {
      problems.push({
        path: ["mappings", i, "volume"],
        message: () =>
          `volume "${volume.name}" is mapped read-write to agents of different domains; give it a domain: or map it read-only to the others`,
      });
    } else if (domain !== agentDomain) {
      problems.push({
        path: ["mappings", i, "agent"],
        message: () =>
          `agent "${agent.name}" (domain "${agentDomain}") cannot write to volume "${volume.name}" of domain "${domain}"; map it read-only`,
      });
    }
  });
  return problems;
}

function toIscsiSettings(i: ConfigFile["iscsi"]): IscsiSettings {
  if (!i) return {};
  const pairs: Array<[keyof IscsiSettings, unknown]> = [
    ["immediateData", i.immediate_data],
    ["initialR2T", i.initial_r2t],
    ["maxRecvDataSegmentLength", i.max_recv_data_segment_length],
    ["maxBurstLength", i.max_burst_length],
    ["firstBurstLength", i.first_burst_length],
    ["maxOutstandingR2T", i.max_outstanding_r2t],
    ["queueDepth", i.queue_depth],
    ["nopInterval", i.nop_interval],
    ["nopTimeout", i.nop_timeout],
  ];
  return Object.fromEntries(pairs.filter(([, v]) => v !== undefined)) as IscsiSettings;
}

function toConfig(file: ConfigFile, options: ParseConfigOptions): SanmuxConfig {
  return {
    target: file.target ?? defaultTargetName(options.hostName),
    iscsi: toIscsiSettings(file.iscsi),
    agents: file.agents.map((agent) => ({
      name: agent.name,
      initiators: agent.initiators,
      ...(agent.chap === undefined
        ? {}
        : {
            chap: {
              user: agent.chap.user,
              secret: agent.chap.secret,
              ...(agent.chap.target_user === undefined
                ? {}
                : { targetUser: agent.chap.target_user, targetSecret: agent.chap.target_secret }),
            },
          }),
      ...(agent.reservations === undefined
        ? {}
        : { reservations: { keyBy: agent.reservations.key_by } }),
      domain: agent.domain ?? SHARED_DOMAIN,
      ...(agent.weight === undefined ? {} : { weight: agent.weight }),
      ...(agent.capacity === undefined ? {} : { capacity: toCapacity(agent.capacity) }),
      ...(agent.limits === undefined ? {} : { limits: toLimits(agent.limits) }),
      ...(agent.queue_depth === undefined ? {} : { queueDepth: agent.queue_depth }),
    })),
    volumes: file.volumes.map((volume) => ({
      name: volume.name,
      size: volume.size,
      blockSize: volume.block_size,
      backend: volume.backend,
      domain: volumeDomain(file, volume.name) ?? SHARED_DOMAIN,
      writeCache: volume.write_cache,
      ...(volume.limits === undefined ? {} : { limits: toLimits(volume.limits) }),
    })),
    mappings: file.mappings.map((mapping) => ({
      agent: mapping.agent,
      lun: mapping.lun,
      volume:
        mapping.snapshot === undefined
          ? mapping.volume
          : snapshotKey(mapping.volume, mapping.snapshot),
      mode: mapping.mode ?? (mapping.snapshot === undefined ? "rw" : "ro"),
      ...(mapping.snapshot === undefined
        ? {}
        : { snapshot: { volume: mapping.volume, name: mapping.snapshot } }),
    })),
    pool: {
      devices: file.pool?.devices ?? [],
      ...(file.pool?.soft_threshold === undefined
        ? {}
        : { softThreshold: file.pool.soft_threshold }),
      ...(file.pool?.balance === undefined ? {} : { balance: file.pool.balance }),
      ...(file.pool?.concurrency === undefined ? {} : { concurrency: file.pool.concurrency }),
      ...(file.pool?.max_size === undefined ? {} : { maxSize: file.pool.max_size }),
      ...(file.pool?.gc_interval === undefined ? {} : { gcInterval: file.pool.gc_interval }),
      ...(file.pool?.cache_size === undefined ? {} : { cacheSize: file.pool.cache_size }),
    },
  };
}

type LimitsFile = NonNullable<ConfigFile["agents"][number]["limits"]>;
type CapacityFile = NonNullable<ConfigFile["agents"][number]["capacity"]>;

/** The keys set, in camelCase; unset keys stay absent. */
function toLimits(l: LimitsFile): SpeedLimits {
  const pairs: Array<[keyof SpeedLimits, number | undefined]> = [
    ["readIops", l.read_iops],
    ["writeIops", l.write_iops],
    ["iops", l.iops],
    ["readBps", l.read_bps],
    ["writeBps", l.write_bps],
    ["bps", l.bps],
    ["burst", l.burst],
  ];
  return Object.fromEntries(pairs.filter(([, v]) => v !== undefined)) as SpeedLimits;
}

function toCapacity(c: CapacityFile): CapacityRules {
  return {
    ...(c.limit === undefined ? {} : { limit: c.limit }),
    ...(c.reserved === undefined ? {} : { reserved: c.reserved }),
    ...(c.soft_threshold === undefined ? {} : { softThreshold: c.soft_threshold }),
  };
}

/**
 * The domain a volume's data is deduplicated in: its own `domain:`, else the one domain of the
 * agents mapping it read-write (undefined when there is none, or several: validation reports
 * that).
 */
function volumeDomain(file: ConfigFile, name: string): string | undefined {
  const own = file.volumes.find((v) => v.name === name)?.domain;
  if (own !== undefined) return own;
  const writers = new Set<string>();
  for (const m of file.mappings) {
    if (m.volume !== name || m.mode === "ro" || m.snapshot !== undefined) continue;
    const agent = file.agents.find((a) => a.name === m.agent);
    if (agent !== undefined) writers.add(agent.domain ?? SHARED_DOMAIN);
  }
  return writers.size === 1 ? [...writers][0] : undefined;
}

// ---------------------------------------------------------------------------------------------
// Positions and messages

/**
 * Source offset of the node at `path`: for a map entry, its key (so that a block value reports
 * the line of its key); for a list item, the item. When the path does not exist (a missing key,
 * or a path through an alias), the deepest node that does exist.
 */
function offsetOf(root: unknown, path: readonly PropertyKey[]): number | undefined {
  let node: unknown = root;
  let offset = rangeStart(root);
  for (const segment of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === segment);
      if (pair === undefined) break;
      offset = rangeStart(pair.key) ?? offset;
      node = pair.value;
    } else if (isSeq(node) && typeof segment === "number") {
      const item = node.items[segment];
      if (item === undefined) break;
      offset = rangeStart(item) ?? offset;
      node = item;
    } else {
      break;
    }
  }
  return offset;
}

function rangeStart(node: unknown): number | undefined {
  return (node as Partial<Node> | null | undefined)?.range?.[0];
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const segment of path) {
    if (typeof segment === "number") out += `[${segment}]`;
    else out += out === "" ? String(segment) : `.${String(segment)}`;
  }
  return out;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let value = root;
  for (const segment of path) {
    if (value === null || typeof value !== "object") return undefined;
    value = (value as Record<PropertyKey, unknown>)[segment];
  }
  return value;
}

function describe(value: unknown): string {
  if (value === null) return "nothing (null)";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a mapping";
  if (typeof value === "string") return `"${value}"`;
  return String(value);
}

const EXPECTED: Readonly<Record<string, string>> = {
  string: "text",
  number: "a number",
  int: "a whole number",
  array: "a list",
  object: "a mapping",
};

function issueMessage(issue: z.core.$ZodIssue, value: unknown): string {
  switch (issue.code) {
    case "invalid_type":
      if (value === undefined) return "required";
      return `expected ${EXPECTED[issue.expected] ?? issue.expected}, got ${describe(value)}`;
    case "invalid_value":
      return `must be ${issue.values.map((v) => JSON.stringify(v)).join(" or ")}, got ${describe(value)}`;
    case "too_small":
      if (issue.origin === "array") return `must list at least ${issue.minimum} item(s)`;
      return `must be at least ${issue.minimum}, got ${describe(value)}`;
    case "too_big":
      return `must be at most ${issue.maximum}, got ${describe(value)}`;
    default:
      return issue.message;
  }
}

function unknownKeyMessage(key: string, allowed: readonly string[]): string {
  const close = allowed.filter(
    (k) => editDistance(k, key) <= Math.min(2, Math.floor(key.length / 2)),
  );
  if (close.length > 0) return `unknown key "${key}" (did you mean "${close[0]}"?)`;
  if (allowed.length > 0) return `unknown key "${key}" (allowed: ${allowed.join(", ")})`;
  return `unknown key "${key}"`;
}

/** `source` is the text from the error's position to the end. */
function yamlProblem(code: string, message: string, source: string): string {
  switch (code) {
    case "DUPLICATE_KEY": {
      const key = /^(?:"([^"\n]*)"|'([^'\n]*)'|([^:\n]*?))\s*:/.exec(source);
      const name = key?.[1] ?? key?.[2] ?? key?.[3];
      return name === undefined || name === "" ? "duplicate key" : `duplicate key "${name}"`;
    }
    case "MULTIPLE_DOCS":
      return "a config file holds one YAML document (remove the '---' separator)";
    default:
      return `YAML syntax: ${message}`;
  }
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
    }
    prev = row;
  }
  return prev[b.length] ?? 0;
}

function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return issues
    .map((issue, index) => ({ issue, index }))
    .sort(
      (x, y) =>
        (x.issue.line ?? 0) - (y.issue.line ?? 0) ||
        (x.issue.column ?? 0) - (y.issue.column ?? 0) ||
        x.index - y.index,
    )
    .map((x) => x.issue);
}
