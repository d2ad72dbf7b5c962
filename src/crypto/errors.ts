/**
 * Errors of the key hierarchy. `KeyError` is an operator-facing problem with the master key (its
 * message says what to do); `AuthenticationError` is an AEAD tag that did not verify (tampered,
 * damaged, moved or wrong-key data). Layers above translate the latter into their own integrity
 * error (the pool: `StorageError` with code MediumError); nothing here knows about storage.
 */

export const KeyErrorCode = {
  /** Neither a key file nor SANMUX_MASTER_KEY was given. */
  NoKey: "NO_KEY",
  /** The key file (or the environment variable) does not hold a valid 32-byte key. */
  BadFormat: "BAD_FORMAT",
  /** The key file is accessible by group or others, or owned by another user. */
  UnsafePermissions: "UNSAFE_PERMISSIONS",
  /** The key file cannot be read (missing, not a regular file, I/O error). */
  Unreadable: "UNREADABLE",
  /** `createKeyFile` found a file already there and refused to overwrite it. */
  Exists: "EXISTS",
  /** The key file and SANMUX_MASTER_KEY are both given and hold different keys. */
  Conflict: "CONFLICT",
  /** The key is not the one the data directory was created with (key check value mismatch). */
  WrongKey: "WRONG_KEY",
} as const;
export type KeyErrorCode = (typeof KeyErrorCode)[keyof typeof KeyErrorCode];

export class KeyError extends Error {
  override readonly name = "KeyError";
  constructor(
    readonly code: KeyErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** An AES-256-GCM tag did not verify: the data must not be used. */
export class AuthenticationError extends Error {
  override readonly name = "AuthenticationError";
}
