/**
 * Names of agents and volumes: the catalog's keys, also used as file names (a volume `vol1`
 * lives in `volumes/vol1.img`), so the syntax is deliberately narrow: lowercase ASCII letters,
 * digits, `.`, `_` and `-`, starting with a letter or digit, at most 63 characters (a DNS label's
 * length, so that a name fits in host names, metric labels and file names everywhere).
 */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Human description of NAME_PATTERN, for error messages. */
export const NAME_RULE =
  "1 to 63 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit";

export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name);
}
