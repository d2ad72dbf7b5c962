/**
 * The dispatch table: operation code → command description. Opcodes that carry a service
 * action (SERVICE ACTION IN(16), MAINTENANCE IN) have a sub-table keyed by the SERVICE ACTION
 * field (byte 1, bits 4-0).
 *
 * Each row says:
 *  - `usage`: the CDB usage map (SPC-4 REPORT SUPPORTED OPERATION CODES, "CDB USAGE DATA"):
 *    byte 0 is the opcode, and every other byte has a bit set for each CDB bit we support.
 *    Its length is the CDB length. `validateCdbUsage` rejects any other bit that is set.
 *  - `dataOut`: the command transfers Data-Out.
 *  - `conflictsWithReservation`: refused with RESERVATION CONFLICT when another I_T nexus
 *    holds a reservation. The allowed set follows the SPC-4 / SBC-4 "allowed in the presence
 *    of reservations" tables for Exclusive Access (INQUIRY, REPORT LUNS, REQUEST SENSE,
 *    TEST UNIT READY, READ CAPACITY, REPORT SUPPORTED OPERATION CODES), plus RELEASE(6)
 *    (a no-op from a non-holder, SPC-2).
 *  - `allowedWithUnitAttention`: INQUIRY, REPORT LUNS and REQUEST SENSE neither report nor
 *    clear a pending unit attention (SAM-5 5.14); every other command reports one first.
 *  - `scope`: "lun" handlers need a logical unit of the view; "nexus" handlers (INQUIRY,
 *    REPORT LUNS, REQUEST SENSE) also answer for a LUN outside it.
 */

import { Asc } from "./asc.js";
import {
  decodeRw6,
  decodeRw10,
  decodeRw12,
  decodeRw16,
  decodeSyncCache10,
  decodeSyncCache16,
} from "./cdb.js";
import { readCapacity10, readCapacity16 } from "./commands/capacity.js";
import { inquiry } from "./commands/inquiry.js";
import { modeSelect6, modeSelect10, modeSense6, modeSense10 } from "./commands/mode.js";
import { reportLuns } from "./commands/report-luns.js";
import { requestSense } from "./commands/request-sense.js";
import { readHandler, writeHandler } from "./commands/rw.js";
import { syncCacheHandler } from "./commands/sync-cache.js";
import { release6, reserve6, testUnitReady } from "./commands/unit-control.js";
import { MaintenanceIn, Opcode, ScsiStatus, SenseKey, ServiceActionIn16 } from "./constants.js";
import type { LunHandler, NexusHandler } from "./context.js";
import { checkCondition, invalidCdbField } from "./sense.js";

interface CommandCommon {
  readonly name: string;
  readonly opcode: number;
  /** Present for commands reached through a service action sub-table. */
  readonly serviceAction?: number;
  /** CDB usage map; its length is the CDB length. */
  readonly usage: Uint8Array;
  readonly cdbLength: number;
  readonly dataOut: boolean;
  readonly conflictsWithReservation: boolean;
  readonly allowedWithUnitAttention: boolean;
  /** False for the placeholders answering unknown opcodes and service actions. */
  readonly supported: boolean;
}

export type CommandSpec = CommandCommon &
  (
    | { readonly scope: "lun"; readonly handler: LunHandler }
    | { readonly scope: "nexus"; readonly handler: NexusHandler }
  );

interface ServiceActionGroup {
  readonly kind: "service-actions";
  readonly opcode: number;
  readonly name: string;
  readonly actions: ReadonlyMap<number, CommandSpec>;
  /** Answers a service action not in `actions`. */
  readonly invalid: CommandSpec;
}

type Flags = Partial<
  Pick<CommandCommon, "dataOut" | "conflictsWithReservation" | "allowedWithUnitAttention">
>;

function lunCommand(
  name: string,
  usage: number[],
  handler: LunHandler,
  flags: Flags = {},
): CommandSpec {
  return { ...common(name, usage, flags), scope: "lun", handler };
}

function nexusCommand(
  name: string,
  usage: number[],
  handler: NexusHandler,
  flags: Flags = {},
): CommandSpec {
  return { ...common(name, usage, flags), scope: "nexus", handler };
}

function common(name: string, usage: number[], flags: Flags): CommandCommon {
  return {
    name,
    opcode: usage[0]!,
    usage: Uint8Array.from(usage),
    cdbLength: usage.length,
    dataOut: flags.dataOut ?? false,
    conflictsWithReservation: flags.conflictsWithReservation ?? true,
    allowedWithUnitAttention: flags.allowedWithUnitAttention ?? false,
    supported: true,
  };
}

function withServiceAction(spec: CommandSpec): CommandSpec {
  return { ...spec, serviceAction: spec.usage[1]! & 0x1f };
}

const NO_UA = { allowedWithUnitAttention: true, conflictsWithReservation: false } as const;
const NO_CONFLICT = { conflictsWithReservation: false } as const;
const DATA_OUT = { dataOut: true } as const;

/** Bytes of a 4-byte / 8-byte field in a usage map. */
const F4 = [0xff, 0xff, 0xff, 0xff];
const F8 = [...F4, ...F4];

// Usage of byte 1 of READ (10)/(12)/(16): DPO FUA RARC FUA_NV (RDPROTECT not supported).
const READ_FLAGS = 0x1e;
// Usage of byte 1 of WRITE (10)/(12)/(16): DPO FUA FUA_NV (WRPROTECT not supported).
const WRITE_FLAGS = 0x1a;

/** All commands reachable through the table (for REPORT SUPPORTED OPERATION CODES). */
const COMMANDS: readonly (CommandSpec | ServiceActionGroup)[] = [
  lunCommand(
    "TEST UNIT READY",
    [Opcode.TEST_UNIT_READY, 0, 0, 0, 0, 0],
    testUnitReady,
    NO_CONFLICT,
  ),
  nexusCommand("REQUEST SENSE", [Opcode.REQUEST_SENSE, 0x01, 0, 0, 0xff, 0], requestSense, NO_UA),
  lunCommand("READ(6)", [Opcode.READ_6, 0x1f, 0xff, 0xff, 0xff, 0], readHandler(decodeRw6, 4)),
  lunCommand(
    "WRITE(6)",
    [Opcode.WRITE_6, 0x1f, 0xff, 0xff, 0xff, 0],
    writeHandler(decodeRw6, 4),
    DATA_OUT,
  ),
  nexusCommand("INQUIRY", [Opcode.INQUIRY, 0x01, 0xff, 0xff, 0xff, 0], inquiry, NO_UA),
  lunCommand("MODE SELECT(6)", [Opcode.MODE_SELECT_6, 0x11, 0, 0, 0xff, 0], modeSelect6, DATA_OUT),
  lunCommand("RESERVE(6)", [Opcode.RESERVE_6, 0, 0, 0, 0, 0], reserve6),
  lunCommand("RELEASE(6)", [Opcode.RELEASE_6, 0, 0, 0, 0, 0], release6, NO_CONFLICT),
  lunCommand("MODE SENSE(6)", [Opcode.MODE_SENSE_6, 0x08, 0xff, 0xff, 0xff, 0], modeSense6),
  lunCommand(
    "READ CAPACITY(10)",
    [Opcode.READ_CAPACITY_10, 0, ...F4, 0, 0, 0x01, 0],
    readCapacity10,
    NO_CONFLICT,
  ),
  lunCommand(
    "READ(10)",
    [Opcode.READ_10, READ_FLAGS, ...F4, 0x1f, 0xff, 0xff, 0],
    readHandler(decodeRw10, 7),
  ),
  lunCommand(
    "WRITE(10)",
    [Opcode.WRITE_10, WRITE_FLAGS, ...F4, 0x1f, 0xff, 0xff, 0],
    writeHandler(decodeRw10, 7),
    DATA_OUT,
  ),
  lunCommand(
    "SYNCHRONIZE CACHE(10)",
    [Opcode.SYNCHRONIZE_CACHE_10, 0x06, ...F4, 0x1f, 0xff, 0xff, 0],
    syncCacheHandler(decodeSyncCache10),
  ),
  lunCommand(
    "MODE SELECT(10)",
    [Opcode.MODE_SELECT_10, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
    modeSelect10,
    DATA_OUT,
  ),
  lunCommand(
    "MODE SENSE(10)",
    [Opcode.MODE_SENSE_10, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0],
    modeSense10,
  ),
  lunCommand(
    "READ(16)",
    [Opcode.READ_16, READ_FLAGS, ...F8, ...F4, 0x3f, 0],
    readHandler(decodeRw16, 10),
  ),
  lunCommand(
    "WRITE(16)",
    [Opcode.WRITE_16, WRITE_FLAGS, ...F8, ...F4, 0x3f, 0],
    writeHandler(decodeRw16, 10),
    DATA_OUT,
  ),
  lunCommand(
    "SYNCHRONIZE CACHE(16)",
    [Opcode.SYNCHRONIZE_CACHE_16, 0x06, ...F8, ...F4, 0x3f, 0],
    syncCacheHandler(decodeSyncCache16),
  ),
  serviceActions(Opcode.SERVICE_ACTION_IN_16, "SERVICE ACTION IN(16)", [
    lunCommand(
      "READ CAPACITY(16)",
      [Opcode.SERVICE_ACTION_IN_16, ServiceActionIn16.READ_CAPACITY_16, ...F8, ...F4, 0x01, 0],
      readCapacity16,
      NO_CONFLICT,
    ),
  ]),
  nexusCommand(
    "REPORT LUNS",
    [Opcode.REPORT_LUNS, 0, 0xff, 0, 0, 0, ...F4, 0, 0],
    reportLuns,
    NO_UA,
  ),
  lunCommand(
    "READ(12)",
    [Opcode.READ_12, READ_FLAGS, ...F4, ...F4, 0x1f, 0],
    readHandler(decodeRw12, 6),
  ),
  lunCommand(
    "WRITE(12)",
    [Opcode.WRITE_12, WRITE_FLAGS, ...F4, ...F4, 0x1f, 0],
    writeHandler(decodeRw12, 6),
    DATA_OUT,
  ),
];

function serviceActions(opcode: number, name: string, specs: CommandSpec[]): ServiceActionGroup {
  const actions = new Map<number, CommandSpec>();
  for (const s of specs) {
    const spec = withServiceAction(s);
    actions.set(spec.serviceAction!, spec);
  }
  return {
    kind: "service-actions",
    opcode,
    name,
    actions,
    invalid: placeholder(name, opcode, () => {
      throw invalidCdbField(1, 4);
    }),
  };
}

function placeholder(name: string, opcode: number, handler: LunHandler): CommandSpec {
  return {
    name,
    opcode,
    usage: Uint8Array.of(opcode),
    cdbLength: 0,
    dataOut: false,
    conflictsWithReservation: false,
    allowedWithUnitAttention: false,
    supported: false,
    scope: "lun",
    handler,
  };
}

/** Answers any opcode not in the table: INVALID COMMAND OPERATION CODE. */
const UNSUPPORTED = placeholder("unsupported", -1, () => {
  throw checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.INVALID_COMMAND_OPERATION_CODE, {
    fieldPointer: { inCdb: true, byte: 0, bit: 7 },
  });
});

const TABLE: (CommandSpec | ServiceActionGroup | undefined)[] = new Array(256);
for (const entry of COMMANDS) {
  if (TABLE[entry.opcode]) throw new Error(`duplicate opcode ${entry.opcode.toString(16)}`);
  TABLE[entry.opcode] = entry;
}

/**
 * The command a CDB asks for. Never undefined: unknown opcodes and service actions map to
 * placeholders (`supported: false`) whose handler answers with the right sense, so that the
 * caller can report pending unit attentions before that error, as SAM-5 5.14 orders.
 */
export function lookupCommand(cdb: Buffer): CommandSpec {
  const entry = TABLE[cdb[0]!];
  if (!entry) return UNSUPPORTED;
  if ("kind" in entry) return entry.actions.get(cdb[1]! & 0x1f) ?? entry.invalid;
  return entry;
}

/** Every supported command, service actions flattened, in opcode order. */
export function supportedCommands(): CommandSpec[] {
  const out: CommandSpec[] = [];
  for (const entry of TABLE) {
    if (!entry) continue;
    if ("kind" in entry) {
      out.push(...[...entry.actions.values()].sort((a, b) => a.serviceAction! - b.serviceAction!));
    } else {
      out.push(entry);
    }
  }
  return out;
}

/** The result status used when another nexus holds a conflicting reservation. */
export const RESERVATION_CONFLICT = Object.freeze({ status: ScsiStatus.RESERVATION_CONFLICT });
