/**
 * READ and WRITE (6), (10), (12), (16), SBC-4. The hot path: one decode, a few comparisons,
 * one await on the volume; Data-Out is handed to the volume without copying.
 *
 * Order of checks: CDB fields (usage map, before this code), TRANSFER LENGTH against the Block
 * Limits maximum, LBA range, write protection, then Data-Out completeness.
 */

import type { CommandOptions, WriteOptions } from "../../volume/volume.js";
import type { BlockIoCdb } from "../cdb.js";
import { ScsiStatus } from "../constants.js";
import type { LunContext, LunHandler } from "../context.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import {
  checkLbaRange,
  checkTransferLength,
  checkWritable,
  failureResult,
  GOOD,
  goodWithDataOut,
  writeDataOut,
} from "./common.js";

const WITH_FUA: WriteOptions = Object.freeze({ fua: true });
const WITHOUT_FUA: WriteOptions = Object.freeze({ fua: false });
const NO_OPTIONS: CommandOptions = Object.freeze({});

/**
 * A READ handler for one CDB format. `lengthByte` is the offset of its TRANSFER LENGTH field.
 * FUA on a read asks for data from the medium rather than a cache: a volume read is always
 * coherent with every completed write, so FUA and DPO need nothing more.
 */
export function readHandler(decode: (cdb: Buffer) => BlockIoCdb, lengthByte: number): LunHandler {
  return (cmd, lu) => {
    const io = decode(cmd.cdb);
    const volume = lu.entry.volume;
    checkTransferLength(io.blocks, volume.blockSize, lengthByte);
    checkLbaRange(io.lba, io.blocks, volume.blockCount());
    if (io.blocks === 0) return GOOD;
    return readBlocks(cmd, lu, io.lba, io.blocks);
  };
}

async function readBlocks(
  cmd: ScsiCommand,
  lu: LunContext,
  lba: number,
  blocks: number,
): Promise<ScsiResult> {
  try {
    const signal = cmd.signal;
    const data = await lu.entry.volume.read(
      lba,
      blocks,
      signal === undefined ? NO_OPTIONS : { signal },
    );
    return { status: ScsiStatus.GOOD, data };
  } catch (err) {
    return failureResult(err, cmd, lu);
  }
}

/**
 * A WRITE handler for one CDB format. The write is forced to the medium (fua) when the CDB
 * says FUA or when the logical unit's write cache is disabled (Caching mode page WCE=0).
 * Data-Out shorter or longer than the CDB's transfer length: see `writeDataOut`.
 */
export function writeHandler(decode: (cdb: Buffer) => BlockIoCdb, lengthByte: number): LunHandler {
  return (cmd, lu) => {
    const io = decode(cmd.cdb);
    const volume = lu.entry.volume;
    const blockSize = volume.blockSize;
    checkTransferLength(io.blocks, blockSize, lengthByte);
    checkLbaRange(io.lba, io.blocks, volume.blockCount());
    checkWritable(lu);
    const length = io.blocks * blockSize;
    const data = writeDataOut(cmd, length, blockSize);
    if (data.length === 0) return goodWithDataOut(length);
    const fua = io.fua || !lu.unit.writeCacheEnabled;
    return writeBlocks(cmd, lu, io.lba, data, fua, length);
  };
}

async function writeBlocks(
  cmd: ScsiCommand,
  lu: LunContext,
  lba: number,
  data: Buffer,
  fua: boolean,
  dataOutLength: number,
): Promise<ScsiResult> {
  try {
    const signal = cmd.signal;
    await lu.entry.volume.write(
      lba,
      data,
      signal === undefined ? (fua ? WITH_FUA : WITHOUT_FUA) : { fua, signal },
    );
    return goodWithDataOut(dataOutLength);
  } catch (err) {
    return failureResult(err, cmd, lu, dataOutLength);
  }
}
