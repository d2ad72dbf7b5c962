/**
 * CDB decoding: small pure functions that turn a CDB into a readonly object.
 *
 * Reserved bits and unsupported fields are rejected before any decoder runs, by
 * `validateCdbUsage` against the command's CDB usage map (the same map REPORT SUPPORTED
 * OPERATION CODES reports, SPC-4 "CDB USAGE DATA"): a bit that is clear in the map and set in
 * the CDB is an INVALID FIELD IN CDB, with a field pointer to it. Decoders therefore read
 * fields without re-checking reserved bits.
 *
 * 64-bit LBAs are read as two 32-bit halves: exact below 2^53 and, above, a number that is
 * still above 2^53 and thus beyond any capacity (a Volume's blockCount() is a safe integer),
 * so range checks stay exact without allocating a BigInt on the hot path.
 */
import { invalidCdbField } from "./sense.js";

const TWO_POW_32 = 0x1_0000_0000;

/**
 * Check every bit of `cdb` (bytes 1 .. n-2) against the usage map, and the CONTROL byte
 * (SAM-5 5.2, "CONTROL byte"): NACA and LINK are not supported, bits 5-3 and the obsolete bit 1
 * are reserved; bits 7-6 are vendor specific and ignored.
 */
export function validateCdbUsage(cdb: Buffer, usage: Uint8Array): void {
  const last = usage.length - 1;
  for (let i = 1; i < last; i++) {
    const bad = cdb[i]! & ~usage[i]!;
    if (bad !== 0) throw invalidCdbField(i, highestBit(bad));
  }
  const control = cdb[last]! & 0x3f;
  if (control !== 0) throw invalidCdbField(last, highestBit(control));
}

/** Index (0..7) of the most significant set bit of a non-zero byte. */
export function highestBit(byte: number): number {
  return 31 - Math.clz32(byte);
}

/** A 64-bit big-endian unsigned field as a number (see the module comment for large values). */
export function readUInt64(cdb: Buffer, offset: number): number {
  return cdb.readUInt32BE(offset) * TWO_POW_32 + cdb.readUInt32BE(offset + 4);
}

/** READ/WRITE (and similar) block I/O fields, SBC-4. */
export interface BlockIoCdb {
  readonly lba: number;
  /** Number of logical blocks; 0 means none (except READ(6)/WRITE(6), decoded as 256). */
  readonly blocks: number;
  /** Disable page out: accepted, no effect (we keep no read cache to pollute). */
  readonly dpo: boolean;
  /** Force unit access. */
  readonly fua: boolean;
  /** RDPROTECT / WRPROTECT (always 0 once validated: we have no protection information). */
  readonly protect: number;
}

/** READ(6) / WRITE(6), SBC-4: 21-bit LBA, TRANSFER LENGTH 0 meaning 256 blocks. */
export function decodeRw6(cdb: Buffer): BlockIoCdb {
  return {
    lba: ((cdb[1]! & 0x1f) << 16) | cdb.readUInt16BE(2),
    blocks: cdb[4] === 0 ? 256 : cdb[4]!,
    dpo: false,
    fua: false,
    protect: 0,
  };
}

/** READ(10) / WRITE(10), SBC-4: 32-bit LBA, 16-bit TRANSFER LENGTH. */
export function decodeRw10(cdb: Buffer): BlockIoCdb {
  const b1 = cdb[1]!;
  return {
    lba: cdb.readUInt32BE(2),
    blocks: cdb.readUInt16BE(7),
    dpo: (b1 & 0x10) !== 0,
    fua: (b1 & 0x08) !== 0,
    protect: b1 >>> 5,
  };
}

/** READ(12) / WRITE(12), SBC-4: 32-bit LBA, 32-bit TRANSFER LENGTH. */
export function decodeRw12(cdb: Buffer): BlockIoCdb {
  const b1 = cdb[1]!;
  return {
    lba: cdb.readUInt32BE(2),
    blocks: cdb.readUInt32BE(6),
    dpo: (b1 & 0x10) !== 0,
    fua: (b1 & 0x08) !== 0,
    protect: b1 >>> 5,
  };
}

/** READ(16) / WRITE(16), SBC-4: 64-bit LBA, 32-bit TRANSFER LENGTH. */
export function decodeRw16(cdb: Buffer): BlockIoCdb {
  const b1 = cdb[1]!;
  return {
    lba: readUInt64(cdb, 2),
    blocks: cdb.readUInt32BE(10),
    dpo: (b1 & 0x10) !== 0,
    fua: (b1 & 0x08) !== 0,
    protect: b1 >>> 5,
  };
}

/** SYNCHRONIZE CACHE (10)/(16), SBC-4. */
export interface SyncCacheCdb {
  readonly lba: number;
  /** 0 means "from lba to the end of the medium". */
  readonly blocks: number;
  /** Return status once the CDB is validated; the flush completes in the background. */
  readonly immed: boolean;
}

export function decodeSyncCache10(cdb: Buffer): SyncCacheCdb {
  return {
    lba: cdb.readUInt32BE(2),
    blocks: cdb.readUInt16BE(7),
    immed: (cdb[1]! & 0x02) !== 0,
  };
}

export function decodeSyncCache16(cdb: Buffer): SyncCacheCdb {
  return {
    lba: readUInt64(cdb, 2),
    blocks: cdb.readUInt32BE(10),
    immed: (cdb[1]! & 0x02) !== 0,
  };
}

/** READ CAPACITY (10), SBC-4. */
export interface ReadCapacity10Cdb {
  /** Obsolete LOGICAL BLOCK ADDRESS field: must be 0 unless PMI is set (SBC-3). */
  readonly lba: number;
  readonly pmi: boolean;
}

export function decodeReadCapacity10(cdb: Buffer): ReadCapacity10Cdb {
  return { lba: cdb.readUInt32BE(2), pmi: (cdb[8]! & 0x01) !== 0 };
}

/** READ CAPACITY (16), SBC-4 (SERVICE ACTION IN(16), service action 10h). */
export interface ReadCapacity16Cdb {
  readonly lba: number;
  readonly pmi: boolean;
  readonly allocationLength: number;
}

export function decodeReadCapacity16(cdb: Buffer): ReadCapacity16Cdb {
  return {
    lba: readUInt64(cdb, 2),
    allocationLength: cdb.readUInt32BE(10),
    pmi: (cdb[14]! & 0x01) !== 0,
  };
}

/** VERIFY (10)/(12)/(16), SBC-4. */
export interface VerifyCdb {
  readonly lba: number;
  /** VERIFICATION LENGTH in blocks; 0 verifies nothing. */
  readonly blocks: number;
  /** BYTCHK: 00b medium only, 01b compare with Data-Out, 11b compare every block with one block. */
  readonly bytchk: number;
  readonly dpo: boolean;
}

export function decodeVerify10(cdb: Buffer): VerifyCdb {
  return {
    lba: cdb.readUInt32BE(2),
    blocks: cdb.readUInt16BE(7),
    bytchk: (cdb[1]! >>> 1) & 0x03,
    dpo: (cdb[1]! & 0x10) !== 0,
  };
}

export function decodeVerify12(cdb: Buffer): VerifyCdb {
  return {
    lba: cdb.readUInt32BE(2),
    blocks: cdb.readUInt32BE(6),
    bytchk: (cdb[1]! >>> 1) & 0x03,
    dpo: (cdb[1]! & 0x10) !== 0,
  };
}

export function decodeVerify16(cdb: Buffer): VerifyCdb {
  return {
    lba: readUInt64(cdb, 2),
    blocks: cdb.readUInt32BE(10),
    bytchk: (cdb[1]! >>> 1) & 0x03,
    dpo: (cdb[1]! & 0x10) !== 0,
  };
}

/** WRITE SAME (10)/(16), SBC-4. */
export interface WriteSameCdb {
  readonly lba: number;
  /** NUMBER OF LOGICAL BLOCKS (0 is refused: WSNZ=1). */
  readonly blocks: number;
  /** UNMAP: deallocate when the pattern is what unmapped blocks read as (zeros). */
  readonly unmap: boolean;
  /** ANCHOR (refused: ANC_SUP=0). */
  readonly anchor: boolean;
  /** NDOB (16 only): no Data-Out, the pattern is a block of zeros. */
  readonly ndob: boolean;
}

export function decodeWriteSame10(cdb: Buffer): WriteSameCdb {
  return {
    lba: cdb.readUInt32BE(2),
    blocks: cdb.readUInt16BE(7),
    unmap: (cdb[1]! & 0x08) !== 0,
    anchor: (cdb[1]! & 0x10) !== 0,
    ndob: false,
  };
}

export function decodeWriteSame16(cdb: Buffer): WriteSameCdb {
  return {
    lba: readUInt64(cdb, 2),
    blocks: cdb.readUInt32BE(10),
    unmap: (cdb[1]! & 0x08) !== 0,
    anchor: (cdb[1]! & 0x10) !== 0,
    ndob: (cdb[1]! & 0x01) !== 0,
  };
}

/** UNMAP, SBC-4. */
export interface UnmapCdb {
  readonly anchor: boolean;
  readonly parameterListLength: number;
}

export function decodeUnmap(cdb: Buffer): UnmapCdb {
  return { anchor: (cdb[1]! & 0x01) !== 0, parameterListLength: cdb.readUInt16BE(7) };
}

/** PRE-FETCH (10)/(16), SBC-4. */
export interface PreFetchCdb {
  readonly lba: number;
  readonly blocks: number;
  readonly immed: boolean;
}

export function decodePreFetch10(cdb: Buffer): PreFetchCdb {
  return {
    lba: cdb.readUInt32BE(2),
    blocks: cdb.readUInt16BE(7),
    immed: (cdb[1]! & 0x02) !== 0,
  };
}

export function decodePreFetch16(cdb: Buffer): PreFetchCdb {
  return {
    lba: readUInt64(cdb, 2),
    blocks: cdb.readUInt32BE(10),
    immed: (cdb[1]! & 0x02) !== 0,
  };
}

/** GET LBA STATUS, SBC-4 (SERVICE ACTION IN(16), service action 12h). */
export interface GetLbaStatusCdb {
  readonly lba: number;
  readonly allocationLength: number;
}

export function decodeGetLbaStatus(cdb: Buffer): GetLbaStatusCdb {
  return { lba: readUInt64(cdb, 2), allocationLength: cdb.readUInt32BE(10) };
}

/** START STOP UNIT, SBC-4. */
export interface StartStopUnitCdb {
  readonly immed: boolean;
  readonly powerConditionModifier: number;
  readonly powerCondition: number;
  readonly noFlush: boolean;
  readonly loej: boolean;
  readonly start: boolean;
}

export function decodeStartStopUnit(cdb: Buffer): StartStopUnitCdb {
  return {
    immed: (cdb[1]! & 0x01) !== 0,
    powerConditionModifier: cdb[3]! & 0x0f,
    powerCondition: cdb[4]! >>> 4,
    noFlush: (cdb[4]! & 0x04) !== 0,
    loej: (cdb[4]! & 0x02) !== 0,
    start: (cdb[4]! & 0x01) !== 0,
  };
}
