/**
 * ASCII data fields (SPC-4 4.4.1): only 20h..7Eh, left-aligned, padded with spaces.
 */

/** `text` as an ASCII field of exactly `length` bytes; other characters become "?". */
export function asciiField(text: string, length: number): Buffer {
  const out = Buffer.alloc(length, 0x20);
  const n = Math.min(text.length, length);
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    out[i] = c >= 0x20 && c <= 0x7e ? c : 0x3f;
  }
  return out;
}

/** `text` as printable ASCII bytes (other characters become "?"), not padded. */
export function asciiBytes(text: string): Buffer {
  return asciiField(text, text.length);
}

/**
 * `text` as UTF-8, NUL-terminated and NUL-padded to a multiple of 4 bytes, the form of a SCSI
 * name string designator (SPC-4 7.8.6) and of our vendor page 0xC0.
 */
export function nulPadded4(bytes: Buffer): Buffer {
  const length = (bytes.length + 1 + 3) & ~3;
  const out = Buffer.alloc(length);
  bytes.copy(out, 0);
  return out;
}
