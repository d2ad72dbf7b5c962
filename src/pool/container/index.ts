/**
 * Chunk containers: append-only, self-describing files of compressed, encrypted chunk records.
 * The byte format is FORMAT.md in this folder.
 */
export { ContainerIntegrityError } from "./errors.js";
export {
  Codec,
  type ContainerHeader,
  DamageReason,
  type DirectoryEntry,
  FILE_HEADER_BYTES,
  type Footer,
  MAX_LOGICAL_BYTES,
  RECORD_HEADER_BYTES,
} from "./format.js";
export {
  ContainerReader,
  type ContainerReaderOptions,
  readContainerHeader,
  readDirectory,
  type SealedDirectory,
} from "./reader.js";
export { type ContainerKeys, containerKeys, zstdPays } from "./record.js";
export {
  type Damage,
  type ScannedRecord,
  type ScanOptions,
  type ScanResult,
  scanContainer,
  type TornTail,
} from "./scan.js";
export {
  type AppendResult,
  CONTAINER_SUFFIX,
  ContainerWriter,
  type ContainerWriterOptions,
  type CreateContainerOptions,
  containerFileName,
  MAX_RECORDS,
  type OpenContainerOptions,
  type SealResult,
} from "./writer.js";
