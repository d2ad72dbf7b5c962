/**
 * GET LBA STATUS, SBC-4 (SERVICE ACTION IN(16), service action 12h), from Volume.blockStatus.
 *
 * Parameter data: PARAMETER DATA LENGTH (4, n - 3), reserved (4), then LBA status descriptors
 * of 16 bytes: LBA (8), NUMBER OF LOGICAL BLOCKS (4), PROVISIONING STATUS (byte 12, bits 3-0:
 * 0h mapped, 1h deallocated), reserved. The first descriptor starts at the requested LBA;
 * following ones continue where the previous ended, as many as the allocation length holds
 * (at most 64 per command), never past the end of the volume.
 * A STARTING LOGICAL BLOCK ADDRESS beyond the last LBA is LOGICAL BLOCK ADDRESS OUT OF RANGE.
 */
import { decodeGetLbaStatus } from "../cdb.js";
import type { LunContext, LunHandler } from "../context.js";
import { lbaOutOfRange } from "../sense.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import { dataIn, failureResult } from "./common.js";

const HEADER = 8;
const DESCRIPTOR = 16;
const MAX_DESCRIPTORS = 64;
const MAPPED = 0x0;
const DEALLOCATED = 0x1;

export const getLbaStatus: LunHandler = (cmd, lu) => {
  const d = decodeGetLbaStatus(cmd.cdb);
  const capacity = lu.entry.volume.blockCount();
  if (d.lba >= capacity) throw lbaOutOfRange();
  const wanted = Math.floor(Math.max(0, d.allocationLength - HEADER) / DESCRIPTOR);
  const descriptors = Math.min(MAX_DESCRIPTORS, Math.max(1, wanted));
  return collect(cmd, lu, d.lba, capacity, descriptors, d.allocationLength);
};

async function collect(
  cmd: ScsiCommand,
  lu: LunContext,
  start: number,
  capacity: number,
  max: number,
  allocationLength: number,
): Promise<ScsiResult> {
  try {
    const out: Buffer[] = [];
    let lba = start;
    while (lba < capacity && out.length < max) {
      const status = await lu.entry.volume.blockStatus(lba);
      const blocks = Math.min(Math.max(1, status.blocks), capacity - lba, 0xffffffff);
      const desc = Buffer.alloc(DESCRIPTOR);
      desc.writeBigUInt64BE(BigInt(lba), 0);
      desc.writeUInt32BE(blocks, 8);
      desc[12] = status.mapped ? MAPPED : DEALLOCATED;
      out.push(desc);
      lba += blocks;
    }
    const header = Buffer.alloc(HEADER);
    header.writeUInt32BE(HEADER - 4 + out.length * DESCRIPTOR, 0);
    return dataIn(Buffer.concat([header, ...out]), allocationLength);
  } catch (err) {
    return failureResult(err, cmd, lu);
  }
}
