/**
 * SCSI constants used by the command set, grouped by the spec section that defines them.
 * Additional sense codes (ASC/ASCQ) live in ./asc.ts.
 */

/** SAM-5 5.3.1, table "Status codes". */
export const ScsiStatus = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
  CONDITION_MET: 0x04,
  BUSY: 0x08,
  RESERVATION_CONFLICT: 0x18,
  TASK_SET_FULL: 0x28,
  ACA_ACTIVE: 0x30,
  TASK_ABORTED: 0x40,
} as const;
export type ScsiStatus = (typeof ScsiStatus)[keyof typeof ScsiStatus];

/** SPC-4 4.5.6, table "Sense key descriptions". */
export const SenseKey = {
  NO_SENSE: 0x0,
  RECOVERED_ERROR: 0x1,
  NOT_READY: 0x2,
  MEDIUM_ERROR: 0x3,
  HARDWARE_ERROR: 0x4,
  ILLEGAL_REQUEST: 0x5,
  UNIT_ATTENTION: 0x6,
  DATA_PROTECT: 0x7,
  BLANK_CHECK: 0x8,
  VENDOR_SPECIFIC: 0x9,
  COPY_ABORTED: 0xa,
  ABORTED_COMMAND: 0xb,
  VOLUME_OVERFLOW: 0xd,
  MISCOMPARE: 0xe,
  COMPLETED: 0xf,
} as const;
export type SenseKey = (typeof SenseKey)[keyof typeof SenseKey];

/** SPC-4 4.5.1: sense data RESPONSE CODE values. */
export const SenseResponseCode = {
  FIXED_CURRENT: 0x70,
  FIXED_DEFERRED: 0x71,
  DESCRIPTOR_CURRENT: 0x72,
  DESCRIPTOR_DEFERRED: 0x73,
} as const;

/** Operation codes: SPC-4 annex D (table D.2) and SBC-4 table "Commands for direct access block devices". */
export const Opcode = {
  TEST_UNIT_READY: 0x00,
  REQUEST_SENSE: 0x03,
  READ_6: 0x08,
  WRITE_6: 0x0a,
  INQUIRY: 0x12,
  MODE_SELECT_6: 0x15,
  RESERVE_6: 0x16,
  RELEASE_6: 0x17,
  MODE_SENSE_6: 0x1a,
  START_STOP_UNIT: 0x1b,
  PREVENT_ALLOW_MEDIUM_REMOVAL: 0x1e,
  READ_CAPACITY_10: 0x25,
  READ_10: 0x28,
  WRITE_10: 0x2a,
  WRITE_AND_VERIFY_10: 0x2e,
  VERIFY_10: 0x2f,
  PRE_FETCH_10: 0x34,
  SYNCHRONIZE_CACHE_10: 0x35,
  READ_DEFECT_DATA_10: 0x37,
  WRITE_SAME_10: 0x41,
  UNMAP: 0x42,
  MODE_SELECT_10: 0x55,
  MODE_SENSE_10: 0x5a,
  /** SPC-4: THIRD-PARTY COPY OUT (service action 00h: EXTENDED COPY (LID1)). */
  THIRD_PARTY_COPY_OUT: 0x83,
  /** SPC-4: THIRD-PARTY COPY IN (RECEIVE COPY RESULTS service actions). */
  THIRD_PARTY_COPY_IN: 0x84,
  READ_16: 0x88,
  COMPARE_AND_WRITE: 0x89,
  WRITE_16: 0x8a,
  ORWRITE_16: 0x8b,
  WRITE_AND_VERIFY_16: 0x8e,
  VERIFY_16: 0x8f,
  PRE_FETCH_16: 0x90,
  SYNCHRONIZE_CACHE_16: 0x91,
  WRITE_SAME_16: 0x93,
  WRITE_ATOMIC_16: 0x9c,
  SERVICE_ACTION_IN_16: 0x9e,
  REPORT_LUNS: 0xa0,
  MAINTENANCE_IN: 0xa3,
  READ_12: 0xa8,
  WRITE_12: 0xaa,
  WRITE_AND_VERIFY_12: 0xae,
  VERIFY_12: 0xaf,
  READ_DEFECT_DATA_12: 0xb7,
} as const;

/** SBC-4: service actions of SERVICE ACTION IN(16) (opcode 9Eh). */
export const ServiceActionIn16 = {
  READ_CAPACITY_16: 0x10,
  GET_LBA_STATUS: 0x12,
} as const;

/** SPC-4: service actions of MAINTENANCE IN (opcode A3h). */
export const MaintenanceIn = {
  REPORT_SUPPORTED_OPERATION_CODES: 0x0c,
  REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS: 0x0d,
} as const;

/** SPC-4 third-party copy: service actions of THIRD-PARTY COPY OUT (opcode 83h) we serve. */
export const ThirdPartyCopyOut = {
  EXTENDED_COPY_LID1: 0x00,
} as const;

/** SPC-4 third-party copy: service actions of THIRD-PARTY COPY IN (opcode 84h) we serve. */
export const ThirdPartyCopyIn = {
  RECEIVE_COPY_STATUS_LID1: 0x00,
  RECEIVE_COPY_OPERATING_PARAMETERS: 0x03,
  RECEIVE_COPY_FAILED_SEGMENT_DETAILS: 0x04,
} as const;

/** SPC-4 7.8 / SBC-4 VPD page codes we serve. */
export const VpdPage = {
  SUPPORTED_PAGES: 0x00,
  UNIT_SERIAL_NUMBER: 0x80,
  DEVICE_IDENTIFICATION: 0x83,
  EXTENDED_INQUIRY: 0x86,
  /** SPC-4 7.8.17: Third-party Copy. */
  THIRD_PARTY_COPY: 0x8f,
  BLOCK_LIMITS: 0xb0,
  BLOCK_DEVICE_CHARACTERISTICS: 0xb1,
  LOGICAL_BLOCK_PROVISIONING: 0xb2,
  /** Vendor specific (SPC-4 7.8: C0h..FFh): the sanmux host name, see commands/vpd.ts. */
  SANMUX_HOST: 0xc0,
} as const;

/** SPC-4 7.5 / SBC-4: mode page codes we serve. */
export const ModePage = {
  DISCONNECT_RECONNECT: 0x02,
  CACHING: 0x08,
  CONTROL: 0x0a,
  POWER_CONDITION: 0x1a,
  INFORMATIONAL_EXCEPTIONS: 0x1c,
  ALL_PAGES: 0x3f,
} as const;

/** SPC-4 MODE SENSE: the PC (page control) field. */
export const PageControl = {
  CURRENT: 0,
  CHANGEABLE: 1,
  DEFAULT: 2,
  SAVED: 3,
} as const;
export type PageControl = (typeof PageControl)[keyof typeof PageControl];

/** SPC-4 6.6.2, table "Version descriptor values" (the "no version claimed" entries). */
export const VersionDescriptor = {
  SAM_5: 0x00a0,
  ISCSI: 0x0960,
  SPC_4: 0x0460,
  SBC_3: 0x04c0,
  SBC_4: 0x0600,
} as const;

/** SPC-4 7.8.6: designator types, code sets, associations and the iSCSI protocol identifier. */
export const Designator = {
  CODE_SET_BINARY: 0x1,
  CODE_SET_ASCII: 0x2,
  CODE_SET_UTF8: 0x3,
  ASSOC_LOGICAL_UNIT: 0x0,
  ASSOC_TARGET_PORT: 0x1,
  ASSOC_TARGET_DEVICE: 0x2,
  TYPE_VENDOR_SPECIFIC: 0x0,
  TYPE_T10_VENDOR_ID: 0x1,
  TYPE_NAA: 0x3,
  TYPE_RELATIVE_TARGET_PORT: 0x4,
  TYPE_SCSI_NAME_STRING: 0x8,
  /** SPC-4 7.6, table "PROTOCOL IDENTIFIER values". */
  PROTOCOL_ISCSI: 0x5,
} as const;

/** Peripheral bytes of INQUIRY data (SPC-4 6.6.2). */
export const Peripheral = {
  /** Qualifier 000b, device type 00h: a direct access block device is connected. */
  DISK: 0x00,
  /** Qualifier 011b, device type 1Fh: no logical unit is addressed by this LUN. */
  NO_LUN: 0x7f,
} as const;

/** Our limits, reported in the Block Limits VPD page (SBC-4) and enforced by the commands. */
export const Limits = {
  /** Largest READ/WRITE/VERIFY transfer we accept, in bytes (divided by blockSize for the VPD). */
  MAX_TRANSFER_BYTES: 16 * 1024 * 1024,
  /**
   * The pool's default grain (4 KiB): the optimal transfer and unmap granularity of a volume that
   * reports no `physicalBlockSize` (the file backend; a volume that reports one uses it), and the
   * atomic write unit of volumes without `writeAtomic` (./commands/write-atomic.ts).
   */
  GRAIN_BYTES: 4096,
  /**
   * Largest UNMAP range, in bytes (divided by blockSize for the VPD): 512 MiB, so
   * that MAXIMUM UNMAP LBA COUNT stays <= 2^20 blocks, which libiscsi's BlockLimits test holds
   * to be the sane bound for an explicit limit.
   */
  MAX_UNMAP_BYTES: 512 * 1024 * 1024,
  /**
   * MAXIMUM WRITE SAME LENGTH in blocks: FFFFh, the largest WRITE SAME (10) can ask for (as
   * LIO). Larger ranges go through UNMAP or several commands; libiscsi's WriteSame16.Unmap
   * otherwise writes the whole range with one WRITE (16) beyond MAXIMUM TRANSFER LENGTH.
   */
  MAX_WRITE_SAME_BLOCKS: 0xffff,
  /**
   * MAXIMUM COMPARE AND WRITE LENGTH (Block Limits VPD byte 5, an 8-bit field): the largest
   * NUMBER OF LOGICAL BLOCKS a COMPARE AND WRITE may ask for. 255 blocks are at most 1020 KiB
   * (2040 KiB of Data-Out) on 4 KiB LUNs: the range is locked against every other command for
   * the read + compare + write only.
   */
  MAX_COMPARE_AND_WRITE_BLOCKS: 255,
  /** Most block descriptors in one UNMAP parameter list. */
  MAX_UNMAP_DESCRIPTORS: 256,
  /** WRITE SAME (without UNMAP) writes the pattern in chunks of at most this many bytes. */
  WRITE_SAME_CHUNK_BYTES: 1024 * 1024,
  /** Unit attentions kept per I_T nexus and logical unit before the oldest is dropped. */
  MAX_PENDING_UNIT_ATTENTIONS: 16,
} as const;
