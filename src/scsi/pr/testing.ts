/**
 * Test helpers for persistent reservations: CDB and parameter list builders (code, not hex
 * dumps), parsers of PERSISTENT RESERVE IN data, and an in-memory ReservationStore.
 */

import type { ScsiNexus } from "../target.js";
import { exec } from "../testing/harness.js";
import type { ScsiResult } from "../types.js";
import { PrIn, PrOpcode, PrOut } from "./constants.js";
import type { PrState } from "./state.js";
import type { ReservationStore } from "./store.js";
import { decodeTransportId, encodeTransportId, type InitiatorId } from "./transport-id.js";

export { PrIn, PrOut };

/** PERSISTENT RESERVE IN CDB (SPC-4 6.15.1). */
export function prInCdb(serviceAction: number, allocationLength = 8192): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = PrOpcode.PERSISTENT_RESERVE_IN;
  cdb[1] = serviceAction;
  cdb.writeUInt16BE(allocationLength, 7);
  return cdb;
}

/** PERSISTENT RESERVE OUT CDB (SPC-4 6.16.1). */
export function prOutCdb(
  serviceAction: number,
  o: { type?: number; scope?: number; length?: number } = {},
): Buffer {
  const cdb = Buffer.alloc(10);
  cdb[0] = PrOpcode.PERSISTENT_RESERVE_OUT;
  cdb[1] = serviceAction;
  cdb[2] = ((o.scope ?? 0) << 4) | (o.type ?? 0);
  cdb.writeUInt32BE(o.length ?? 24, 5);
  return cdb;
}

export interface BasicParameters {
  readonly key?: bigint;
  readonly saKey?: bigint;
  readonly specIPt?: boolean;
  readonly allTgPt?: boolean;
  readonly aptpl?: boolean;
  /** With `specIPt`: the TransportIDs (encoded with encodeTransportId, or raw). */
  readonly transportIds?: readonly (InitiatorId | Buffer)[];
}

/** Basic parameter list (SPC-4 6.16.3, tables 214-215). */
export function basicParameters(o: BasicParameters = {}): Buffer {
  const head = Buffer.alloc(24);
  head.writeBigUInt64BE(o.key ?? 0n, 0);
  head.writeBigUInt64BE(o.saKey ?? 0n, 8);
  head[20] = (o.specIPt ? 0x08 : 0) | (o.allTgPt ? 0x04 : 0) | (o.aptpl ? 0x01 : 0);
  if (!o.specIPt) return head;
  const tids = Buffer.concat(
    (o.transportIds ?? []).map((t) => (Buffer.isBuffer(t) ? t : encodeTransportId(t))),
  );
  const length = Buffer.alloc(4);
  length.writeUInt32BE(tids.length, 0);
  return Buffer.concat([head, length, tids]);
}

/** REGISTER AND MOVE parameter list (SPC-4 6.16.4, table 217). */
export function moveParameters(o: {
  key: bigint;
  saKey: bigint;
  unreg?: boolean;
  aptpl?: boolean;
  relativeTargetPort?: number;
  destination: InitiatorId | Buffer;
}): Buffer {
  const head = Buffer.alloc(24);
  head.writeBigUInt64BE(o.key, 0);
  head.writeBigUInt64BE(o.saKey, 8);
  head[17] = (o.unreg ? 0x02 : 0) | (o.aptpl ? 0x01 : 0);
  head.writeUInt16BE(o.relativeTargetPort ?? 1, 18);
  const tid = Buffer.isBuffer(o.destination) ? o.destination : encodeTransportId(o.destination);
  head.writeUInt32BE(tid.length, 20);
  return Buffer.concat([head, tid]);
}

/** Send PERSISTENT RESERVE OUT with a basic parameter list. */
export function prOut(
  nexus: ScsiNexus,
  serviceAction: number,
  params: BasicParameters = {},
  o: { type?: number; scope?: number; lun?: number } = {},
): Promise<ScsiResult> {
  const data = basicParameters(params);
  return exec(nexus, prOutCdb(serviceAction, { ...o, length: data.length }), data, o.lun ?? 0);
}

export const register = (nexus: ScsiNexus, saKey: bigint, o: BasicParameters = {}) =>
  prOut(nexus, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY, { saKey, ...o });
export const reserve = (nexus: ScsiNexus, key: bigint, type: number) =>
  prOut(nexus, PrOut.RESERVE, { key }, { type });
export const release = (nexus: ScsiNexus, key: bigint, type: number) =>
  prOut(nexus, PrOut.RELEASE, { key }, { type });

/** Send PERSISTENT RESERVE IN. */
export function prIn(nexus: ScsiNexus, serviceAction: number, allocationLength = 8192) {
  return exec(nexus, prInCdb(serviceAction, allocationLength));
}

export interface ReadKeys {
  readonly generation: number;
  readonly additionalLength: number;
  readonly keys: bigint[];
}

export function parseReadKeys(data: Buffer): ReadKeys {
  const keys: bigint[] = [];
  for (let at = 8; at + 8 <= data.length; at += 8) keys.push(data.readBigUInt64BE(at));
  return { generation: data.readUInt32BE(0), additionalLength: data.readUInt32BE(4), keys };
}

export interface ReadReservation {
  readonly generation: number;
  readonly additionalLength: number;
  readonly key?: bigint;
  readonly scope?: number;
  readonly type?: number;
}

export function parseReadReservation(data: Buffer): ReadReservation {
  const base = { generation: data.readUInt32BE(0), additionalLength: data.readUInt32BE(4) };
  if (data.length < 24) return base;
  return { ...base, key: data.readBigUInt64BE(8), scope: data[21]! >>> 4, type: data[21]! & 0xf };
}

export interface FullStatusDescriptor {
  readonly key: bigint;
  readonly allTgPt: boolean;
  readonly holder: boolean;
  readonly scope: number;
  readonly type: number;
  readonly relativeTargetPort: number;
  readonly format: number;
  readonly initiator: InitiatorId;
}

export function parseFullStatus(data: Buffer): {
  generation: number;
  descriptors: FullStatusDescriptor[];
} {
  const end = 8 + data.readUInt32BE(4);
  const descriptors: FullStatusDescriptor[] = [];
  for (let at = 8; at < end; ) {
    const length = data.readUInt32BE(at + 20);
    descriptors.push({
      key: data.readBigUInt64BE(at),
      allTgPt: (data[at + 12]! & 0x02) !== 0,
      holder: (data[at + 12]! & 0x01) !== 0,
      scope: data[at + 13]! >>> 4,
      type: data[at + 13]! & 0xf,
      relativeTargetPort: data.readUInt16BE(at + 18),
      format: data[at + 24]! >>> 6,
      initiator: decodeTransportId(data, at + 24, at + 24 + length).id,
    });
    at += 24 + length;
  }
  return { generation: data.readUInt32BE(0), descriptors };
}

/**
 * A ReservationStore in memory. `saves` records every save in order; `gate` (when set) holds
 * saves until it resolves (`loadGate` holds loads); `failNext` makes the next save or load
 * reject.
 */
export class MemoryReservationStore implements ReservationStore {
  readonly saved = new Map<string, PrState>();
  readonly saves: { volumeId: string; state: PrState | undefined }[] = [];
  gate: Promise<void> | undefined;
  /** When set, loads wait for it. */
  loadGate: Promise<void> | undefined;
  private failures: { op: "load" | "save"; error: Error }[] = [];

  failNext(op: "load" | "save", error = new Error(`${op} failed`)): void {
    this.failures.push({ op, error });
  }

  async load(volumeId: string): Promise<PrState | undefined> {
    if (this.loadGate) await this.loadGate;
    this.fail("load");
    return this.saved.get(volumeId);
  }

  async save(volumeId: string, state: PrState | undefined): Promise<void> {
    if (this.gate) await this.gate;
    this.fail("save");
    this.saves.push({ volumeId, state });
    if (state) this.saved.set(volumeId, state);
    else this.saved.delete(volumeId);
  }

  private fail(op: "load" | "save"): void {
    const i = this.failures.findIndex((f) => f.op === op);
    if (i >= 0) {
      const [f] = this.failures.splice(i, 1);
      throw f!.error;
    }
  }
}
