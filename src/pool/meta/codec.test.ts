import { describe, expect, it } from "vitest";
import {
  DOMAIN_FIELDS,
  deathKey,
  decodeChunk,
  decodeDeathKey,
  decodeDomain,
  decodeJournalRecord,
  decodeMapKey,
  decodeOldKey,
  decodeOldValue,
  decodeVolume,
  encodeChunk,
  encodeDomain,
  encodeJournalRecord,
  encodeMapValue,
  encodeOldValue,
  encodeVolume,
  keyAfter,
  mapKey,
  mapValueBirth,
  mapValueFingerprint,
  mapVolumeEnd,
  oldKey,
  readU64,
  writeU64,
} from "./codec.js";
import { fp } from "./testing/helpers.js";

describe("codec", () => {
  it("orders map keys by volume, then by grain numerically", () => {
    const keys: [number, number][] = [
      [1, 0],
      [1, 1],
      [1, 255],
      [1, 256],
      [1, 0xffff_ffff],
      [1, 2 ** 32],
      [1, 2 ** 40 + 7],
      [1, Number.MAX_SAFE_INTEGER - 1],
      [2, 0],
    ];
    const encoded = keys.map(([v, g]) => mapKey(v, g));
    const sorted = [...encoded].sort(Buffer.compare);
    expect(sorted).toEqual(encoded);
    for (const [i, [v, g]] of keys.entries())
      expect(decodeMapKey(encoded[i]!)).toEqual({ volume: v, grain: g });
    expect(Buffer.compare(mapKey(1, Number.MAX_SAFE_INTEGER - 1), mapVolumeEnd(1)!)).toBe(-1);
    expect(Buffer.compare(mapVolumeEnd(1)!, mapKey(2, 0))).toBe(-1);
  });

  it("round-trips chunk entries, volume records, journal records and u64", () => {
    const e = {
      containerId: 0xffff_fffe,
      offset: 2 ** 47 + 3,
      storedLength: 70_000,
      logicalLength: 65_536,
      refcount: 2 ** 40,
    };
    expect(decodeChunk(encodeChunk(e))).toEqual(e);
    const v = { domainId: 9, mappedGrains: 2 ** 50, referencedBytes: 123 };
    expect(decodeVolume(encodeVolume(v))).toEqual(v);
    const r = {
      domainId: 3,
      deltas: [
        { fingerprint: fp(1), delta: -2 },
        { fingerprint: fp(2), delta: 5 },
      ],
    };
    expect(decodeJournalRecord(encodeJournalRecord(r))).toEqual(r);
    expect(() => decodeJournalRecord(encodeJournalRecord(r).subarray(0, 20))).toThrow(RangeError);
    const b = Buffer.alloc(8);
    writeU64(b, 0, Number.MAX_SAFE_INTEGER);
    expect(readU64(b, 0)).toBe(Number.MAX_SAFE_INTEGER);
    writeU64(b, 0, -5); // clamped: a counter never goes negative on disk
    expect(readU64(b, 0)).toBe(0);
  });

  it("lays out snapshot keys so that range scans follow grain, birth and death order", () => {
    const olds = [
      oldKey(1, 0, 0),
      oldKey(1, 0, 7),
      oldKey(1, 0, 0xffff_ffff),
      oldKey(1, 1, 0),
      oldKey(1, 2 ** 40, 3),
      oldKey(2, 0, 0),
    ];
    expect([...olds].sort(Buffer.compare)).toEqual(olds);
    // A grain's 12-byte map key sorts before its old versions, the next grain's after them.
    expect(Buffer.compare(mapKey(1, 0), oldKey(1, 0, 0))).toBe(-1);
    expect(Buffer.compare(oldKey(1, 0, 0xffff_ffff), mapKey(1, 1))).toBe(-1);
    expect(decodeOldKey(oldKey(3, 2 ** 40 + 5, 9))).toEqual({
      volume: 3,
      grain: 2 ** 40 + 5,
      birth: 9,
    });
    const deaths = [
      deathKey(1, 1, 2 ** 40),
      deathKey(1, 2, 0),
      deathKey(1, 2, 1),
      deathKey(2, 0, 0),
    ];
    expect([...deaths].sort(Buffer.compare)).toEqual(deaths);
    expect(decodeDeathKey(deathKey(4, 6, 2 ** 33))).toEqual({
      volume: 4,
      death: 6,
      grain: 2 ** 33,
    });
    expect(decodeOldValue(encodeOldValue(fp(1), 12))).toEqual({ fingerprint: fp(1), death: 12 });
    expect(Buffer.compare(keyAfter(deaths[0]!), deaths[0]!)).toBe(1);
    expect(Buffer.compare(keyAfter(deaths[0]!), deaths[1]!)).toBe(-1);
    // Map values: bare fingerprint for birth 0, fingerprint · birth after.
    expect(encodeMapValue(fp(1), 0)).toEqual(fp(1));
    expect(mapValueBirth(encodeMapValue(fp(1), 0))).toBe(0);
    expect(mapValueBirth(encodeMapValue(fp(1), 5))).toBe(5);
    expect(mapValueFingerprint(encodeMapValue(fp(1), 5))).toEqual(fp(1));
  });

  it("reads volume and domain records written before snapshots existed", () => {
    const v = { domainId: 9, mappedGrains: 2 ** 50, referencedBytes: 123 };
    expect(encodeVolume(v).length).toBe(20);
    const snap = { gen: 4, newest: 3, live: 2, oldGrains: 2 ** 40, oldBytes: 77 };
    expect(decodeVolume(encodeVolume({ ...v, snap }))).toEqual({ ...v, snap });
    // A 7-counter domain record (56 bytes): the snapshot counters read as zero.
    const d = decodeDomain(
      encodeDomain({ ...decodeDomain(Buffer.alloc(0)), deadBytes: 5 }).subarray(0, 56),
    );
    expect(d.deadBytes).toBe(5);
    expect(d.snapshotGrains).toBe(0);
    expect(DOMAIN_FIELDS.length).toBe(9);
  });
});
