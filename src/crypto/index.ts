/**
 * sanmux's key hierarchy and AEAD helpers: see README.md in this folder.
 */
export {
  AEAD_KEY_BYTES,
  NONCE_BYTES,
  open,
  openInto,
  randomNonce,
  randomNonces,
  seal,
  sealInto,
  TAG_BYTES,
} from "./aead.js";
export { AuthenticationError, KeyError, KeyErrorCode } from "./errors.js";
export { ID_BYTES, idFromBytes, idToBytes, isId, newId } from "./ids.js";
export {
  type ChannelKeys,
  channelKeys,
  chunkFingerprint,
  chunkFingerprints,
  containerDataKey,
  type DomainKeys,
  domainKeys,
  FINGERPRINT_BYTES,
  KEY_BYTES,
} from "./kdf.js";
export {
  createKeyFile,
  keyCheckValue,
  keyId,
  loadMasterKey,
  MASTER_KEY_BYTES,
  MASTER_KEY_ENV,
  type MasterKeySource,
  masterKeyFromBytes,
  parseKeyFile,
  verifyMasterKey,
} from "./master-key.js";
export {
  type CryptoImplementation,
  type CryptoImplementationInfo,
  cryptoImplementation,
  cryptoImplementationInfo,
  NATIVE_CRYPTO_ENV,
  sealPlainRecordsNative,
} from "./native.js";
