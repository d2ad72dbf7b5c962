/**
 * WRITE ATOMIC (16), SBC-4 (opcode 9Ch): a write that happens entirely or not at all.
 *
 * An atomic write promises two things (SBC-4 atomic writes; it is what Linux RWF_ATOMIC
 * "untorn writes" and databases that turn off their torn-page protection rely on):
 *  1. no command from any I_T nexus sees or produces a mix of old and new data while it runs;
 *  2. after a failure, power loss included, the blocks hold either all the old data or all the
 *     new data.
 *
 * (1) is ours to guarantee at any length: the write holds its range exclusively in the unit's
 * gate (./io-gate.ts), like COMPARE AND WRITE. (2) is the volume's to guarantee, and the Block
 * Limits VPD page reports what it can:
 *  - a volume with `Volume.writeAtomic` (the file backend: a double-write journal) commits up
 *    to `atomicWriteMaxBlocks` blocks at once, anywhere. MAXIMUM ATOMIC TRANSFER LENGTH is that
 *    number (never more than MAXIMUM TRANSFER LENGTH), ATOMIC ALIGNMENT 0 (none) and ATOMIC
 *    TRANSFER LENGTH GRANULARITY 0 (any length), and the write goes through `writeAtomic`;
 *  - any other volume gets one positional `write`, which is untorn only inside one 4 KiB-aligned
 *    grain (a 4 KiB page is written back as one block I/O on a filesystem with 4 KiB blocks
 *    over a device with 4 KiB physical sectors; a write across two grains is two writebacks and
 *    can tear). So MAXIMUM ATOMIC TRANSFER LENGTH = ATOMIC ALIGNMENT = one grain (8 blocks of
 *    512 bytes, 1 block of 4 KiB), granularity 0.
 * Either way there is no atomic boundary support (both boundary fields 0; the ATOMIC BOUNDARY
 * CDB field is refused by the usage map).
 *
 * Order of checks: TRANSFER LENGTH against MAXIMUM TRANSFER LENGTH, LBA range (so that
 * libiscsi's WriteAtomic16.BeyondEol sees LOGICAL BLOCK ADDRESS OUT OF RANGE whatever the
 * length), TRANSFER LENGTH 0 (GOOD, nothing written), then SBC-4's atomic checks, each INVALID
 * FIELD IN CDB: TRANSFER LENGTH above MAXIMUM ATOMIC TRANSFER LENGTH, not a multiple of a non-zero
 * ATOMIC TRANSFER LENGTH GRANULARITY (pointing at TRANSFER LENGTH), LOGICAL BLOCK ADDRESS not a
 * multiple of a non-zero ATOMIC ALIGNMENT (pointing at it); then write protection, then the
 * Data-Out buffer, which must hold every block: a short buffer is INVALID FIELD IN COMMAND
 * INFORMATION UNIT and nothing is written (writing a prefix would not be the atomic write that
 * was asked for). FUA (or WCE=0) makes the write durable before GOOD; DPO is accepted and has
 * no effect.
 */
import type { Volume } from "../../volume/volume.js";
import { readUInt64 } from "../cdb.js";
import { Limits } from "../constants.js";
import type { LunContext, LunHandler } from "../context.js";
import { invalidCdbField } from "../sense.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import {
  checkLbaRange,
  checkTransferLength,
  checkWritable,
  failureResult,
  goodWithDataOut,
  requireDataOut,
} from "./common.js";
import { blockRange, gateOf } from "./io-gate.js";

/** WRITE ATOMIC (16) CDB fields, SBC-4. */
export interface WriteAtomic16Cdb {
  readonly lba: number;
  /** TRANSFER LENGTH (bytes 12-13). */
  readonly blocks: number;
  /** ATOMIC BOUNDARY (bytes 10-11): always 0 once the usage map let the CDB through. */
  readonly atomicBoundary: number;
  readonly dpo: boolean;
  readonly fua: boolean;
}

export function decodeWriteAtomic16(cdb: Buffer): WriteAtomic16Cdb {
  const b1 = cdb[1]!;
  return {
    lba: readUInt64(cdb, 2),
    atomicBoundary: cdb.readUInt16BE(10),
    blocks: cdb.readUInt16BE(12),
    dpo: (b1 & 0x10) !== 0,
    fua: (b1 & 0x08) !== 0,
  };
}

/** The atomic write fields of the Block Limits VPD page, in logical blocks. */
export interface AtomicLimits {
  readonly maxTransferLength: number;
  readonly alignment: number;
  readonly granularity: number;
  readonly maxTransferLengthWithBoundary: number;
  readonly maxBoundarySize: number;
}

type AtomicCapability = Pick<Volume, "blockSize" | "atomicWriteMaxBlocks" | "writeAtomic">;

/** Whether `volume` commits multi-block writes atomically itself (`Volume.writeAtomic`). */
function hasAtomicWrites(volume: AtomicCapability): boolean {
  return volume.writeAtomic !== undefined && (volume.atomicWriteMaxBlocks ?? 0) > 0;
}

/**
 * See the module comment: what the volume commits at once, anywhere, when it does atomic writes;
 * otherwise one grain, aligned on a grain.
 */
export function atomicLimits(volume: AtomicCapability): AtomicLimits {
  const blockSize = volume.blockSize;
  if (hasAtomicWrites(volume)) {
    return {
      maxTransferLength: Math.min(
        volume.atomicWriteMaxBlocks ?? 0,
        Limits.MAX_TRANSFER_BYTES / blockSize,
      ),
      alignment: 0,
      granularity: 0,
      maxTransferLengthWithBoundary: 0,
      maxBoundarySize: 0,
    };
  }
  const grain = Math.max(1, Limits.GRAIN_BYTES / blockSize);
  return {
    maxTransferLength: grain,
    alignment: grain,
    granularity: 0,
    maxTransferLengthWithBoundary: 0,
    maxBoundarySize: 0,
  };
}

const LBA_BYTE = 2;
const LENGTH_BYTE = 12;

export const writeAtomic16: LunHandler = (cmd, lu) => {
  const d = decodeWriteAtomic16(cmd.cdb);
  const volume = lu.entry.volume;
  const blockSize = volume.blockSize;
  checkTransferLength(d.blocks, blockSize, LENGTH_BYTE);
  checkLbaRange(d.lba, d.blocks, volume.blockCount());
  if (d.blocks === 0) return goodWithDataOut(0);
  const limits = atomicLimits(volume);
  if (d.blocks > limits.maxTransferLength) throw invalidCdbField(LENGTH_BYTE);
  if (limits.granularity > 1 && d.blocks % limits.granularity !== 0) {
    throw invalidCdbField(LENGTH_BYTE);
  }
  if (limits.alignment > 1 && d.lba % limits.alignment !== 0) throw invalidCdbField(LBA_BYTE);
  checkWritable(lu);
  const length = d.blocks * blockSize;
  const data = requireDataOut(cmd, length);
  const fua = d.fua || !lu.unit.writeCacheEnabled;
  return gateOf(lu.unit).exclusive(blockRange(d.lba, d.blocks), () =>
    atomicWrite(cmd, lu, d.lba, data, fua),
  );
};

async function atomicWrite(
  cmd: ScsiCommand,
  lu: LunContext,
  lba: number,
  data: Buffer,
  fua: boolean,
): Promise<ScsiResult> {
  const volume = lu.entry.volume;
  try {
    const options = { fua, signal: cmd.signal };
    if (hasAtomicWrites(volume)) await volume.writeAtomic!(lba, data, options);
    else await volume.write(lba, data, options);
    return goodWithDataOut(data.length);
  } catch (err) {
    return failureResult(err, cmd, lu, data.length);
  }
}
