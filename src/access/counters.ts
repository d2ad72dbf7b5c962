/**
 * Per-channel activity counters: plain mutable numbers, bumped on the I/O path without any
 * allocation and read by whoever reports metrics. One object per channel, shared by every
 * session of that channel's agent.
 *
 * Who counts what:
 * - `commands`: SCSI commands addressed to the channel's LUN (counted by the layer that sees
 *   commands: the server wiring around the SCSI target).
 * - `readOps`, `readBytes`, `writeOps`, `writtenBytes`: completed volume reads and writes
 *   (counted by the counting filter, filters/counting.ts). Bytes are counted on success only.
 * - `errors`: failed operations.
 */
export interface ChannelCounters {
  commands: number;
  readBytes: number;
  writtenBytes: number;
  readOps: number;
  writeOps: number;
  errors: number;
}

export function newChannelCounters(): ChannelCounters {
  return { commands: 0, readBytes: 0, writtenBytes: 0, readOps: 0, writeOps: 0, errors: 0 };
}
