/**
 * iSCSI name syntax and normalization (RFC 7143 4.2.7, RFC 3722 stringprep profile).
 *
 * Three formats exist (4.2.7.3 - 4.2.7.6):
 *   iqn.<yyyy-mm>.<reversed domain name>[:<unique string>]   e.g. iqn.1994-05.com.example:backup1
 *   eui.<16 hex digits>                                       e.g. eui.02004567A425678D
 *   naa.<16 or 32 hex digits>                                 e.g. naa.52004567BA64678D
 * A name is at most 223 bytes in UTF-8 (4.2.7.1).
 *
 * Names are compared after normalization (4.2.7.1: "iSCSI names are ... case-insensitive" by way
 * of the stringprep profile, which maps to lowercase and applies NFKC). `normalizeIscsiName`
 * does that; compare normalized forms only.
 *
 * After normalization, RFC 3722 allows only ASCII letters, digits, '-', '.', ':' and non-ASCII
 * letters and digits; punctuation such as '_' or '/' and all whitespace are prohibited output.
 * We enforce that: an RFC-conforming initiator never sends such a name, and refusing it in the
 * config catches typos early.
 */

export const ISCSI_NAME_MAX_BYTES = 223;

const IQN = /^iqn\.(\d{4})-(\d{2})\.([^:]+)(?::(.*))?$/s;
const DOMAIN_LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
const UNIQUE_PART = /^[\p{L}\p{N}.:-]+$/u;
const EUI = /^eui\.[0-9a-f]{16}$/;
const NAA = /^naa\.(?:[0-9a-f]{16}|[0-9a-f]{32})$/;

/** The normalized form of an iSCSI name (RFC 3722: NFKC + lowercase). Compare only these. */
export function normalizeIscsiName(name: string): string {
  return name.normalize("NFKC").toLowerCase();
}

/**
 * Why `name` is not a valid iSCSI name, or `undefined` when it is. The message completes the
 * sentence "<name> is not a valid iSCSI name: ...".
 */
export function iscsiNameProblem(name: string): string | undefined {
  if (name.length === 0) return "empty";
  if (Buffer.byteLength(name, "utf8") > ISCSI_NAME_MAX_BYTES) {
    return `longer than ${ISCSI_NAME_MAX_BYTES} bytes (RFC 7143 4.2.7.1)`;
  }
  const n = normalizeIscsiName(name);
  if (n.startsWith("iqn.")) {
    const m = IQN.exec(n);
    if (m === null) {
      return "an iqn name is iqn.<yyyy-mm>.<reversed domain>[:<unique string>] (RFC 7143 4.2.7.4)";
    }
    const month = Number(m[2]);
    if (month < 1 || month > 12) return `month "${m[2]}" of the iqn date is not 01..12`;
    const labels = (m[3] ?? "").split(".");
    for (const label of labels) {
      if (!DOMAIN_LABEL.test(label)) {
        return `"${m[3]}" is not a reversed domain name (labels of a-z, 0-9 and '-')`;
      }
    }
    const unique = m[4];
    if (unique !== undefined && !UNIQUE_PART.test(unique)) {
      return unique === ""
        ? "nothing follows the ':'"
        : `"${unique}" may hold only letters, digits, '.', '-' and ':' (RFC 3722)`;
    }
    return undefined;
  }
  if (n.startsWith("eui.")) {
    return EUI.test(n) ? undefined : "an eui name is eui. and 16 hex digits (RFC 7143 4.2.7.5)";
  }
  if (n.startsWith("naa.")) {
    return NAA.test(n)
      ? undefined
      : "a naa name is naa. and 16 or 32 hex digits (RFC 7143 4.2.7.6)";
  }
  return "must start with iqn., eui. or naa. (RFC 7143 4.2.7)";
}

export function isValidIscsiName(name: string): boolean {
  return iscsiNameProblem(name) === undefined;
}

/**
 * Turn a host name into the unique-string part of an IQN: lowercase, every character outside
 * a-z, 0-9, '.', '-' replaced by '-', runs of '-' collapsed, leading/trailing '.'/'-' removed.
 * An empty result becomes "localhost".
 */
export function iqnSuffixFromHostName(hostName: string): string {
  const s = hostName
    .toLowerCase()
    .replace(/[^a-z0-9.-]/g, "-")
    .replace(/-{2,}/g, "-")
    .replace(/^[.-]+|[.-]+$/g, "");
  return s === "" ? "localhost" : s;
}
