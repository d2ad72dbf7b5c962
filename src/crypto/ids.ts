/**
 * 128-bit identifiers (domains, containers), written as canonical lowercase UUID text in the API
 * and as 16 raw bytes in files and key derivations. They are random (`newId`), never derived from
 * names, so renaming a domain never changes its keys and two pools never share an id by accident.
 */
import { randomUUID } from "node:crypto";

export const ID_BYTES = 16;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A fresh random id (UUID v4 text). */
export function newId(): string {
  return randomUUID();
}

export function isId(value: string): boolean {
  return UUID_RE.test(value);
}

/** The 16 bytes of a UUID-text id. Throws a TypeError on anything else. */
export function idToBytes(id: string): Buffer {
  if (!UUID_RE.test(id)) throw new TypeError(`not a 128-bit id (UUID text): ${JSON.stringify(id)}`);
  return Buffer.from(id.replaceAll("-", ""), "hex");
}

/** The canonical lowercase UUID text of 16 bytes. */
export function idFromBytes(bytes: Uint8Array): string {
  if (bytes.length !== ID_BYTES)
    throw new TypeError(`an id has ${ID_BYTES} bytes, got ${bytes.length}`);
  const h = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
