/**
 * The SCSI layer's public surface, for the iSCSI layer and the server wiring. Everything else in
 * this folder is internal.
 */
export { ScsiStatus } from "./constants.js";
export { decodeLun, encodeLun, MAX_LUN, writeLun } from "./lun.js";
export type { ScsiLogger } from "./sense-map.js";
export { type ScsiNexus, ScsiTarget, type ScsiTargetOptions } from "./target.js";
export type {
  LunEntry,
  LunView,
  NexusIdentity,
  ScsiCommand,
  ScsiResult,
  TargetInfo,
} from "./types.js";
