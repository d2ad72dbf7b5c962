/**
 * Test helpers for the map log: everything a rebuild must reproduce, as plain data.
 */
import { decodeVolume, readU32 } from "../codec.js";
import type { MetaStore } from "../store.js";

export interface MapDump {
  /** Raw tables, hex key → hex value. */
  readonly map: Record<string, string>;
  readonly mapold: Record<string, string>;
  readonly mapdeath: Record<string, string>;
  readonly snapshots: Record<string, string>;
  /** The non-derived fields of each volume record. */
  readonly volumes: Record<string, { domainId: number; gen: number; newest: number; live: number }>;
  /** What reads see: the head and every live snapshot of each volume (grain → fingerprint hex). */
  readonly reads: Record<string, Record<string, string>>;
}

export function dumpMaps(store: MetaStore): MapDump {
  const raw = (db: MetaStore["dbs"]["map"]) => {
    const out: Record<string, string> = {};
    for (const { key, value } of db.getRange()) out[key.toString("hex")] = value.toString("hex");
    return out;
  };
  const volumes: MapDump["volumes"] = {};
  const reads: MapDump["reads"] = {};
  for (const { key, value } of store.dbs.volumes.getRange()) {
    const v = readU32(key);
    const rec = decodeVolume(value);
    volumes[v] = {
      domainId: rec.domainId,
      gen: rec.snap?.gen ?? 0,
      newest: rec.snap?.newest ?? 0,
      live: rec.snap?.live ?? 0,
    };
    const views: (number | undefined)[] = [undefined, ...store.listSnapshots(v)];
    for (const s of views) {
      const entries: Record<string, string> = {};
      for (const e of store.mapEntries(v, 0, undefined, s === undefined ? {} : { snapshot: s }))
        entries[e.grain] = e.fingerprint.toString("hex");
      reads[`${v}${s === undefined ? "" : `@${s}`}`] = entries;
    }
  }
  return {
    map: raw(store.dbs.map),
    mapold: raw(store.dbs.mapold),
    mapdeath: raw(store.dbs.mapdeath),
    snapshots: raw(store.dbs.snapshots),
    volumes,
    reads,
  };
}
