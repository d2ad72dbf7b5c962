import { describe, expect, it } from "vitest";
import {
  decodeChunk,
  decodeJournalRecord,
  decodeMapKey,
  decodeVolume,
  encodeChunk,
  encodeJournalRecord,
  encodeVolume,
  mapKey,
  mapVolumeEnd,
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
});
