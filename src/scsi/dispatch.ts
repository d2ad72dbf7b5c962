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
 *    holds a RESERVE(6) reservation. The allowed set follows the SPC-4 / SBC-4 "allowed in the
 *    presence of reservations" tables for Exclusive Access (INQUIRY, REPORT LUNS, REQUEST SENSE,
 *    TEST UNIT READY, READ CAPACITY, REPORT SUPPORTED OPERATION CODES), plus RELEASE(6)
 *    (a no-op from a non-holder, SPC-2).
 *  - `reservation`: what the command is under a persistent reservation (./pr/access.ts):
 *    "allowed", "read" (allowed through Write Exclusive types only), "write" (conflicts under
 *    every type), or handled by the command itself; SPC-4 5.13.1 table 65 and SBC-4 4.17
 *    table 13. Defaults to "write" for rows that conflict with RESERVE(6), else "allowed".
 *  - `allowedWithUnitAttention`: INQUIRY, REPORT LUNS and REQUEST SENSE neither report nor
 *    clear a pending unit attention (SAM-5 5.14); every other command reports one first.
 *  - `scope`: "lun" handlers need a logical unit of the view; "nexus" handlers (INQUIRY,
 *    REPORT LUNS, REQUEST SENSE) also answer for a LUN outside it.
 */

import { Asc } from "./asc.js";
import {
  decodePreFetch10,
  decodePreFetch16,
  decodeRw6,
  decodeRw10,
  decodeRw12,
  decodeRw16,
  decodeSyncCache10,
  decodeSyncCache16,
  decodeVerify10,
  decodeVerify12,
  decodeVerify16,
  decodeWriteSame10,
  decodeWriteSame16,
} from "./cdb.js";
import { readCapacity10, readCapacity16 } from "./commands/capacity.js";
import { compareAndWrite } from "./commands/compare-and-write.js";
import {
  receiveCopyFailedSegmentDetails,
  receiveCopyOperatingParameters,
  receiveCopyStatus,
} from "./commands/copy-results.js";
import {
  decodeReadDefectData10,
  decodeReadDefectData12,
  readDefectDataHandler,
} from "./commands/defect-data.js";
import { inquiry } from "./commands/inquiry.js";
import { gateMediumAccess } from "./commands/io-gate.js";
import { getLbaStatus } from "./commands/lba-status.js";
import { modeSelect6, modeSelect10, modeSense6, modeSense10 } from "./commands/mode.js";
import { orWrite16 } from "./commands/orwrite.js";
import { preFetchHandler, startStopUnit } from "./commands/power.js";
import { preventAllowAccess, preventAllowMediumRemoval } from "./commands/prevent-allow.js";
import { reportLuns } from "./commands/report-luns.js";
import { type OpcodeCatalog, reportSupportedOpcodesHandler } from "./commands/report-opcodes.js";
import { reportSupportedTmf } from "./commands/report-tmf.js";
import { requestSense } from "./commands/request-sense.js";
import { readHandler, writeHandler } from "./commands/rw.js";
import { refuseWhileSanitizing, SANITIZE, SanitizeAction, sanitize } from "./commands/sanitize.js";
import { syncCacheHandler } from "./commands/sync-cache.js";
import { release6, reserve6, testUnitReady } from "./commands/unit-control.js";
import { unmapCommand } from "./commands/unmap.js";
import { verifyHandler } from "./commands/verify.js";
import { writeAtomic16 } from "./commands/write-atomic.js";
import { writeSameHandler } from "./commands/write-same.js";
import { writeAndVerifyHandler } from "./commands/write-verify.js";
import { extendedCopy } from "./commands/xcopy.js";
import {
  MaintenanceIn,
  Opcode,
  ScsiStatus,
  SenseKey,
  ServiceActionIn16,
  ThirdPartyCopyIn,
  ThirdPartyCopyOut,
} from "./constants.js";
import type { LunHandler, NexusHandler } from "./context.js";
import { type ReservationRule, startStopUnitAccess } from "./pr/access.js";
import {
  persistentReserveOut,
  prInReadFullStatus,
  prInReadKeys,
  prInReadReservation,
  prInReportCapabilities,
} from "./pr/commands.js";
import { PrIn, PrOpcode, PrOut } from "./pr/constants.js";
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
  /** What the command is under a persistent reservation (see the module comment). */
  readonly reservation: ReservationRule;
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
  Pick<
    CommandCommon,
    "dataOut" | "conflictsWithReservation" | "reservation" | "allowedWithUnitAttention"
  >
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
  const conflictsWithReservation = flags.conflictsWithReservation ?? true;
  return {
    name,
    opcode: usage[0]!,
    usage: Uint8Array.from(usage),
    cdbLength: usage.length,
    dataOut: flags.dataOut ?? false,
    conflictsWithReservation,
    reservation: flags.reservation ?? (conflictsWithReservation ? "write" : "allowed"),
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
/** Allowed through Write Exclusive persistent reservations only (SBC-4 table 13). */
const READ_CLASS = { reservation: "read" } as const;

/** Bytes of a 4-byte / 8-byte field in a usage map. */
const F4 = [0xff, 0xff, 0xff, 0xff];
const F8 = [...F4, ...F4];

// Usage of byte 1 of READ (10)/(12)/(16): DPO FUA RARC FUA_NV (RDPROTECT not supported).
const READ_FLAGS = 0x1e;
// Usage of byte 1 of WRITE (10)/(12)/(16): DPO FUA FUA_NV (WRPROTECT not supported).
const WRITE_FLAGS = 0x1a;
// Usage of byte 1 of VERIFY (10)/(12)/(16): DPO BYTCHK (VRPROTECT not supported).
const VERIFY_FLAGS = 0x16;
// Usage of byte 1 of WRITE AND VERIFY (10)/(12)/(16): DPO BYTCHK (WRPROTECT not supported).
const WRITE_VERIFY_FLAGS = 0x16;

/**
 * Answers REPORT SUPPORTED OPERATION CODES from the table below. Its methods read the table
 * when a command runs, after this module has been evaluated.
 */
const CATALOG: OpcodeCatalog = {
  all: () => supportedCommands(),
  find: (opcode) => {
    const entry = TABLE[opcode];
    return entry && "kind" in entry ? entry.actions : entry;
  },
};

/** Every row of the table, in opcode order. */
const COMMANDS: readonly (CommandSpec | ServiceActionGroup)[] = [
  lunCommand(
    "TEST UNIT READY",
    [Opcode.TEST_UNIT_READY, 0, 0, 0, 0, 0],
    testUnitReady,
    NO_CONFLICT,
  ),
  nexusCommand("REQUEST SENSE", [Opcode.REQUEST_SENSE, 0x01, 0, 0, 0xff, 0], requestSense, NO_UA),
  lunCommand(
    "READ(6)",
    [Opcode.READ_6, 0x1f, 0xff, 0xff, 0xff, 0],
    readHandler(decodeRw6, 4),
    READ_CLASS,
  ),
  lunCommand(
    "WRITE(6)",
    [Opcode.WRITE_6, 0x1f, 0xff, 0xff, 0xff, 0],
    writeHandler(decodeRw6, 4),
    DATA_OUT,
  ),
  nexusCommand("INQUIRY", [Opcode.INQUIRY, 0x01, 0xff, 0xff, 0xff, 0], inquiry, NO_UA),
  lunCommand("MODE SELECT(6)", [Opcode.MODE_SELECT_6, 0x11, 0, 0, 0xff, 0], modeSelect6, DATA_OUT),
  lunCommand("RESERVE(6)", [Opcode.RESERVE_6, 0, 0, 0, 0, 0], reserve6, {
    reservation: "reserve-release",
  }),
  lunCommand("RELEASE(6)", [Opcode.RELEASE_6, 0, 0, 0, 0, 0], release6, {
    ...NO_CONFLICT,
    reservation: "reserve-release",
  }),
  lunCommand(
    "MODE SENSE(6)",
    [Opcode.MODE_SENSE_6, 0x08, 0xff, 0xff, 0xff, 0],
    modeSense6,
    READ_CLASS,
  ),
  // IMMED; POWER CONDITION MODIFIER; POWER CONDITION, NO_FLUSH, LOEJ, START.
  lunCommand("START STOP UNIT", [Opcode.START_STOP_UNIT, 0x01, 0, 0x0f, 0xf7, 0], startStopUnit, {
    reservation: startStopUnitAccess,
  }),
  lunCommand(
    "PREVENT ALLOW MEDIUM REMOVAL",
    // PREVENT: 00b and 01b (the obsolete 1xb values are refused).
    [Opcode.PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 0x01, 0],
    preventAllowMediumRemoval,
    { reservation: preventAllowAccess },
  ),
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
    READ_CLASS,
  ),
  lunCommand(
    "WRITE(10)",
    [Opcode.WRITE_10, WRITE_FLAGS, ...F4, 0x1f, 0xff, 0xff, 0],
    writeHandler(decodeRw10, 7),
    DATA_OUT,
  ),
  lunCommand(
    "WRITE AND VERIFY(10)",
    [Opcode.WRITE_AND_VERIFY_10, WRITE_VERIFY_FLAGS, ...F4, 0x1f, 0xff, 0xff, 0],
    writeAndVerifyHandler(decodeVerify10, 7),
    DATA_OUT,
  ),
  lunCommand(
    "VERIFY(10)",
    [Opcode.VERIFY_10, VERIFY_FLAGS, ...F4, 0x1f, 0xff, 0xff, 0],
    verifyHandler(decodeVerify10, 7),
    { ...DATA_OUT, ...READ_CLASS },
  ),
  lunCommand(
    "PRE-FETCH(10)",
    [Opcode.PRE_FETCH_10, 0x02, ...F4, 0x1f, 0xff, 0xff, 0],
    preFetchHandler(decodePreFetch10, 7),
    READ_CLASS,
  ),
  lunCommand(
    "SYNCHRONIZE CACHE(10)",
    [Opcode.SYNCHRONIZE_CACHE_10, 0x06, ...F4, 0x1f, 0xff, 0xff, 0],
    syncCacheHandler(decodeSyncCache10),
  ),
  lunCommand(
    "READ DEFECT DATA(10)",
    // REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT; ALLOCATION LENGTH.
    [Opcode.READ_DEFECT_DATA_10, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0],
    readDefectDataHandler(decodeReadDefectData10, 2, 4),
    READ_CLASS,
  ),
  lunCommand(
    "WRITE SAME(10)",
    [Opcode.WRITE_SAME_10, 0x08, ...F4, 0x1f, 0xff, 0xff, 0],
    writeSameHandler(decodeWriteSame10, 7),
    DATA_OUT,
  ),
  lunCommand("UNMAP", [Opcode.UNMAP, 0, 0, 0, 0, 0, 0x1f, 0xff, 0xff, 0], unmapCommand, DATA_OUT),
  // SBC-4: IMMED, AUSE (ZNR is for zoned devices), SERVICE ACTION; PARAMETER LIST LENGTH.
  // CRYPTOGRAPHIC ERASE is not offered (nothing is encrypted). Conflicts with reservations as a
  // write; refused on read-only mappings by the handler.
  serviceActions(SANITIZE, "SANITIZE", [
    sanitizeCommand("OVERWRITE", SanitizeAction.OVERWRITE),
    sanitizeCommand("BLOCK ERASE", SanitizeAction.BLOCK_ERASE),
    sanitizeCommand("EXIT FAILURE MODE", SanitizeAction.EXIT_FAILURE_MODE),
  ]),
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
    READ_CLASS,
  ),
  // SPC-4 6.15: ALLOCATION LENGTH (bytes 7-8).
  serviceActions(PrOpcode.PERSISTENT_RESERVE_IN, "PERSISTENT RESERVE IN", [
    prInCommand("READ KEYS", PrIn.READ_KEYS, prInReadKeys),
    prInCommand("READ RESERVATION", PrIn.READ_RESERVATION, prInReadReservation),
    prInCommand("REPORT CAPABILITIES", PrIn.REPORT_CAPABILITIES, prInReportCapabilities),
    prInCommand("READ FULL STATUS", PrIn.READ_FULL_STATUS, prInReadFullStatus),
  ]),
  // SPC-4 6.16: SCOPE and TYPE (byte 2), PARAMETER LIST LENGTH (bytes 5-8).
  serviceActions(PrOpcode.PERSISTENT_RESERVE_OUT, "PERSISTENT RESERVE OUT", [
    prOutCommand("REGISTER", PrOut.REGISTER),
    prOutCommand("RESERVE", PrOut.RESERVE),
    prOutCommand("RELEASE", PrOut.RELEASE),
    prOutCommand("CLEAR", PrOut.CLEAR),
    prOutCommand("PREEMPT", PrOut.PREEMPT),
    prOutCommand("PREEMPT AND ABORT", PrOut.PREEMPT_AND_ABORT),
    prOutCommand("REGISTER AND IGNORE EXISTING KEY", PrOut.REGISTER_AND_IGNORE_EXISTING_KEY),
    prOutCommand("REGISTER AND MOVE", PrOut.REGISTER_AND_MOVE),
  ]),
  // SPC-4 third-party copy (LID1): PARAMETER LIST LENGTH / ALLOCATION LENGTH in bytes 10-13.
  serviceActions(Opcode.THIRD_PARTY_COPY_OUT, "THIRD-PARTY COPY OUT", [
    lunCommand(
      "EXTENDED COPY(LID1)",
      [
        Opcode.THIRD_PARTY_COPY_OUT,
        ThirdPartyCopyOut.EXTENDED_COPY_LID1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        ...F4,
        0,
        0,
      ],
      extendedCopy,
      DATA_OUT,
    ),
  ]),
  serviceActions(Opcode.THIRD_PARTY_COPY_IN, "THIRD-PARTY COPY IN", [
    lunCommand(
      "RECEIVE COPY STATUS(LID1)",
      // LIST IDENTIFIER (byte 2).
      [
        Opcode.THIRD_PARTY_COPY_IN,
        ThirdPartyCopyIn.RECEIVE_COPY_STATUS_LID1,
        0xff,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        ...F4,
        0,
        0,
      ],
      receiveCopyStatus,
      READ_CLASS,
    ),
    lunCommand(
      "RECEIVE COPY OPERATING PARAMETERS",
      [
        Opcode.THIRD_PARTY_COPY_IN,
        ThirdPartyCopyIn.RECEIVE_COPY_OPERATING_PARAMETERS,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        ...F4,
        0,
        0,
      ],
      receiveCopyOperatingParameters,
      READ_CLASS,
    ),
    lunCommand(
      "RECEIVE COPY FAILED SEGMENT DETAILS",
      [
        Opcode.THIRD_PARTY_COPY_IN,
        ThirdPartyCopyIn.RECEIVE_COPY_FAILED_SEGMENT_DETAILS,
        0xff,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        ...F4,
        0,
        0,
      ],
      receiveCopyFailedSegmentDetails,
      READ_CLASS,
    ),
  ]),
  lunCommand(
    "READ(16)",
    [Opcode.READ_16, READ_FLAGS, ...F8, ...F4, 0x3f, 0],
    readHandler(decodeRw16, 10),
    READ_CLASS,
  ),
  lunCommand(
    "WRITE(16)",
    [Opcode.WRITE_16, WRITE_FLAGS, ...F8, ...F4, 0x3f, 0],
    writeHandler(decodeRw16, 10),
    DATA_OUT,
  ),
  lunCommand(
    "COMPARE AND WRITE",
    // DPO FUA FUA_NV; LBA; NUMBER OF LOGICAL BLOCKS (byte 13); GROUP NUMBER.
    [Opcode.COMPARE_AND_WRITE, WRITE_FLAGS, ...F8, 0, 0, 0, 0xff, 0x3f, 0],
    compareAndWrite,
    DATA_OUT,
  ),
  lunCommand(
    "ORWRITE(16)",
    // DPO FUA FUA_NV (ORPROTECT not supported).
    [Opcode.ORWRITE_16, WRITE_FLAGS, ...F8, ...F4, 0x3f, 0],
    orWrite16,
    DATA_OUT,
  ),
  lunCommand(
    "WRITE AND VERIFY(16)",
    [Opcode.WRITE_AND_VERIFY_16, WRITE_VERIFY_FLAGS, ...F8, ...F4, 0x3f, 0],
    writeAndVerifyHandler(decodeVerify16, 10),
    DATA_OUT,
  ),
  lunCommand(
    "VERIFY(16)",
    [Opcode.VERIFY_16, VERIFY_FLAGS, ...F8, ...F4, 0x3f, 0],
    verifyHandler(decodeVerify16, 10),
    { ...DATA_OUT, ...READ_CLASS },
  ),
  lunCommand(
    "PRE-FETCH(16)",
    [Opcode.PRE_FETCH_16, 0x02, ...F8, ...F4, 0x3f, 0],
    preFetchHandler(decodePreFetch16, 10),
    READ_CLASS,
  ),
  lunCommand(
    "SYNCHRONIZE CACHE(16)",
    [Opcode.SYNCHRONIZE_CACHE_16, 0x06, ...F8, ...F4, 0x3f, 0],
    syncCacheHandler(decodeSyncCache16),
  ),
  lunCommand(
    "WRITE SAME(16)",
    // UNMAP and NDOB.
    [Opcode.WRITE_SAME_16, 0x09, ...F8, ...F4, 0x3f, 0],
    writeSameHandler(decodeWriteSame16, 10),
    DATA_OUT,
  ),
  lunCommand(
    "WRITE ATOMIC(16)",
    // DPO FUA; LBA; ATOMIC BOUNDARY (bytes 10-11) not supported; TRANSFER LENGTH; GROUP NUMBER.
    [Opcode.WRITE_ATOMIC_16, 0x18, ...F8, 0, 0, 0xff, 0xff, 0x3f, 0],
    writeAtomic16,
    DATA_OUT,
  ),
  serviceActions(Opcode.SERVICE_ACTION_IN_16, "SERVICE ACTION IN(16)", [
    lunCommand(
      "READ CAPACITY(16)",
      [Opcode.SERVICE_ACTION_IN_16, ServiceActionIn16.READ_CAPACITY_16, ...F8, ...F4, 0x01, 0],
      readCapacity16,
      NO_CONFLICT,
    ),
    lunCommand(
      "GET LBA STATUS",
      [Opcode.SERVICE_ACTION_IN_16, ServiceActionIn16.GET_LBA_STATUS, ...F8, ...F4, 0, 0],
      getLbaStatus,
      READ_CLASS,
    ),
  ]),
  nexusCommand(
    "REPORT LUNS",
    [Opcode.REPORT_LUNS, 0, 0xff, 0, 0, 0, ...F4, 0, 0],
    reportLuns,
    NO_UA,
  ),
  serviceActions(Opcode.MAINTENANCE_IN, "MAINTENANCE IN", [
    lunCommand(
      "REPORT SUPPORTED OPERATION CODES",
      // RCTD and REPORTING OPTIONS; REQUESTED OPERATION CODE; REQUESTED SERVICE ACTION.
      [
        Opcode.MAINTENANCE_IN,
        MaintenanceIn.REPORT_SUPPORTED_OPERATION_CODES,
        0x87,
        0xff,
        0xff,
        0xff,
        ...F4,
        0,
        0,
      ],
      reportSupportedOpcodesHandler(CATALOG),
      // SPC-4 table 65, footnote b: allowed through Write Exclusive (ALLOW COMMANDS 011b).
      { ...NO_CONFLICT, ...READ_CLASS },
    ),
    lunCommand(
      "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
      // REPD; ALLOCATION LENGTH.
      [
        Opcode.MAINTENANCE_IN,
        MaintenanceIn.REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS,
        0x80,
        0,
        0,
        0,
        ...F4,
        0,
        0,
      ],
      reportSupportedTmf,
      { ...NO_CONFLICT, ...READ_CLASS },
    ),
  ]),
  lunCommand(
    "READ(12)",
    [Opcode.READ_12, READ_FLAGS, ...F4, ...F4, 0x1f, 0],
    readHandler(decodeRw12, 6),
    READ_CLASS,
  ),
  lunCommand(
    "WRITE(12)",
    [Opcode.WRITE_12, WRITE_FLAGS, ...F4, ...F4, 0x1f, 0],
    writeHandler(decodeRw12, 6),
    DATA_OUT,
  ),
  lunCommand(
    "WRITE AND VERIFY(12)",
    [Opcode.WRITE_AND_VERIFY_12, WRITE_VERIFY_FLAGS, ...F4, ...F4, 0x1f, 0],
    writeAndVerifyHandler(decodeVerify12, 6),
    DATA_OUT,
  ),
  lunCommand(
    "VERIFY(12)",
    [Opcode.VERIFY_12, VERIFY_FLAGS, ...F4, ...F4, 0x1f, 0],
    verifyHandler(decodeVerify12, 6),
    { ...DATA_OUT, ...READ_CLASS },
  ),
  lunCommand(
    "READ DEFECT DATA(12)",
    // REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT; ADDRESS DESCRIPTOR INDEX; ALLOCATION LENGTH.
    [Opcode.READ_DEFECT_DATA_12, 0x1f, ...F4, ...F4, 0, 0],
    readDefectDataHandler(decodeReadDefectData12, 1, 8),
    READ_CLASS,
  ),
];

function prInCommand(name: string, serviceAction: number, handler: LunHandler): CommandSpec {
  return lunCommand(
    `PERSISTENT RESERVE IN / ${name}`,
    [PrOpcode.PERSISTENT_RESERVE_IN, serviceAction, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
    handler,
    { conflictsWithReservation: false, reservation: "persistent-reserve" },
  );
}

function prOutCommand(name: string, serviceAction: number): CommandSpec {
  return lunCommand(
    `PERSISTENT RESERVE OUT / ${name}`,
    [PrOpcode.PERSISTENT_RESERVE_OUT, serviceAction, 0xff, 0, 0, ...F4, 0],
    persistentReserveOut,
    { dataOut: true, conflictsWithReservation: false, reservation: "persistent-reserve" },
  );
}

function sanitizeCommand(name: string, serviceAction: number): CommandSpec {
  return lunCommand(
    `SANITIZE / ${name}`,
    [SANITIZE, 0xa0 | serviceAction, 0, 0, 0, 0, 0, 0xff, 0xff, 0],
    sanitize,
    { dataOut: serviceAction === SanitizeAction.OVERWRITE },
  );
}

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
    reservation: "allowed",
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
  // Commands that read or write logical blocks go through the unit's gate, which keeps them
  // out of the ranges COMPARE AND WRITE and the other atomic commands hold (./commands/io-gate.ts).
  // Every command addressed to a logical unit is refused while it is being sanitized
  // (./commands/sanitize.ts), before it waits at the gate.
  TABLE[entry.opcode] =
    "kind" in entry
      ? { ...entry, actions: mapActions(entry.actions, refuseWhileSanitizing) }
      : refuseWhileSanitizing(gateMediumAccess(entry));
}

function mapActions(
  actions: ReadonlyMap<number, CommandSpec>,
  wrap: (spec: CommandSpec) => CommandSpec,
): ReadonlyMap<number, CommandSpec> {
  return new Map([...actions].map(([serviceAction, spec]) => [serviceAction, wrap(spec)]));
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
