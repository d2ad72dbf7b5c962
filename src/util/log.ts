/**
 * Logging: JSON lines on stdout (pino), one object per line, ISO timestamps.
 *
 * The level comes from `options.level`, else the `SANMUX_LOG_LEVEL` environment variable, else
 * `info`. An unknown level in the environment does not stop the server: the logger falls back to
 * `info` and says so in its first line. Secrets are redacted wherever a CHAP block or a field
 * named `secret` / `targetSecret` is logged.
 *
 * Give every long-lived thing its own child logger (`childFor(log, { initiator, channel })`) so
 * that each line carries its context.
 */
import { type DestinationStream, type Logger, pino } from "pino";

export type { Logger } from "pino";

export const LOG_LEVEL_ENV = "SANMUX_LOG_LEVEL";
const LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LEVELS)[number];

export interface LoggerOptions {
  /** Minimum level. Default: `$SANMUX_LOG_LEVEL`, else "info". */
  readonly level?: LogLevel;
  /** Value of the `name` field on every line. Default "sanmux". */
  readonly name?: string;
  /** Where lines go. Default: stdout (file descriptor 1, synchronous writes). */
  readonly destination?: DestinationStream;
  /** Environment to read `SANMUX_LOG_LEVEL` from (tests). Default `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

const REDACT_PATHS = [
  "secret",
  "targetSecret",
  "target_secret",
  "*.secret",
  "*.targetSecret",
  "*.target_secret",
  "chap.secret",
  "chap.targetSecret",
];

export function isLogLevel(value: string): value is LogLevel {
  return (LEVELS as readonly string[]).includes(value);
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const fromEnv = (options.env ?? process.env)[LOG_LEVEL_ENV]?.trim().toLowerCase();
  let level: LogLevel = "info";
  let badLevel: string | undefined;
  if (options.level !== undefined) {
    level = options.level;
  } else if (fromEnv !== undefined && fromEnv !== "") {
    if (isLogLevel(fromEnv)) level = fromEnv;
    else badLevel = fromEnv;
  }
  const logger = pino(
    {
      name: options.name ?? "sanmux",
      level,
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    },
    options.destination ?? pino.destination({ dest: 1, sync: true }),
  );
  if (badLevel !== undefined) {
    logger.warn(
      { [LOG_LEVEL_ENV]: badLevel, allowed: LEVELS },
      `unknown log level in ${LOG_LEVEL_ENV}; using "info"`,
    );
  }
  return logger;
}

/** A child logger whose every line carries `bindings` (e.g. `{ initiator, channel }`). */
export function childFor(logger: Logger, bindings: Readonly<Record<string, unknown>>): Logger {
  return logger.child(bindings);
}
