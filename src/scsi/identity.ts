/**
 * Stable identifiers of a logical unit, derived only from the volume id, so that they are the
 * same across restarts and for every agent that maps the volume, and differ between volumes
 * (volume ids are random UUIDs, unique between volumes and between sanmux hosts).
 */
import { createHash } from "node:crypto";

/**
 * IEEE company identifier put in NAA 6 designators (SPC-4 7.8.6).
 *
 * PLACEHOLDER: sanmux has no IEEE-assigned OUI/CID yet. This value has the shape of a CID
 * (second hex digit A, the "locally administered" pattern) so that it does not impersonate a
 * vendor's MA-L block; replace it with an assigned identifier before a release. Changing it
 * changes every volume's NAA designator (hosts see new WWIDs), so do it once.
 */
export const SANMUX_IEEE_COMPANY_ID = 0x5a4d58;

const PRINTABLE_ID = /^[\x21-\x7e]{1,64}$/;

/**
 * The volume id as it appears in ASCII identifiers (unit serial number, T10 vendor id
 * designator): verbatim when it is 1..64 printable ASCII characters without spaces (a UUID
 * always is), otherwise "H" followed by 32 hex digits of its SHA-256.
 */
export function volumeIdText(volumeId: string): string {
  if (PRINTABLE_ID.test(volumeId)) return volumeId;
  return `H${createHash("sha256").update(volumeId, "utf8").digest("hex").slice(0, 32)}`;
}

/**
 * NAA IEEE Registered Extended designator (SPC-4 7.8.6), 16 bytes: NAA 6h (4 bits), IEEE
 * COMPANY ID (24 bits), then 100 bits (VENDOR SPECIFIC IDENTIFIER + VENDOR SPECIFIC IDENTIFIER
 * EXTENSION) taken from SHA-256("sanmux:naa:" + volume id).
 */
export function naaRegisteredExtended(
  volumeId: string,
  companyId: number = SANMUX_IEEE_COMPANY_ID,
): Buffer {
  const hash = createHash("sha256").update(`sanmux:naa:${volumeId}`, "utf8").digest();
  const out = Buffer.alloc(16);
  out[0] = 0x60 | ((companyId >>> 20) & 0x0f);
  out[1] = (companyId >>> 12) & 0xff;
  out[2] = (companyId >>> 4) & 0xff;
  hash.copy(out, 3, 0, 13);
  out[3] = ((companyId & 0x0f) << 4) | (hash[0]! & 0x0f);
  return out;
}
