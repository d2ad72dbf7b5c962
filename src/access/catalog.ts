/**
 * The catalog of identities, persisted in `<data>/catalog.json`:
 * - `hostId`: a random UUID made once per data directory; it names this sanmux host.
 * - the channel table: every mapping (agent, LUN, volume) has a channel id, a positive integer.
 *
 * Channel contract:
 * - Unique: two mappings present at the same time never share a channel.
 * - Stable: the same (agent, lun, volume) triple keeps its channel across restarts and reloads
 *   for as long as the mapping exists.
 * - Never reused: ids come from a persisted counter (`nextChannel`) that only grows. When a
 *   mapping is removed its id is retired for good; if the same triple is mapped again later it is
 *   a new mapping and gets a new id (a channel names one lifetime of one mapping, so accounting,
 *   keys and metrics of an old mapping can never be attributed to a new one).
 * - Durable before use: `syncChannels` resolves only once the table is on disk, so a crash can
 *   never hand the same id out twice.
 *
 * A catalog file that exists but cannot be parsed is an error, never silently replaced: starting
 * over would reset `nextChannel` and reuse ids.
 */
import { randomUUID } from "node:crypto";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { readJsonFile, writeJsonAtomic } from "../util/atomic-file.js";

export const CATALOG_FILE = "catalog.json";
const CATALOG_VERSION = 1;

/** The identity of a mapping. */
export interface MappingKey {
  readonly agent: string;
  readonly lun: number;
  readonly volume: string;
}

export interface ChannelRecord extends MappingKey {
  readonly channel: number;
}

const channelSchema = z.strictObject({
  channel: z.number().int().positive(),
  agent: z.string().min(1),
  lun: z.number().int().min(0),
  volume: z.string().min(1),
});
const catalogSchema = z.object({
  version: z.literal(CATALOG_VERSION),
  hostId: z.uuid(),
  nextChannel: z.number().int().positive(),
  channels: z.array(channelSchema),
});
type CatalogFile = z.infer<typeof catalogSchema>;

export class CatalogError extends Error {
  override readonly name = "CatalogError";
}

function keyOf(m: MappingKey): string {
  return `${m.agent}\0${m.lun}\0${m.volume}`;
}

export class Catalog {
  private readonly channels = new Map<string, ChannelRecord>();
  /** Serializes changes, so that concurrent syncs never interleave their writes. */
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(
    /** Path of catalog.json. */
    readonly path: string,
    /** This host's identity, made once per data directory. */
    readonly hostId: string,
    private next: number,
    records: readonly ChannelRecord[],
  ) {
    for (const record of records) this.channels.set(keyOf(record), record);
  }

  /** Open `<dataDir>/catalog.json`, creating it (and `dataDir`) on first use. */
  static async open(dataDir: string): Promise<Catalog> {
    const path = join(dataDir, CATALOG_FILE);
    const raw = await readJsonFile(path);
    if (raw === undefined) {
      await mkdir(dataDir, { recursive: true });
      const catalog = new Catalog(path, randomUUID(), 1, []);
      await catalog.save();
      return catalog;
    }
    const parsed = catalogSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new CatalogError(
        `${path}: not a valid catalog (${issue?.path.join(".") || "file"}: ${issue?.message}); ` +
          "refusing to replace it, since that would reuse channel ids",
      );
    }
    const file = parsed.data;
    const seenKeys = new Set<string>();
    const seenChannels = new Set<number>();
    for (const record of file.channels) {
      if (record.channel >= file.nextChannel || seenChannels.has(record.channel)) {
        throw new CatalogError(`${path}: channel ${record.channel} is duplicated or not issued`);
      }
      if (seenKeys.has(keyOf(record))) {
        throw new CatalogError(
          `${path}: mapping ${record.agent}/${record.lun}/${record.volume} appears twice`,
        );
      }
      seenChannels.add(record.channel);
      seenKeys.add(keyOf(record));
    }
    return new Catalog(path, file.hostId, file.nextChannel, file.channels);
  }

  /** The next id that will be issued (every issued id is smaller). */
  get nextChannel(): number {
    return this.next;
  }

  /** The channel of a current mapping. */
  channelOf(mapping: MappingKey): number | undefined {
    return this.channels.get(keyOf(mapping))?.channel;
  }

  /** Every current mapping with its channel, by channel id. */
  list(): readonly ChannelRecord[] {
    return [...this.channels.values()].sort((a, b) => a.channel - b.channel);
  }

  /**
   * Make the channel table match `mappings` (the full current set): mappings already known keep
   * their channel, new ones get fresh ids, and those not listed are retired. Resolves, once the
   * table is durable, with the records of `mappings` in the same order.
   */
  syncChannels(mappings: readonly MappingKey[]): Promise<ChannelRecord[]> {
    const run = this.tail.then(() => this.applySync(mappings));
    this.tail = run.catch(() => undefined);
    return run;
  }

  private async applySync(mappings: readonly MappingKey[]): Promise<ChannelRecord[]> {
    const wanted = new Map<string, ChannelRecord>();
    let next = this.next;
    let changed = false;
    for (const m of mappings) {
      const key = keyOf(m);
      if (wanted.has(key)) continue;
      let record = this.channels.get(key);
      if (record === undefined) {
        record = { channel: next++, agent: m.agent, lun: m.lun, volume: m.volume };
        changed = true;
      }
      wanted.set(key, record);
    }
    if (wanted.size !== this.channels.size) changed = true;
    if (changed) {
      // Persist first; only then adopt, so that memory never runs ahead of the disk.
      await this.save(next, [...wanted.values()]);
      this.next = next;
      this.channels.clear();
      for (const [key, record] of wanted) this.channels.set(key, record);
    }
    return mappings.map((m) => wanted.get(keyOf(m)) as ChannelRecord);
  }

  private async save(
    next: number = this.next,
    records: readonly ChannelRecord[] = [...this.channels.values()],
  ): Promise<void> {
    const file: CatalogFile = {
      version: CATALOG_VERSION,
      hostId: this.hostId,
      nextChannel: next,
      channels: [...records].sort((a, b) => a.channel - b.channel),
    };
    await writeJsonAtomic(this.path, file);
  }
}
