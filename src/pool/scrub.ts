/**
 * Scrub: read every container and check every record (FORMAT.md §3: header, CRC32C, GCM tag,
 * codec, HMAC(plaintext) = fingerprint) with scanContainer and the domain's keys, then say which
 * volume grains use what is damaged.
 *
 * What scrub finds is remembered by the chunk store (`ChunkStore.damaged`): reads of a damaged
 * record fail with MEDIUM ERROR at once, and a write whose content deduplicates against a damaged
 * chunk is refused instead of acknowledging data that cannot be read back. A later scrub replaces
 * what an earlier one found for the containers it scanned.
 *
 * The scrub runs online: scanContainer reads through a 4 MiB window and awaits between windows,
 * so I/O goes on. The tail of the container a domain is appending to is not damage (an append
 * may be half-written at the instant of the scan, FORMAT.md §6) and is not reported.
 */
import { open, stat } from "node:fs/promises";
import type { Logger } from "pino";
import type { ChunkStore } from "./chunk-store.js";
import { decodeRecordHeader } from "./container/format.js";
import { RECORD_HEADER_BYTES, scanContainer } from "./container/index.js";
import { type MetaStore, shortFingerprint } from "./meta/index.js";
import type { Registry } from "./registry.js";

export interface ScrubProgress {
  /** Containers to scan. */
  readonly containers: number;
  /** Containers scanned so far. */
  readonly done: number;
  /** Bytes scanned so far. */
  readonly bytes: number;
}

/** A grain of a volume that reads a damaged record. */
export interface AffectedGrain {
  readonly volume: string;
  readonly grain: number;
  /** First logical block of the grain. */
  readonly lba: number;
}

export interface DamagedRecord {
  /** Container id (UUID text) and its file. */
  readonly container: string;
  readonly path: string;
  readonly offset: number;
  readonly length: number;
  /** DamageReason (FORMAT.md): crc, tag, fingerprint, header, ... */
  readonly reason: string;
  readonly message: string;
  /** Hex, when the container's directory or the record's CRC-checked header names it. */
  readonly fingerprint?: string | undefined;
  /** Whether the index points at this very record (a copy nobody uses is harmless). */
  readonly inUse: boolean | "unknown";
  /** Grains that read it (at most `maxGrains` over the whole report). */
  readonly grains: AffectedGrain[];
}

export interface ScrubReport {
  readonly containers: number;
  readonly bytes: number;
  /** Intact records. */
  readonly records: number;
  readonly damaged: DamagedRecord[];
  /** Container files the registry lists and the disk lacks: every chunk in them is lost. */
  readonly missing: string[];
  /** Grains reading damaged records, over the whole pool (the list in `damaged` may be cut). */
  readonly affectedGrains: number;
  readonly durationMs: number;
}

export interface ScrubContext {
  readonly registry: Registry;
  readonly chunks: ChunkStore;
  readonly store: MetaStore;
  readonly logger: Logger | undefined;
  /** True once the pool is closing: the scrub stops after the current container. */
  readonly stopped?: () => boolean;
}

const MAX_LISTED_GRAINS = 1000;

export async function scrubPool(
  ctx: ScrubContext,
  onProgress?: (p: ScrubProgress) => void,
): Promise<ScrubReport> {
  const t0 = Date.now();
  const { registry, chunks, store } = ctx;
  const targets = registry.containers.filter((c) => c.state !== "deleting");
  const damaged: (Omit<DamagedRecord, "grains" | "inUse"> & {
    number: number;
    domain: number;
    trusted?: boolean;
  })[] = [];
  const missing: string[] = [];
  let bytes = 0;
  let records = 0;
  let done = 0;
  onProgress?.({ containers: targets.length, done, bytes });
  for (const rec of targets) {
    if (ctx.stopped?.() === true) break;
    const path = chunks.containerPath(rec);
    const size = await stat(path).then(
      (s) => s.size,
      () => undefined,
    );
    if (size === undefined) {
      missing.push(path);
      chunks.reads.recordDamage(rec.number, [
        { offset: 0, length: Number.MAX_SAFE_INTEGER, reason: "missing" },
      ]);
      done++;
      continue;
    }
    const before = bytes;
    let scan: Awaited<ReturnType<typeof scanContainer>>;
    try {
      scan = await scanContainer(path, chunks.keys(rec.domain), {
        onProgress: (scanned) => {
          bytes = before + scanned;
          onProgress?.({ containers: targets.length, done, bytes });
        },
      });
    } catch (error) {
      done++;
      // GC may have deleted it meanwhile; otherwise the file went away under us.
      if (registry.container(rec.number) === undefined) continue;
      if (rec.state === "deleting") continue;
      missing.push(path);
      ctx.logger?.error({ err: error, path }, "scrub could not read a container");
      continue;
    }
    bytes = before + scan.fileSize;
    records += scan.records.length;
    const ranges: { offset: number; length: number; reason: string }[] = [];
    for (const d of scan.damage) {
      ranges.push({ offset: d.offset, length: d.length, reason: d.reason });
      const base = {
        number: rec.number,
        domain: rec.domain,
        container: rec.id,
        path,
        reason: d.reason,
        message: d.message,
      };
      // Without a trusted fingerprint (an unsealed container's damaged range), the record headers
      // in the range still name candidates; the index confirms the ones it points at.
      const found =
        d.fingerprint !== undefined
          ? [{ offset: d.offset, length: d.length, fingerprint: d.fingerprint, trusted: true }]
          : await candidates(path, d.offset, d.length);
      if (found.length === 0) damaged.push({ ...base, offset: d.offset, length: d.length });
      for (const f of found) {
        damaged.push({ ...base, ...f, fingerprint: f.fingerprint.toString("hex") });
      }
    }
    // A tail of a container that is not being appended to was never synced or is damage; the
    // open one is mid-append (module comment).
    if (scan.tail !== undefined && chunks.openContainer(rec.number) === undefined) {
      const t = scan.tail;
      ranges.push({ offset: t.offset, length: t.length, reason: "truncated" });
      damaged.push({
        number: rec.number,
        domain: rec.domain,
        container: rec.id,
        path,
        offset: t.offset,
        length: t.length,
        reason: "truncated",
        message: `${t.length} bytes at the end hold no intact record (${t.kind})`,
      });
    }
    chunks.reads.recordDamage(rec.number, ranges);
    done++;
    onProgress?.({ containers: targets.length, done, bytes });
  }

  // Which damaged records the index uses, and which grains read them.
  const report: DamagedRecord[] = [];
  // domain → fingerprint (hex of the first 16 bytes: what map entries hold) → grains
  const wanted = new Map<number, Map<string, AffectedGrain[]>>();
  for (const d of damaged) {
    let inUse: boolean | "unknown" = "unknown";
    const grains: AffectedGrain[] = [];
    if (d.fingerprint !== undefined) {
      const e = store.lookupChunk(d.domain, Buffer.from(d.fingerprint, "hex"));
      if (e !== undefined) {
        // The index names one copy of this content: this record, or another one (a healed or
        // relocated chunk), whose readers this damage does not touch.
        inUse = e.containerId === d.number && e.offset === d.offset;
      } else {
        inUse = d.trusted ? false : "unknown"; // a damaged header may name anything
      }
      if (inUse) {
        const byFp = wanted.get(d.domain) ?? new Map<string, AffectedGrain[]>();
        byFp.set(shortFingerprint(Buffer.from(d.fingerprint, "hex")).toString("hex"), grains);
        wanted.set(d.domain, byFp);
      }
    }
    const { number: _n, domain: _d, trusted: _t, ...rest } = d;
    report.push({ ...rest, inUse, grains });
  }
  let affectedGrains = 0;
  for (const v of registry.volumes) {
    const byFp = wanted.get(v.domain);
    if (byFp === undefined) continue;
    // Slices of 65536 entries, each its own read snapshot, with a turn of the event loop between.
    for (let from = 0, more = true; more; await new Promise((r) => setImmediate(r))) {
      more = false;
      let n = 0;
      for (const e of store.mapEntries(v.number, from)) {
        const list = byFp.get(shortFingerprint(e.fingerprint).toString("hex"));
        if (list !== undefined) {
          affectedGrains++;
          if (affectedGrains <= MAX_LISTED_GRAINS) {
            list.push({
              volume: v.name,
              grain: e.grain,
              lba: Math.floor((e.grain * store.grainSize) / v.blockSize),
            });
          }
        }
        from = e.grain + 1;
        if (++n === 65536) {
          more = true;
          break;
        }
      }
    }
  }
  const result: ScrubReport = {
    containers: targets.length,
    bytes,
    records,
    damaged: report,
    missing,
    affectedGrains,
    durationMs: Date.now() - t0,
  };
  if (report.length > 0 || missing.length > 0) {
    ctx.logger?.error(
      { damaged: report.length, missing: missing.length, affectedGrains },
      "scrub found damage: reads of the affected grains fail with MEDIUM ERROR",
    );
  } else {
    ctx.logger?.info(
      { containers: targets.length, bytes, records, durationMs: result.durationMs },
      "scrub clean",
    );
  }
  return result;
}

/**
 * Records whose headers still decode inside a damaged range [offset, offset + length): their
 * fingerprints are candidates only (the CRC failed), to be confirmed against the index.
 */
async function candidates(
  path: string,
  offset: number,
  length: number,
): Promise<{ offset: number; length: number; fingerprint: Buffer; trusted: false }[]> {
  const out: { offset: number; length: number; fingerprint: Buffer; trusted: false }[] = [];
  const handle = await open(path, "r");
  try {
    const head = Buffer.alloc(RECORD_HEADER_BYTES);
    for (let pos = offset; pos < offset + length && out.length < 4096; ) {
      const { bytesRead } = await handle.read(head, 0, head.length, pos);
      let h: ReturnType<typeof decodeRecordHeader>;
      try {
        h = decodeRecordHeader(head.subarray(0, bytesRead), 0);
      } catch {
        break;
      }
      const recordLength = RECORD_HEADER_BYTES + h.storedLength;
      out.push({
        offset: pos,
        length: recordLength,
        fingerprint: Buffer.from(h.fingerprint),
        trusted: false,
      });
      pos += recordLength;
    }
  } finally {
    await handle.close();
  }
  return out;
}
