/**
 * iSCSI TransportIDs (SPC-4 7.6.4.6), the way PERSISTENT RESERVE commands name an initiator
 * port or device (READ FULL STATUS, SPEC_I_PT, REGISTER AND MOVE):
 *
 *   byte 0     FORMAT CODE (bits 7-6), PROTOCOL IDENTIFIER (bits 3-0, 5h = iSCSI)
 *   byte 1     reserved
 *   bytes 2-3  ADDITIONAL LENGTH (n - 3): a multiple of 4, at least 20
 *   bytes 4-n  the name, UTF-8, null-terminated and null-padded:
 *              format 00b: the iSCSI name of the initiator device;
 *              format 01b: the initiator port, "<iSCSI name>,i,0x<ISID in hex>".
 */
import { invalidParameterField } from "../sense.js";
import { PROTOCOL_ISCSI, TransportIdFormat } from "./constants.js";

/** An initiator named by a TransportID. */
export interface InitiatorId {
  /** The iSCSI name, lowercased. */
  readonly initiator: string;
  /** The ISID (12 lowercase hex digits) of format 01b; absent for format 00b. */
  readonly isid?: string;
}

const HEADER = 4;
const MIN_ADDITIONAL_LENGTH = 20;
const PORT_SEPARATOR = ",i,0x";

/** Encode a TransportID: format 01b when `isid` is given, else 00b. */
export function encodeTransportId(id: InitiatorId): Buffer {
  const text = id.isid === undefined ? id.initiator : `${id.initiator}${PORT_SEPARATOR}${id.isid}`;
  const name = Buffer.from(text, "utf8");
  // The name plus at least one NUL, rounded up to a multiple of 4, and at least 20 bytes.
  const padded = Math.max(MIN_ADDITIONAL_LENGTH, (name.length + 1 + 3) & ~3);
  const out = Buffer.alloc(HEADER + padded);
  const format = id.isid === undefined ? TransportIdFormat.DEVICE : TransportIdFormat.PORT;
  out[0] = (format << 6) | PROTOCOL_ISCSI;
  out.writeUInt16BE(padded, 2);
  name.copy(out, HEADER);
  return out;
}

/**
 * Decode the TransportID at `offset` of a parameter list, which must end by `end`. Returns the
 * initiator and the TransportID's length. Anything malformed, truncated or of another protocol
 * is INVALID FIELD IN PARAMETER LIST, pointing into the TransportID.
 */
export function decodeTransportId(
  data: Buffer,
  offset: number,
  end: number,
): { readonly id: InitiatorId; readonly length: number } {
  if (end - offset < HEADER) throw invalidParameterField(offset);
  const b0 = data[offset]!;
  if ((b0 & 0x0f) !== PROTOCOL_ISCSI) throw invalidParameterField(offset, 3);
  const format = b0 >>> 6;
  if (format !== TransportIdFormat.DEVICE && format !== TransportIdFormat.PORT) {
    throw invalidParameterField(offset, 7);
  }
  const additional = data.readUInt16BE(offset + 2);
  if (additional < MIN_ADDITIONAL_LENGTH || additional % 4 !== 0) {
    throw invalidParameterField(offset + 2);
  }
  const length = HEADER + additional;
  if (offset + length > end) throw invalidParameterField(offset + 2);
  const field = data.subarray(offset + HEADER, offset + length);
  const nul = field.indexOf(0);
  if (nul <= 0) throw invalidParameterField(offset + HEADER);
  const text = field.subarray(0, nul).toString("utf8").toLowerCase();
  if (format === TransportIdFormat.DEVICE) {
    if (text.includes(PORT_SEPARATOR)) throw invalidParameterField(offset + HEADER);
    return { id: { initiator: text }, length };
  }
  const at = text.lastIndexOf(PORT_SEPARATOR);
  const isid = at > 0 ? text.slice(at + PORT_SEPARATOR.length) : "";
  if (!/^[0-9a-f]{1,12}$/.test(isid)) throw invalidParameterField(offset + HEADER);
  return { id: { initiator: text.slice(0, at), isid: isid.padStart(12, "0") }, length };
}
