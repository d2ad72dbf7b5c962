/**
 * Vital product data pages (INQUIRY with EVPD=1), SPC-4 7.8 and SBC-4 (VPD parameters).
 *
 * Every page starts with the 4-byte header of SPC-4 7.8.1: PERIPHERAL QUALIFIER / DEVICE TYPE,
 * PAGE CODE, PAGE LENGTH (2 bytes, the length of what follows).
 */
import type { Volume } from "../../volume/volume.js";
import { asciiBytes, asciiField, nulPadded4 } from "../ascii.js";
import { Designator, Limits, Peripheral, VpdPage } from "../constants.js";
import type { LunContext, NexusContext } from "../context.js";
import { naaRegisteredExtended, volumeIdText } from "../identity.js";
import { invalidCdbField } from "../sense.js";
import { thirdPartyCopyPage } from "./copy-results.js";
import { atomicLimits } from "./write-atomic.js";
import { WSNZ } from "./write-same.js";

/** The pages we serve, ascending (SPC-4 7.8, Supported VPD Pages page: "in ascending order"). */
export const SUPPORTED_VPD_PAGES: readonly number[] = [
  VpdPage.SUPPORTED_PAGES,
  VpdPage.UNIT_SERIAL_NUMBER,
  VpdPage.DEVICE_IDENTIFICATION,
  VpdPage.EXTENDED_INQUIRY,
  VpdPage.THIRD_PARTY_COPY,
  VpdPage.BLOCK_LIMITS,
  VpdPage.BLOCK_DEVICE_CHARACTERISTICS,
  VpdPage.LOGICAL_BLOCK_PROVISIONING,
  VpdPage.SANMUX_HOST,
];

/**
 * Build a VPD page. For a LUN outside the view (`lu` undefined) only the Supported VPD Pages
 * page exists (qualifier 011b, listing itself); any other page code is INVALID FIELD IN CDB.
 */
export function buildVpdPage(
  pageCode: number,
  nexus: NexusContext,
  lu: LunContext | undefined,
): Buffer {
  if (!lu) {
    if (pageCode !== VpdPage.SUPPORTED_PAGES) throw invalidCdbField(2);
    return vpdPage(Peripheral.NO_LUN, pageCode, Buffer.from([VpdPage.SUPPORTED_PAGES]));
  }
  switch (pageCode) {
    case VpdPage.SUPPORTED_PAGES:
      return vpdPage(Peripheral.DISK, pageCode, Buffer.from(SUPPORTED_VPD_PAGES));
    case VpdPage.UNIT_SERIAL_NUMBER:
      return vpdPage(Peripheral.DISK, pageCode, unitSerialNumber(lu.entry.volumeId));
    case VpdPage.DEVICE_IDENTIFICATION:
      return vpdPage(Peripheral.DISK, pageCode, deviceIdentification(nexus, lu));
    case VpdPage.EXTENDED_INQUIRY:
      return vpdPage(Peripheral.DISK, pageCode, extendedInquiry());
    case VpdPage.THIRD_PARTY_COPY:
      return vpdPage(Peripheral.DISK, pageCode, thirdPartyCopyPage());
    case VpdPage.BLOCK_LIMITS:
      return vpdPage(Peripheral.DISK, pageCode, blockLimits(lu.entry.volume));
    case VpdPage.BLOCK_DEVICE_CHARACTERISTICS:
      return vpdPage(Peripheral.DISK, pageCode, blockDeviceCharacteristics());
    case VpdPage.LOGICAL_BLOCK_PROVISIONING:
      return vpdPage(Peripheral.DISK, pageCode, logicalBlockProvisioning());
    case VpdPage.SANMUX_HOST:
      return vpdPage(Peripheral.DISK, pageCode, nulPadded4(asciiBytes(nexus.info.hostName)));
    default:
      throw invalidCdbField(2);
  }
}

/** SPC-4 7.8.1: the 4-byte VPD page header followed by `payload`. */
function vpdPage(peripheral: number, pageCode: number, payload: Buffer): Buffer {
  const out = Buffer.alloc(4 + payload.length);
  out[0] = peripheral;
  out[1] = pageCode;
  out.writeUInt16BE(payload.length, 2);
  payload.copy(out, 4);
  return out;
}

/** Unit Serial Number VPD page (SPC-4 7.8): PRODUCT SERIAL NUMBER, ASCII. */
function unitSerialNumber(volumeId: string): Buffer {
  return asciiBytes(volumeIdText(volumeId));
}

/**
 * Device Identification VPD page (SPC-4 7.8.6): a list of designation descriptors.
 * Logical unit designators depend only on the volume id (identical for every agent and
 * channel mapping the volume); port and device designators name the target port of the nexus.
 */
function deviceIdentification(nexus: NexusContext, lu: LunContext): Buffer {
  const volumeId = lu.entry.volumeId;
  const { targetName, tpgt } = nexus.identity;
  const tpgtHex = tpgt.toString(16).padStart(4, "0");
  const relativePort = Buffer.alloc(4);
  relativePort.writeUInt16BE(tpgt & 0xffff, 2);
  return Buffer.concat([
    // NAA IEEE Registered Extended, logical unit (SPC-4 7.8.6).
    designator(
      Designator.CODE_SET_BINARY,
      Designator.ASSOC_LOGICAL_UNIT,
      Designator.TYPE_NAA,
      naaRegisteredExtended(volumeId),
    ),
    // T10 vendor ID based, logical unit (SPC-4 7.8.6): T10 VENDOR IDENTIFICATION + volume id.
    designator(
      Designator.CODE_SET_ASCII,
      Designator.ASSOC_LOGICAL_UNIT,
      Designator.TYPE_T10_VENDOR_ID,
      Buffer.concat([asciiField(nexus.info.vendor, 8), asciiBytes(volumeIdText(volumeId))]),
    ),
    // Relative target port identifier = TPGT, target port (SPC-4 7.8.6).
    designator(
      Designator.CODE_SET_BINARY,
      Designator.ASSOC_TARGET_PORT,
      Designator.TYPE_RELATIVE_TARGET_PORT,
      relativePort,
      true,
    ),
    // SCSI name string of the target port: "<iqn>,t,0x<tpgt>" (SPC-4 7.8.6, RFC 7143).
    designator(
      Designator.CODE_SET_UTF8,
      Designator.ASSOC_TARGET_PORT,
      Designator.TYPE_SCSI_NAME_STRING,
      nulPadded4(Buffer.from(`${targetName},t,0x${tpgtHex}`, "utf8")),
      true,
    ),
    // SCSI name string of the target device: "<iqn>".
    designator(
      Designator.CODE_SET_UTF8,
      Designator.ASSOC_TARGET_DEVICE,
      Designator.TYPE_SCSI_NAME_STRING,
      nulPadded4(Buffer.from(targetName, "utf8")),
      true,
    ),
  ]);
}

/**
 * One designation descriptor (SPC-4 7.8.6): PROTOCOL IDENTIFIER / CODE SET, PIV /
 * ASSOCIATION / DESIGNATOR TYPE, reserved, DESIGNATOR LENGTH, DESIGNATOR. Port and device
 * designators set PIV with the iSCSI protocol identifier.
 */
function designator(
  codeSet: number,
  association: number,
  type: number,
  value: Buffer,
  iscsi = false,
): Buffer {
  if (value.length > 255) throw new RangeError("designator longer than 255 bytes");
  const out = Buffer.alloc(4 + value.length);
  out[0] = ((iscsi ? Designator.PROTOCOL_ISCSI : 0) << 4) | codeSet;
  out[1] = (iscsi ? 0x80 : 0) | (association << 4) | type;
  out[3] = value.length;
  value.copy(out, 4);
  return out;
}

/**
 * Extended INQUIRY Data VPD page (SPC-4 7.8), 60 bytes of payload: SIMPSUP=1 (SIMPLE task
 * attribute; ordering beyond that is the transport's business), V_SUP=1 (a volatile cache that
 * SYNCHRONIZE CACHE and FUA flush), LUICLR=1 (unit attentions are per I_T nexus).
 */
function extendedInquiry(): Buffer {
  const out = Buffer.alloc(60);
  out[1] = 0x01; // SIMPSUP (byte 5 of the page)
  out[2] = 0x01; // V_SUP (byte 6)
  out[3] = 0x01; // LUICLR (byte 7)
  return out;
}

/**
 * Block Limits VPD page (SBC-4), 60 bytes of payload (page length 3Ch).
 *  - WSNZ: `WSNZ` of ./write-same.ts (0: WRITE SAME with NUMBER OF LOGICAL BLOCKS 0 writes or
 *    unmaps to the end of the medium).
 *  - MAXIMUM COMPARE AND WRITE LENGTH: 255 blocks (./compare-and-write.ts).
 *  - OPTIMAL TRANSFER LENGTH GRANULARITY: one physical block, the volume's
 *    `physicalBlockSize` (the pool's grain: 8 blocks of 512 on 4 KiB grains), or 4 KiB when the
 *    volume reports none (the file backend, whose page cache works in 4 KiB pages).
 *  - MAXIMUM TRANSFER LENGTH and MAXIMUM PREFETCH LENGTH: 16 MiB.
 *  - MAXIMUM UNMAP LBA COUNT: 512 MiB, in at most 256 UNMAP descriptors.
 *  - MAXIMUM WRITE SAME LENGTH: FFFFh blocks.
 *  - Atomic writes (./write-atomic.ts): on a volume with `writeAtomic`, MAXIMUM ATOMIC TRANSFER
 *    LENGTH = its `atomicWriteMaxBlocks` (at most MAXIMUM TRANSFER LENGTH) and ATOMIC ALIGNMENT 0;
 *    on any other volume both one grain. No granularity requirement, no atomic boundaries.
 *  - OPTIMAL UNMAP GRANULARITY: the same physical block, UGAVALID with UNMAP GRANULARITY
 *    ALIGNMENT 0 (grains start at LBA 0). What the pool can deallocate is whole grains: an UNMAP
 *    or WRITE SAME with UNMAP that covers part of a grain leaves that grain mapped, the part
 *    reading as zeros (./write-same.ts, ./unmap.ts), and READ CAPACITY (16) reports the same
 *    physical block (./capacity.ts).
 */
export function blockLimits(volume: Volume): Buffer {
  const blockSize = volume.blockSize;
  const perGrain = Math.max(1, (volume.physicalBlockSize ?? Limits.GRAIN_BYTES) / blockSize);
  const maxTransfer = Limits.MAX_TRANSFER_BYTES / blockSize;
  const maxUnmap = Limits.MAX_UNMAP_BYTES / blockSize;
  const out = Buffer.alloc(60);
  out[0] = WSNZ ? 0x01 : 0; // WSNZ (page byte 4)
  out[1] = Limits.MAX_COMPARE_AND_WRITE_BLOCKS; // MAXIMUM COMPARE AND WRITE LENGTH (byte 5)
  out.writeUInt16BE(perGrain, 2); // OPTIMAL TRANSFER LENGTH GRANULARITY (bytes 6-7)
  out.writeUInt32BE(maxTransfer, 4); // MAXIMUM TRANSFER LENGTH (bytes 8-11)
  out.writeUInt32BE(0, 8); // OPTIMAL TRANSFER LENGTH (bytes 12-15): not reported
  out.writeUInt32BE(maxTransfer, 12); // MAXIMUM PREFETCH LENGTH (bytes 16-19)
  out.writeUInt32BE(maxUnmap, 16); // MAXIMUM UNMAP LBA COUNT (bytes 20-23)
  out.writeUInt32BE(Limits.MAX_UNMAP_DESCRIPTORS, 20); // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
  out.writeUInt32BE(perGrain, 24); // OPTIMAL UNMAP GRANULARITY (bytes 28-31)
  out.writeUInt32BE(0x8000_0000, 28); // UGAVALID, UNMAP GRANULARITY ALIGNMENT 0 (bytes 32-35)
  out.writeBigUInt64BE(BigInt(Limits.MAX_WRITE_SAME_BLOCKS), 32); // MAXIMUM WRITE SAME LENGTH
  const atomic = atomicLimits(volume);
  out.writeUInt32BE(atomic.maxTransferLength, 40); // MAXIMUM ATOMIC TRANSFER LENGTH (bytes 44-47)
  out.writeUInt32BE(atomic.alignment, 44); // ATOMIC ALIGNMENT (bytes 48-51)
  out.writeUInt32BE(atomic.granularity, 48); // ATOMIC TRANSFER LENGTH GRANULARITY (bytes 52-55)
  // MAXIMUM ATOMIC TRANSFER LENGTH WITH ATOMIC BOUNDARY (bytes 56-59), MAXIMUM ATOMIC BOUNDARY
  // SIZE (bytes 60-63).
  out.writeUInt32BE(atomic.maxTransferLengthWithBoundary, 52);
  out.writeUInt32BE(atomic.maxBoundarySize, 56);
  return out;
}

/**
 * Block Device Characteristics VPD page (SBC-4), 60 bytes of payload: MEDIUM ROTATION RATE
 * 0001h (non-rotating medium); WABEREQ=01b: after a SANITIZE BLOCK ERASE, reads of the erased
 * blocks complete with GOOD (they are deallocated and read as zeros, ./sanitize.ts); WACEREQ=00b
 * (no CRYPTOGRAPHIC ERASE); everything else not reported.
 */
function blockDeviceCharacteristics(): Buffer {
  const out = Buffer.alloc(60);
  out.writeUInt16BE(0x0001, 0);
  out[3] = 0b01 << 6; // WABEREQ, WACEREQ 00b, NOMINAL FORM FACTOR not reported (page byte 7)
  return out;
}

/**
 * Logical Block Provisioning VPD page (SBC-4), 4 bytes of payload: no thresholds; LBPU (UNMAP),
 * LBPWS (WRITE SAME (16) with UNMAP), LBPWS10 (WRITE SAME (10) with UNMAP), LBPRZ=001b
 * (unmapped blocks read as zeros: the backends zero-fill), ANC_SUP=0, DP=0; PROVISIONING TYPE
 * 010b (thin).
 */
function logicalBlockProvisioning(): Buffer {
  const out = Buffer.alloc(4);
  out[0] = 0; // THRESHOLD EXPONENT
  out[1] = 0x80 | 0x40 | 0x20 | (0b001 << 2); // LBPU LBPWS LBPWS10 LBPRZ
  out[2] = 0b010; // MINIMUM PERCENTAGE 0, PROVISIONING TYPE thin
  out[3] = 0; // THRESHOLD PERCENTAGE
  return out;
}
