/**
 * REPORT SUPPORTED OPERATION CODES, SPC-4 (MAINTENANCE IN, service action 0Ch), answered from
 * the dispatch table: what it reports is exactly what the dispatcher accepts, including the
 * CDB usage maps that the dispatcher validates CDBs against.
 *
 * REPORTING OPTIONS:
 *  - 000b: all commands (command descriptors, SPC-4 "all_commands parameter data");
 *  - 001b: one command without service action (INVALID FIELD IN CDB if it has service actions);
 *  - 010b: one command with service action (INVALID FIELD IN CDB if it has none);
 *  - 011b: one command, with or without service action;
 *  - other values: INVALID FIELD IN CDB.
 * RCTD adds a command timeouts descriptor (SPC-4) with both timeouts 0 (not specified).
 */
import { decodeReportSupportedOpcodes } from "../cdb-spc.js";
import type { LunHandler } from "../context.js";
import type { CommandSpec } from "../dispatch.js";
import { invalidCdbField } from "../sense.js";
import { dataIn } from "./common.js";

/** What the handler needs from the dispatch table. */
export interface OpcodeCatalog {
  /** Every supported command, service actions flattened, in opcode order. */
  all(): readonly CommandSpec[];
  /** The command for an opcode, its service actions, or undefined when unsupported. */
  find(opcode: number): CommandSpec | ReadonlyMap<number, CommandSpec> | undefined;
}

const TIMEOUTS_DESCRIPTOR_LENGTH = 12;
/** SUPPORT field values (one command format). */
const SUPPORT_NOT_SUPPORTED = 0b001;
const SUPPORT_STANDARD = 0b011;

function timeoutsDescriptor(): Buffer {
  const out = Buffer.alloc(TIMEOUTS_DESCRIPTOR_LENGTH);
  out.writeUInt16BE(0x0a, 0); // DESCRIPTOR LENGTH
  return out;
}

/** SPC-4 command descriptor (8 bytes, plus a timeouts descriptor when `rctd`). */
function commandDescriptor(spec: CommandSpec, rctd: boolean): Buffer {
  const out = Buffer.alloc(8 + (rctd ? TIMEOUTS_DESCRIPTOR_LENGTH : 0));
  out[0] = spec.opcode;
  out.writeUInt16BE(spec.serviceAction ?? 0, 2);
  out[5] = (rctd ? 0x02 : 0) | (spec.serviceAction !== undefined ? 0x01 : 0); // CTDP, SERVACTV
  out.writeUInt16BE(spec.cdbLength, 6);
  if (rctd) timeoutsDescriptor().copy(out, 8);
  return out;
}

/** SPC-4 one_command parameter data. */
function oneCommand(spec: CommandSpec | undefined, rctd: boolean): Buffer {
  if (!spec) return Buffer.from([0, SUPPORT_NOT_SUPPORTED, 0, 0]);
  const out = Buffer.alloc(4 + spec.cdbLength + (rctd ? TIMEOUTS_DESCRIPTOR_LENGTH : 0));
  out[1] = (rctd ? 0x80 : 0) | SUPPORT_STANDARD;
  out.writeUInt16BE(spec.cdbLength, 2);
  Buffer.from(spec.usage).copy(out, 4);
  if (rctd) timeoutsDescriptor().copy(out, 4 + spec.cdbLength);
  return out;
}

export function reportSupportedOpcodesHandler(catalog: OpcodeCatalog): LunHandler {
  return (cmd) => {
    const d = decodeReportSupportedOpcodes(cmd.cdb);
    let data: Buffer;
    switch (d.reportingOptions) {
      case 0b000: {
        const descriptors = catalog.all().map((s) => commandDescriptor(s, d.rctd));
        const header = Buffer.alloc(4);
        header.writeUInt32BE(
          descriptors.reduce((n, b) => n + b.length, 0),
          0,
        );
        data = Buffer.concat([header, ...descriptors]);
        break;
      }
      case 0b001: {
        const found = catalog.find(d.requestedOpcode);
        if (found instanceof Map) throw invalidCdbField(3);
        data = oneCommand(found as CommandSpec | undefined, d.rctd);
        break;
      }
      case 0b010: {
        const found = catalog.find(d.requestedOpcode);
        if (found !== undefined && !(found instanceof Map)) throw invalidCdbField(3);
        data = oneCommand(found?.get(d.requestedServiceAction), d.rctd);
        break;
      }
      case 0b011: {
        const found = catalog.find(d.requestedOpcode);
        const spec =
          found instanceof Map
            ? found.get(d.requestedServiceAction)
            : d.requestedServiceAction === 0
              ? (found as CommandSpec | undefined)
              : undefined;
        data = oneCommand(spec, d.rctd);
        break;
      }
      default:
        throw invalidCdbField(2, 2);
    }
    return dataIn(data, d.allocationLength);
  };
}
