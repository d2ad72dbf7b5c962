/**
 * iSCSI text data: key=value pairs, each followed by one NUL (RFC 7143 6.1), as carried by Login
 * and Text requests/responses; plus the value encodings of 6.1 (numbers, binary values, lists).
 *
 * Text split across PDUs: a key=value pair may span PDU boundaries. The caller concatenates the
 * data segments of a series of PDUs with C=1 ending with one with C=0 (one "logical text data
 * segment", LTDS, RFC 7143 6.1) and parses the concatenation once; never parse a single PDU of a
 * continued series.
 *
 * Errors: malformed text throws `TextFormatError`; the caller decides what that means (login:
 * initiator error; full feature phase: Reject PDU).
 */

/** RFC 7143 6.1: a key-name (standard-label) does not exceed 63 characters. */
export const MAX_KEY_NAME_LENGTH = 63;
/** RFC 7143 6.1: the longest value we accept (the largest values, CHAP binaries, are far shorter). */
export const MAX_VALUE_LENGTH = 8192;

export class TextFormatError extends Error {
  override readonly name = "TextFormatError";
}

/**
 * RFC 7143 6.1: standard-label (a capital letter, then letters, digits, dot, minus, plus, at,
 * underscore), which also covers the private "X-" keys of 13.22; public extension keys are
 * "X#" followed by an IANA-registered string. Interop: the first letter may be lower case,
 * because RFC 7144 defines "iSCSIProtocolLevel" (we answer it NotUnderstood).
 */
const KEY_NAME = /^(?:[A-Za-z][A-Za-z0-9.\-+@_]*|X#[A-Za-z0-9.\-+@_]+)$/;

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Parse one LTDS into its pairs, in order, duplicates kept (the negotiation decides what a
 * duplicate means). Rejects: an item without "=", an invalid or over-long key name, an over-long
 * value, invalid UTF-8, text not ending with NUL, and an empty item between two pairs.
 * NULs after the last pair are tolerated (some implementations count padding in the data
 * segment length). Empty data gives no pairs.
 */
export function parseTextKeys(data: Buffer): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  let end = data.length;
  while (end > 0 && data[end - 1] === 0) end--;
  if (end === 0) return pairs;
  if (end === data.length) throw new TextFormatError("text data does not end with NUL");
  let start = 0;
  while (start < end) {
    // data[end] is a NUL, so one is always found at or before `end`.
    const stop = data.indexOf(0, start);
    if (stop === start) throw new TextFormatError(`empty key=value item at offset ${start}`);
    pairs.push(parseItem(data.subarray(start, stop), start));
    start = stop + 1;
  }
  return pairs;
}

function parseItem(item: Buffer, offset: number): [string, string] {
  const eq = item.indexOf(0x3d); // "="
  if (eq < 0) throw new TextFormatError(`key=value item without "=" at offset ${offset}`);
  if (eq > MAX_KEY_NAME_LENGTH) {
    throw new TextFormatError(`key name longer than ${MAX_KEY_NAME_LENGTH} bytes at ${offset}`);
  }
  const key = item.toString("latin1", 0, eq);
  if (!KEY_NAME.test(key)) throw new TextFormatError(`invalid key name at offset ${offset}`);
  const valueBytes = item.subarray(eq + 1);
  if (valueBytes.length > MAX_VALUE_LENGTH) {
    throw new TextFormatError(`value of ${key} longer than ${MAX_VALUE_LENGTH} bytes`);
  }
  let value: string;
  try {
    value = utf8.decode(valueBytes);
  } catch (cause) {
    throw new TextFormatError(`value of ${key} is not UTF-8`, { cause });
  }
  return [key, value];
}

/**
 * Encode pairs as text data (each pair followed by NUL). Throws on pairs that could not be parsed
 * back (our own answers are always valid; this guards against echoing garbage).
 */
export function encodeTextKeys(pairs: ReadonlyArray<readonly [string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [key, value] of pairs) {
    if (!KEY_NAME.test(key) || key.length > MAX_KEY_NAME_LENGTH) {
      throw new TextFormatError(`cannot encode key name ${JSON.stringify(key)}`);
    }
    const bytes = Buffer.from(value, "utf8");
    if (bytes.includes(0) || bytes.length > MAX_VALUE_LENGTH) {
      throw new TextFormatError(`cannot encode the value of ${key}`);
    }
    parts.push(Buffer.from(`${key}=`, "latin1"), bytes, NUL);
  }
  return Buffer.concat(parts);
}

const NUL = Buffer.alloc(1);

/**
 * RFC 7143 6.1 numerical-value: a decimal constant or a hex constant ("0x"/"0X"), unsigned.
 * Returns undefined when the text is not one, or is beyond Number.MAX_SAFE_INTEGER (every iSCSI
 * numeric key is far below).
 */
export function parseNumericValue(text: string): number | undefined {
  let n: number;
  if (/^[0-9]{1,16}$/.test(text)) n = Number.parseInt(text, 10);
  else if (/^0[xX][0-9a-fA-F]{1,13}$/.test(text)) n = Number.parseInt(text.slice(2), 16);
  else return undefined;
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * RFC 7143 6.1 binary-value: a hex constant ("0x"/"0X", an odd digit count implies a leading
 * zero) or a base64 constant ("0b"/"0B", RFC 4648 with padding). Throws `TextFormatError`.
 */
export function decodeBinaryValue(text: string): Buffer {
  const prefix = text.slice(0, 2);
  const body = text.slice(2);
  if (prefix === "0x" || prefix === "0X") {
    if (!/^[0-9a-fA-F]+$/.test(body)) throw new TextFormatError("malformed hex constant");
    return Buffer.from(body.length % 2 === 1 ? `0${body}` : body, "hex");
  }
  if (prefix === "0b" || prefix === "0B") {
    if (body.length === 0 || body.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(body)) {
      throw new TextFormatError("malformed base64 constant");
    }
    return Buffer.from(body, "base64");
  }
  throw new TextFormatError("binary value must start with 0x or 0b");
}

/** Encode bytes as a hex constant, the form every initiator parses (RFC 7143 6.1). */
export function encodeHexValue(bytes: Buffer): string {
  return `0x${bytes.toString("hex")}`;
}

/** RFC 7143 6.1 list-of-values: comma-separated values, in the proposer's order of preference. */
export function parseListValue(text: string): string[] {
  return text.split(",");
}
