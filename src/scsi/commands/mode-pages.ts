/**
 * The mode pages we serve (SPC-4 7.5, SBC-4 mode parameters), as declarative definitions:
 * each page fills its bytes for a page control value (current, changeable, default), and the
 * pages with changeable fields apply a validated page from MODE SELECT.
 *
 * The changeable fields are WCE of the Caching page and SWP of the Control page. Both belong to
 * the logical unit, shared by every nexus mapping the volume, and neither is changeable through
 * a read-only mapping (a read-only agent must not alter the durability semantics of the
 * writers, nor write-protect their volume; changeable values may differ per I_T nexus).
 * No page is saveable (PS=0): MODE SENSE with PC=saved and MODE SELECT with SP=1 are refused.
 */
import { ModePage, PageControl } from "../constants.js";
import type { LunContext } from "../context.js";

export interface ModePageDef {
  readonly code: number;
  readonly name: string;
  /** Total length in bytes, including the 2-byte page header (PAGE LENGTH = length - 2). */
  readonly length: number;
  /** Fill bytes 2.. of `page` (zeroed; the header is written by the caller) for `pc`. */
  fill(page: Buffer, pc: PageControl, lu: LunContext): void;
  /** Apply a validated MODE SELECT page; true when a value changed. */
  apply?(page: Buffer, lu: LunContext): boolean;
}

/** Caching mode page (SBC-4) byte 2: WCE bit. */
const WCE = 0x04;
/** Control mode page (SPC-4 7.5.8) byte 4: SWP bit. */
const SWP = 0x08;

const disconnectReconnect: ModePageDef = {
  code: ModePage.DISCONNECT_RECONNECT,
  name: "Disconnect-Reconnect",
  length: 16,
  // SPC-4 7.5 (Disconnect-Reconnect mode page): iSCSI uses none of these fields; all zero.
  fill() {},
};

const caching: ModePageDef = {
  code: ModePage.CACHING,
  name: "Caching",
  length: 20,
  // SBC-4 (Caching mode page): byte 2 = IC ABPF CAP DISC SIZE WCE MF RCD. RCD=0 (reads may be
  // served from a cache), WCE per unit state, default 1 (DESIGN.md: a write-back cache).
  fill(page, pc, lu) {
    if (pc === PageControl.CHANGEABLE) {
      page[2] = lu.entry.readOnly ? 0 : WCE;
    } else if (pc === PageControl.DEFAULT) {
      page[2] = WCE;
    } else {
      page[2] = lu.unit.writeCacheEnabled ? WCE : 0;
    }
  },
  apply(page, lu) {
    const wce = (page[2]! & WCE) !== 0;
    if (wce === lu.unit.writeCacheEnabled) return false;
    lu.unit.writeCacheEnabled = wce;
    return true;
  },
};

const control: ModePageDef = {
  code: ModePage.CONTROL,
  name: "Control",
  length: 12,
  // SPC-4 7.5 (Control mode page):
  //  byte 2: TST=000b (one task set for all I_T nexuses), TMF_ONLY=0, DPICZ=0, D_SENSE=0
  //          (fixed format sense), GLTSD=0, RLEC=0;
  //  byte 3: QUEUE ALGORITHM MODIFIER=1 (unrestricted reordering of SIMPLE commands), NUAR=0,
  //          QERR=00b;
  //  byte 4: RAC=0, UA_INTLCK_CTRL=00b, SWP: 1 for a read-only mapping (writes are refused),
  //          else the unit's software write protect, default 0, changeable through read-write
  //          mappings (SPC-4 7.5.8: while it is 1, commands that write to the medium get DATA
  //          PROTECT / WRITE PROTECTED and MODE SENSE reports WP; ./common.ts checkWritable);
  //  byte 5: ATO=0, TAS=0, ATMPE=0, RWWP=0, AUTOLOAD MODE=0;
  //  bytes 8-11: BUSY TIMEOUT PERIOD and EXTENDED SELF-TEST COMPLETION TIME: 0 (undefined).
  fill(page, pc, lu) {
    if (pc === PageControl.CHANGEABLE) {
      page[4] = lu.entry.readOnly ? 0 : SWP;
      return;
    }
    page[3] = 0x10;
    if (pc === PageControl.CURRENT && (lu.entry.readOnly || lu.unit.softwareWriteProtect)) {
      page[4] = SWP;
    } else if (pc === PageControl.DEFAULT && lu.entry.readOnly) {
      page[4] = SWP;
    }
  },
  apply(page, lu) {
    // A read-only mapping always reads SWP=1 and cannot change it (not changeable, so the
    // MODE SELECT that reaches here repeats that 1): the unit's own value stays as it is.
    if (lu.entry.readOnly) return false;
    const swp = (page[4]! & SWP) !== 0;
    if (swp === lu.unit.softwareWriteProtect) return false;
    lu.unit.softwareWriteProtect = swp;
    return true;
  },
};

const powerCondition: ModePageDef = {
  code: ModePage.POWER_CONDITION,
  name: "Power Condition",
  length: 40,
  // SPC-4 7.5 (Power Condition mode page): no idle or standby timers enabled; all zero.
  fill() {},
};

const informationalExceptions: ModePageDef = {
  code: ModePage.INFORMATIONAL_EXCEPTIONS,
  name: "Informational Exceptions Control",
  length: 12,
  // SPC-4 7.5 (Informational Exceptions Control mode page): DEXCPT=1 (no informational
  // exception reporting; space warnings come as unit attentions), MRIE=0, timers 0.
  fill(page, pc) {
    if (pc === PageControl.CHANGEABLE) return;
    page[2] = 0x08;
  },
};

/** All pages, in ascending page code order (the order MODE SENSE returns them for 3Fh). */
export const MODE_PAGES: readonly ModePageDef[] = [
  disconnectReconnect,
  caching,
  control,
  powerCondition,
  informationalExceptions,
];

export function findModePage(code: number): ModePageDef | undefined {
  return MODE_PAGES.find((p) => p.code === code);
}

/** One page with its header (PS=0, SPF=0, PAGE CODE, PAGE LENGTH) for page control `pc`. */
export function buildModePage(def: ModePageDef, pc: PageControl, lu: LunContext): Buffer {
  const page = Buffer.alloc(def.length);
  page[0] = def.code;
  page[1] = def.length - 2;
  def.fill(page, pc, lu);
  return page;
}
