import { describe, expect, it } from "vitest";
import {
  DOMAIN_FIELDS,
  deathKey,
  decodeChunk,
  decodeDeathKey,
  decodeDomain,
  decodeFpKey,
  decodeJournalRecord,
  decodeMapKey,
  decodeOldKey,
  decodeOldValue,
  decodeSnapshotKey,
  decodeVolume,
  encodeChunk,
  encodeDomain,
  encodeJournalRecord,
  encodeMapValue,
  encodeOldValue,
  encodeVolume,
  fpKey,
  fpRange,
  IMPLIED_LOGICAL_LENGTH,
  idPrefix,
  idPrefixEnd,
  keyAfter,
  mapKey,
  mapValueBirth,
  mapValueFingerprint,
  mapVolumeEnd,
  mapVolumeStart,
  oldKey,
  readU64,
  snapshotKey,
  writeU64,
} from "./codec.js";
import { fp, sfp } from "./testing/helpers.js";

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

  // Ids around every boundary of the ordered-id classes (1 to 5 bytes).
  const IDS = [
    0, 1, 127, 128, 255, 0x3fff, 0x4000, 0x1f_ffff, 0x20_0000, 0x0fff_ffff, 0x1000_0000,
    0xffff_fffe, 0xffff_ffff,
  ];

  it("writes ordered ids in 1 to 5 bytes, prefix-free, byte order = numeric order", () => {
    const prefixes = IDS.map(idPrefix);
    expect(prefixes.map((p) => p.length)).toEqual([1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 5, 5]);
    expect([...prefixes].sort(Buffer.compare)).toEqual(prefixes);
    for (const [i, id] of IDS.entries()) {
      // Every key of an id sorts between the id alone and the next id.
      const low = mapKey(id, 0);
      const high = mapKey(id, Number.MAX_SAFE_INTEGER - 1);
      expect(Buffer.compare(mapVolumeStart(id), low)).toBe(-1);
      const end = idPrefixEnd(id);
      if (end) expect(Buffer.compare(high, end)).toBe(-1);
      else expect(id).toBe(0xffff_ffff);
      if (i > 0)
        expect(Buffer.compare(mapKey(IDS[i - 1]!, Number.MAX_SAFE_INTEGER - 1), low)).toBe(-1);
      expect(decodeMapKey(high)).toEqual({ volume: id, grain: Number.MAX_SAFE_INTEGER - 1 });
      expect(decodeSnapshotKey(snapshotKey(id, 7))).toEqual({ volume: id, snapshot: 7 });
      expect(decodeFpKey(fpKey(id, fp(i)))).toEqual({ domainId: id, fingerprint: sfp(i) });
    }
  });

  it("lays out index keys by domain, then 16 fingerprint bytes: 17 bytes below domain 128", () => {
    // The full 32-byte fingerprint or its first 16 bytes make the same key.
    expect(fpKey(1, fp(1))).toEqual(fpKey(1, sfp(1)));
    expect(fpKey(1, fp(1)).length).toBe(17);
    expect(fpKey(128, fp(1)).length).toBe(18);
    expect(fpKey(1, fp(1)).subarray(1)).toEqual(fp(1).subarray(0, 16));
    const low = Buffer.alloc(16, 0);
    const high = Buffer.alloc(16, 0xff);
    const keys = [
      fpKey(127, low),
      fpKey(127, high),
      fpKey(128, low),
      fpKey(128, high),
      fpKey(129, low),
    ];
    expect([...keys].sort(Buffer.compare)).toEqual(keys);
    // Ranges: whole domain, and partitions by the fingerprint's first byte.
    const inRange = (k: Buffer, r: { start: Buffer; end?: Buffer }) =>
      Buffer.compare(r.start, k) <= 0 && (!r.end || Buffer.compare(k, r.end) < 0);
    expect(keys.map((k) => inRange(k, fpRange(128, 0, 256)))).toEqual([
      false,
      false,
      true,
      true,
      false,
    ]);
    expect(keys.map((k) => inRange(k, fpRange(128, 0, 128)))).toEqual([
      false,
      false,
      true,
      false,
      false,
    ]);
    expect(keys.map((k) => inRange(k, fpRange(128, 128, 256)))).toEqual([
      false,
      false,
      false,
      true,
      false,
    ]);
    expect(fpRange(0xffff_ffff, 0, 256).end).toBeUndefined();
    // Not an index key: wrong length, unknown first byte, or an id not in its shortest form.
    expect(decodeFpKey(fpKey(1, fp(1)).subarray(0, 16))).toBeUndefined();
    expect(decodeFpKey(Buffer.concat([Buffer.from([1]), fp(1)]))).toBeUndefined(); // 32-byte key
    expect(decodeFpKey(Buffer.concat([Buffer.from([0xf8]), sfp(1)]))).toBeUndefined();
    expect(decodeFpKey(Buffer.concat([Buffer.from([0x80, 0x05]), sfp(1)]))).toBeUndefined();
  });

  it("packs index values in varints: 8 bytes for a 4 KiB chunk at refcount 1", () => {
    const typical = {
      containerId: 31,
      offset: 200 * 1024 * 1024,
      storedLength: 4112,
      logicalLength: IMPLIED_LOGICAL_LENGTH,
      refcount: 1,
    };
    expect(encodeChunk(typical).length).toBe(8);
    expect(decodeChunk(encodeChunk(typical))).toEqual(typical);
    // Refcount 0 → 1 keeps the length: applying a batch does not grow the entry.
    expect(encodeChunk({ ...typical, refcount: 0 }).length).toBe(8);
    // Other logical lengths are written out.
    expect(encodeChunk({ ...typical, logicalLength: 8192 }).length).toBe(10);
    const extremes = [
      { containerId: 0, offset: 0, storedLength: 1, logicalLength: 1, refcount: 0 },
      {
        containerId: 0xffff_ffff,
        offset: 2 ** 48 - 1,
        storedLength: 2 ** 24 - 1,
        logicalLength: 2 ** 24 - 1,
        refcount: 2 ** 48 - 1,
      },
      { containerId: 127, offset: 128, storedLength: 63, logicalLength: 4096, refcount: 127 },
      { containerId: 128, offset: 16383, storedLength: 64, logicalLength: 65_536, refcount: 128 },
    ];
    for (const e of extremes) expect(decodeChunk(encodeChunk(e))).toEqual(e);
    // A refcount beyond u48 is clamped, a negative one written as 0.
    expect(decodeChunk(encodeChunk({ ...typical, refcount: 2 ** 50 })).refcount).toBe(2 ** 48 - 1);
    expect(decodeChunk(encodeChunk({ ...typical, refcount: -3 })).refcount).toBe(0);
    // Truncated, or with trailing bytes: refused.
    const v = encodeChunk(typical);
    expect(() => decodeChunk(v.subarray(0, 7))).toThrow(RangeError);
    expect(() => decodeChunk(Buffer.concat([v, Buffer.from([0])]))).toThrow(RangeError);
    expect(() => decodeChunk(Buffer.alloc(12, 0xff))).toThrow(RangeError);
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
        { fingerprint: sfp(1), delta: -2 },
        { fingerprint: sfp(2), delta: 5 },
      ],
    };
    expect(decodeJournalRecord(encodeJournalRecord(r))).toEqual(r);
    // 8 bytes of header, then 16 + 4 bytes a delta; a full fingerprint is cut to 16 bytes.
    expect(encodeJournalRecord(r).length).toBe(8 + 2 * 20);
    const full = {
      domainId: 3,
      deltas: r.deltas.map((d, i) => ({ ...d, fingerprint: fp(i + 1) })),
    };
    expect(encodeJournalRecord(full)).toEqual(encodeJournalRecord(r));
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
    // A grain's map key sorts before its old versions, the next grain's after them.
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
    expect(decodeOldValue(encodeOldValue(fp(1), 12))).toEqual({ fingerprint: sfp(1), death: 12 });
    expect(encodeOldValue(fp(1), 12).length).toBe(20);
    expect(Buffer.compare(keyAfter(deaths[0]!), deaths[0]!)).toBe(1);
    expect(Buffer.compare(keyAfter(deaths[0]!), deaths[1]!)).toBe(-1);
    // Map values: bare fingerprint for birth 0, fingerprint · birth after.
    // 16 bytes of the fingerprint (a full one is cut), 20 with a birth.
    expect(encodeMapValue(fp(1), 0)).toEqual(sfp(1));
    expect(encodeMapValue(fp(1), 5).length).toBe(20);
    expect(mapValueBirth(encodeMapValue(fp(1), 0))).toBe(0);
    expect(mapValueBirth(encodeMapValue(fp(1), 5))).toBe(5);
    expect(mapValueFingerprint(encodeMapValue(fp(1), 5))).toEqual(sfp(1));
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
