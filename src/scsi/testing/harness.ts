/**
 * Test harness: a target with in-memory volumes, mutable LUN views, and helpers to run
 * commands and look at results.
 */
import assert from "node:assert/strict";
import type { Volume } from "../../volume/volume.js";
import { ScsiStatus } from "../constants.js";
import { decodeFixedSense } from "../sense.js";
import { type ScsiNexus, ScsiTarget } from "../target.js";
import type {
  LunEntry,
  LunView,
  NexusIdentity,
  ScsiCommand,
  ScsiResult,
  TargetInfo,
} from "../types.js";
import { MemoryVolume } from "./memory-volume.js";

export const TEST_INFO: TargetInfo = {
  vendor: "SANMUX",
  product: "sanmux volume",
  revision: "0.1",
  hostName: "san01.example.com",
  targetName: "iqn.2025-01.com.example:sanmux",
};

/** A LUN view the test can change. */
export class MutableView implements LunView {
  private entries: LunEntry[];
  constructor(entries: LunEntry[] = []) {
    this.entries = entries;
  }
  list(): readonly LunEntry[] {
    return this.entries;
  }
  get(lun: number): LunEntry | undefined {
    return this.entries.find((e) => e.lun === lun);
  }
  set(entries: LunEntry[]): void {
    this.entries = entries;
  }
}

let channels = 0;

export function lunEntry(
  lun: number,
  volume: Volume,
  o: { readOnly?: boolean; volumeId?: string } = {},
): LunEntry {
  return {
    lun,
    channel: ++channels,
    readOnly: o.readOnly ?? false,
    volume,
    volumeId: o.volumeId ?? volume.id,
  };
}

let sessions = 0;

export function identity(o: Partial<NexusIdentity> = {}): NexusIdentity {
  sessions++;
  return {
    initiatorName: o.initiatorName ?? "iqn.2025-01.com.example:host1",
    isid: o.isid ?? sessions.toString(16).padStart(12, "0"),
    targetName: o.targetName ?? TEST_INFO.targetName,
    tpgt: o.tpgt ?? 1,
  };
}

/** Pad a CDB to 16 bytes, as iSCSI carries it. */
export function command(
  lun: number,
  cdb: Buffer,
  dataOut: Buffer = Buffer.alloc(0),
  expectedLength?: number,
): ScsiCommand {
  const padded = Buffer.alloc(Math.max(16, cdb.length));
  cdb.copy(padded);
  return {
    lun,
    cdb: padded,
    dataOut,
    expectedLength: expectedLength ?? dataOut.length,
    taskAttribute: 1,
  };
}

/** A target, one volume at LUN 0 and one nexus on it. */
export function setup(
  o: { blocks?: number; blockSize?: number; readOnly?: boolean; trackDurability?: boolean } = {},
) {
  const warnings: { obj: object; msg: string }[] = [];
  const target = new ScsiTarget(TEST_INFO, {
    logger: { warn: (obj, msg) => warnings.push({ obj, msg }) },
  });
  const volume = new MemoryVolume({
    blocks: o.blocks ?? 1024,
    blockSize: o.blockSize ?? 512,
    trackDurability: o.trackDurability ?? false,
  });
  const view = new MutableView([lunEntry(0, volume, { readOnly: o.readOnly ?? false })]);
  const nexus = target.openNexus(identity(), view);
  const run = (cdb: Buffer, dataOut?: Buffer, lun = 0) => nexus.execute(command(lun, cdb, dataOut));
  return { target, volume, view, nexus, run, warnings };
}

/** Run a command on `nexus`. */
export function exec(
  nexus: ScsiNexus,
  cdb: Buffer,
  dataOut?: Buffer,
  lun = 0,
): Promise<ScsiResult> {
  return nexus.execute(command(lun, cdb, dataOut));
}

/** Assert CHECK CONDITION with this sense key and ASC/ASCQ; returns the decoded sense. */
export function expectSense(result: ScsiResult, key: number, asc: number) {
  assert.equal(result.status, ScsiStatus.CHECK_CONDITION, "expected CHECK CONDITION");
  assert.ok(result.sense, "expected sense data");
  const sense = decodeFixedSense(result.sense);
  assert.deepEqual(
    { key: sense.key, asc: hex4(sense.asc) },
    { key, asc: hex4(asc) },
    "sense key / ASC+ASCQ",
  );
  return sense;
}

/** Assert GOOD status (with a readable message when it is a CHECK CONDITION). */
export function expectGood(result: ScsiResult): void {
  if (result.status !== ScsiStatus.GOOD && result.sense) {
    const s = decodeFixedSense(result.sense);
    assert.fail(`expected GOOD, got status ${result.status} key ${s.key} asc ${hex4(s.asc)}`);
  }
  assert.equal(result.status, ScsiStatus.GOOD);
}

function hex4(n: number): string {
  return n.toString(16).padStart(4, "0");
}

/** A buffer of `blocks` blocks filled with `byte`. */
export function pattern(blocks: number, byte: number, blockSize = 512): Buffer {
  return Buffer.alloc(blocks * blockSize, byte);
}
