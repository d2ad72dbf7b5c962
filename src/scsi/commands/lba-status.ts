/**
 * GET LBA STATUS, SBC-4 (SERVICE ACTION IN(16), service action 12h), from Volume.blockStatus.
 *
 * Parameter data: PARAMETER DATA LENGTH (4, n - 3), reserved (4), then LBA status descriptors
 * of 16 bytes: LBA (8), NUMBER OF LOGICAL BLOCKS (4), PROVISIONING STATUS (byte 12, bits 3-0:
 * 0h mapped, 1h deallocated), reserved. The first descriptor starts at the requested LBA;
 * following ones continue where the previous ended, as many as the allocation length holds
 * (at most 64 per command), never past the end of the volume.
 * A STARTING LOGICAL BLOCK ADDRESS beyond the last LBA is LOGICAL BLOCK ADDRESS OUT OF RANGE.
 *
 * Each descriptor covers the whole extent of one status, up to the 32-bit NUMBER OF LOGICAL
 * BLOCKS: consecutive extents that `Volume.blockStatus` reports separately with the same
 * status are merged, so a backend that answers one grain or one map page at a time still gives
 * few, long descriptors (libiscsi's Sanitize.BlockErase wants a deallocated volume described by
 * the few descriptors 256 bytes hold). The merging is bounded (`MAX_STATUS_CALLS`): past it the
 * current descriptor ends where the walk stopped and no more follow, which SBC-4 allows (the
 * descriptors returned must be accurate, not maximal, and the PARAMETER DATA LENGTH says how many
 * there are).
 *
 * A partially unmapped physical block (a pool grain of which an UNMAP covered only some blocks)
 * is mapped: the pool deallocates whole grains only, and its blockStatus says so.
 */
import { decodeGetLbaStatus } from "../cdb.js";
import type { LunContext, LunHandler } from "../context.js";
import { lbaOutOfRange } from "../sense.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import { dataIn, failureResult } from "./common.js";

const HEADER = 8;
const DESCRIPTOR = 16;
const MAX_DESCRIPTORS = 64;
/** NUMBER OF LOGICAL BLOCKS of a descriptor is a 32-bit field. */
const MAX_DESCRIPTOR_BLOCKS = 0xffffffff;
/**
 * Volume.blockStatus calls per command at most: 65536 calls walk a 256 MiB run of 4 KiB grains
 * reported one by one (the pool reports whole runs, so it needs a handful).
 */
export const MAX_STATUS_CALLS = 1 << 16;
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
    const volume = lu.entry.volume;
    const options = { signal: cmd.signal };
    const out: Buffer[] = [];
    let calls = 0;
    const status = (at: number) => {
      calls++;
      return volume.blockStatus(at, options);
    };
    const extent = (at: number, reported: number) => Math.min(Math.max(1, reported), capacity - at);
    let lba = start;
    let next = await status(lba);
    while (lba < capacity && out.length < max) {
      const mapped = next.mapped;
      let blocks = extent(lba, next.blocks);
      let more = false;
      // Merge the following extents of the same status.
      while (lba + blocks < capacity && blocks < MAX_DESCRIPTOR_BLOCKS) {
        if (calls >= MAX_STATUS_CALLS) break;
        next = await status(lba + blocks);
        if (next.mapped !== mapped) {
          more = true;
          break;
        }
        blocks += extent(lba + blocks, next.blocks);
      }
      blocks = Math.min(blocks, MAX_DESCRIPTOR_BLOCKS);
      const desc = Buffer.alloc(DESCRIPTOR);
      desc.writeBigUInt64BE(BigInt(lba), 0);
      desc.writeUInt32BE(blocks, 8);
      desc[12] = mapped ? MAPPED : DEALLOCATED;
      out.push(desc);
      lba += blocks;
      if (!more) {
        // The walk stopped on the budget or the 32-bit limit (or reached the end).
        if (lba >= capacity || calls >= MAX_STATUS_CALLS) break;
        next = await status(lba);
      }
    }
    const header = Buffer.alloc(HEADER);
    header.writeUInt32BE(HEADER - 4 + out.length * DESCRIPTOR, 0);
    return dataIn(Buffer.concat([header, ...out]), allocationLength);
  } catch (err) {
    return failureResult(err, cmd, lu);
  }
}
