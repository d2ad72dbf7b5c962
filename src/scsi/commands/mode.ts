/**
 * MODE SENSE (6)/(10) and MODE SELECT (6)/(10), SPC-4 6.11-6.14, with the mode parameter
 * header and block descriptor formats of SPC-4 7.5 and SBC-4 (direct access block
 * descriptors, DEVICE-SPECIFIC PARAMETER with WP and DPOFUA).
 */
import { Asc } from "../asc.js";
import { highestBit } from "../cdb.js";
import {
  decodeModeSelect6,
  decodeModeSelect10,
  decodeModeSense6,
  decodeModeSense10,
  type ModeSelectCdb,
  type ModeSenseCdb,
} from "../cdb-spc.js";
import { ModePage, PageControl, SenseKey } from "../constants.js";
import type { LunContext, LunHandler } from "../context.js";
import {
  checkCondition,
  invalidCdbField,
  invalidParameterField,
  parameterListLengthError,
} from "../sense.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import { dataIn, failureResult, goodWithDataOut, requireDataOut } from "./common.js";
import { buildModePage, findModePage, MODE_PAGES, type ModePageDef } from "./mode-pages.js";

/** DEVICE-SPECIFIC PARAMETER (SBC-4): WP (bit 7), DPOFUA (bit 4: DPO and FUA supported). */
const WP = 0x80;
const DPOFUA = 0x10;

/** Subpage code FFh with page 3Fh: all pages and subpages (we have no subpages). */
const ALL_SUBPAGES = 0xff;

export const modeSense6: LunHandler = (cmd, lu) => modeSense(decodeModeSense6(cmd.cdb), lu, false);
export const modeSense10: LunHandler = (cmd, lu) => modeSense(decodeModeSense10(cmd.cdb), lu, true);

function modeSense(d: ModeSenseCdb, lu: LunContext, ten: boolean): ScsiResult {
  if (d.pageControl === PageControl.SAVED) {
    throw checkCondition(SenseKey.ILLEGAL_REQUEST, Asc.SAVING_PARAMETERS_NOT_SUPPORTED);
  }
  const pc = d.pageControl as PageControl;
  let pages: readonly ModePageDef[];
  if (d.pageCode === ModePage.ALL_PAGES) {
    if (d.subpageCode !== 0 && d.subpageCode !== ALL_SUBPAGES) throw invalidCdbField(3);
    pages = MODE_PAGES;
  } else {
    const page = findModePage(d.pageCode);
    if (!page) throw invalidCdbField(2, 5);
    if (d.subpageCode !== 0) throw invalidCdbField(3);
    pages = [page];
  }
  const blockDescriptor = d.dbd ? undefined : modeBlockDescriptor(lu, pc, ten && d.llbaa);
  const body = Buffer.concat([
    ...(blockDescriptor ? [blockDescriptor] : []),
    ...pages.map((p) => buildModePage(p, pc, lu)),
  ]);
  const header = modeHeader(lu, ten, body.length, blockDescriptor?.length ?? 0);
  return dataIn(Buffer.concat([header, body]), d.allocationLength);
}

/**
 * Mode parameter header (SPC-4 7.5): MODE DATA LENGTH (bytes after itself), MEDIUM TYPE 0,
 * DEVICE-SPECIFIC PARAMETER, then for (10) LONGLBA, and BLOCK DESCRIPTOR LENGTH.
 */
function modeHeader(lu: LunContext, ten: boolean, bodyLength: number, bdLength: number): Buffer {
  // WP: a read-only mapping, or the unit's software write protect (SPC-4 7.5.8, SWP).
  const dsp = (lu.entry.readOnly || lu.unit.softwareWriteProtect ? WP : 0) | DPOFUA;
  if (!ten) {
    const h = Buffer.alloc(4);
    h[0] = Math.min(3 + bodyLength, 0xff);
    h[2] = dsp;
    h[3] = bdLength;
    return h;
  }
  const h = Buffer.alloc(8);
  h.writeUInt16BE(Math.min(6 + bodyLength, 0xffff), 0);
  h[3] = dsp;
  h[4] = bdLength === 16 ? 0x01 : 0; // LONGLBA
  h.writeUInt16BE(bdLength, 6);
  return h;
}

/**
 * Direct access block descriptor (SBC-4): short (8 bytes: NUMBER OF LOGICAL BLOCKS, clamped to
 * FFFFFFFFh, reserved, LOGICAL BLOCK LENGTH) or long LBA (16 bytes). No field is changeable.
 */
function modeBlockDescriptor(lu: LunContext, pc: PageControl, long: boolean): Buffer {
  const out = Buffer.alloc(long ? 16 : 8);
  if (pc === PageControl.CHANGEABLE) return out;
  const volume = lu.entry.volume;
  const blocks = volume.blockCount();
  if (long) {
    out.writeBigUInt64BE(BigInt(blocks), 0);
    out.writeUInt32BE(volume.blockSize, 12);
  } else {
    out.writeUInt32BE(Math.min(blocks, 0xffffffff), 0);
    out.writeUIntBE(volume.blockSize, 5, 3);
  }
  return out;
}

export const modeSelect6: LunHandler = (cmd, lu) =>
  modeSelect(decodeModeSelect6(cmd.cdb), cmd, lu, false);
export const modeSelect10: LunHandler = (cmd, lu) =>
  modeSelect(decodeModeSelect10(cmd.cdb), cmd, lu, true);

/**
 * MODE SELECT: the whole parameter list is validated before anything is applied.
 *  - SP=1: INVALID FIELD IN CDB (no saved pages).
 *  - PF=0 with pages: INVALID FIELD IN CDB (only the SPC-4 page format is understood).
 *  - truncated header, descriptor or page: PARAMETER LIST LENGTH ERROR.
 *  - MEDIUM TYPE non-zero, a block descriptor that changes the block length, an unknown page,
 *    a subpage, a wrong PAGE LENGTH, or a non-changeable field that differs from its current
 *    value: INVALID FIELD IN PARAMETER LIST with a field pointer into the parameter list.
 * The MODE DATA LENGTH and DEVICE-SPECIFIC PARAMETER fields are ignored (reserved for MODE
 * SELECT), as is the PS bit of each page. The NUMBER OF LOGICAL BLOCKS of a block descriptor
 * is ignored: the capacity is not changed through MODE SELECT.
 * A changed WCE or SWP raises MODE PARAMETERS CHANGED on every other nexus mapping the volume.
 * SWP set to one takes effect at once (later writes are refused), and the command returns after
 * a flush of the volume: SPC-4 7.5.8 inhibits writing "after writing all cached or buffered
 * write data", so GOOD means that everything written before is on the medium.
 */
function modeSelect(
  d: ModeSelectCdb,
  cmd: ScsiCommand,
  lu: LunContext,
  ten: boolean,
): ScsiResult | Promise<ScsiResult> {
  if (d.sp) throw invalidCdbField(1, 0);
  const length = d.parameterListLength;
  if (length === 0) return goodWithDataOut(0);
  const data = requireDataOut(cmd, length);
  const headerLength = ten ? 8 : 4;
  if (length < headerLength) throw parameterListLengthError();
  const mediumTypeByte = ten ? 2 : 1;
  if (data[mediumTypeByte] !== 0) throw invalidParameterField(mediumTypeByte);
  const bdLength = ten ? data.readUInt16BE(6) : data[3]!;
  const longLba = ten && (data[4]! & 0x01) !== 0;
  if (headerLength + bdLength > length) throw parameterListLengthError();
  checkBlockDescriptors(data, headerLength, bdLength, longLba, lu, ten ? 6 : 3);

  const updates: { def: ModePageDef; page: Buffer }[] = [];
  let at = headerLength + bdLength;
  if (at < length && !d.pf) throw invalidCdbField(1, 4);
  while (at < length) {
    if (at + 2 > length) throw parameterListLengthError();
    const b0 = data[at]!;
    if (b0 & 0x40) throw invalidParameterField(at, 6); // SPF: no subpages
    const def = findModePage(b0 & 0x3f);
    if (!def) throw invalidParameterField(at, 5);
    if (data[at + 1] !== def.length - 2) throw invalidParameterField(at + 1);
    if (at + def.length > length) throw parameterListLengthError();
    const page = data.subarray(at, at + def.length);
    checkOnlyChangeableFields(page, def, lu, at);
    updates.push({ def, page });
    at += def.length;
  }

  const protectedBefore = lu.unit.softwareWriteProtect;
  let changed = false;
  for (const u of updates) {
    if (u.def.apply?.(u.page, lu)) changed = true;
  }
  if (changed) {
    lu.nexus.raiseUnitAttention(lu.entry.volumeId, Asc.MODE_PARAMETERS_CHANGED, lu.nexus);
  }
  if (!protectedBefore && lu.unit.softwareWriteProtect) return flushThenGood(cmd, lu, length);
  return goodWithDataOut(length);
}

async function flushThenGood(cmd: ScsiCommand, lu: LunContext, length: number) {
  try {
    await lu.entry.volume.flush({ signal: cmd.signal });
    return goodWithDataOut(length);
  } catch (err) {
    return failureResult(err, cmd, lu, length);
  }
}

/** At most one descriptor (SBC-4), whose LOGICAL BLOCK LENGTH must be the current one. */
function checkBlockDescriptors(
  data: Buffer,
  start: number,
  bdLength: number,
  longLba: boolean,
  lu: LunContext,
  bdLengthByte: number,
): void {
  if (bdLength === 0) return;
  const size = longLba ? 16 : 8;
  if (bdLength !== size) throw invalidParameterField(bdLengthByte);
  const blockLength = longLba ? data.readUInt32BE(start + 12) : data.readUIntBE(start + 5, 3);
  if (blockLength !== lu.entry.volume.blockSize) {
    throw invalidParameterField(longLba ? start + 12 : start + 5);
  }
}

/** SPC-4 6.11: a field reported as not changeable must equal its current value. */
function checkOnlyChangeableFields(
  page: Buffer,
  def: ModePageDef,
  lu: LunContext,
  at: number,
): void {
  const current = buildModePage(def, PageControl.CURRENT, lu);
  const changeable = buildModePage(def, PageControl.CHANGEABLE, lu);
  for (let i = 2; i < def.length; i++) {
    const diff = (page[i]! ^ current[i]!) & ~changeable[i]!;
    if (diff !== 0) throw invalidParameterField(at + i, highestBit(diff));
  }
}
