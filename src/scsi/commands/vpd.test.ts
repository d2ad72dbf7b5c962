import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { SANMUX_IEEE_COMPANY_ID } from "../identity.js";
import type { ScsiNexus } from "../target.js";
import { ScsiTarget } from "../target.js";
import { Cdb } from "../testing/cdb-builders.js";
import {
  exec,
  expectGood,
  expectSense,
  identity,
  lunEntry,
  MutableView,
  setup,
  TEST_INFO,
} from "../testing/harness.js";
import { MemoryVolume } from "../testing/memory-volume.js";

async function vpd(nexus: ScsiNexus, page: number, lun = 0): Promise<Buffer> {
  const r = await exec(
    nexus,
    Cdb.inquiry({ evpd: true, page, allocationLength: 0xffff }),
    undefined,
    lun,
  );
  expectGood(r);
  const d = r.data!;
  expect(d[1]).toBe(page);
  expect(d.readUInt16BE(2)).toBe(d.length - 4);
  return d;
}

interface ParsedDesignator {
  protocol: number;
  codeSet: number;
  piv: boolean;
  association: number;
  type: number;
  value: Buffer;
}

function parseDesignators(page: Buffer): ParsedDesignator[] {
  const out: ParsedDesignator[] = [];
  let at = 4;
  while (at < page.length) {
    const length = page[at + 3]!;
    out.push({
      protocol: page[at]! >> 4,
      codeSet: page[at]! & 0x0f,
      piv: (page[at + 1]! & 0x80) !== 0,
      association: (page[at + 1]! >> 4) & 0x03,
      type: page[at + 1]! & 0x0f,
      value: page.subarray(at + 4, at + 4 + length),
    });
    at += 4 + length;
  }
  expect(at).toBe(page.length);
  return out;
}

describe("VPD pages", () => {
  it("0x00 lists the supported pages in ascending order", async () => {
    const { nexus } = setup();
    const d = await vpd(nexus, 0x00);
    expect(d[0]).toBe(0);
    expect([...d.subarray(4)]).toEqual([0x00, 0x80, 0x83, 0x86, 0x8f, 0xb0, 0xb1, 0xb2, 0xc0]);
  });

  it("serves every page it lists, and refuses others", async () => {
    const { nexus, run } = setup();
    const list = (await vpd(nexus, 0x00)).subarray(4);
    for (const page of list) await vpd(nexus, page);
    for (const page of [0x01, 0x81, 0x84, 0x85, 0x87, 0x89, 0x8e, 0xb3, 0xc1, 0xff]) {
      const s = expectSense(
        await run(Cdb.inquiry({ evpd: true, page })),
        5,
        Asc.INVALID_FIELD_IN_CDB,
      );
      expect(s.fieldPointer).toEqual({ inCdb: true, byte: 2 });
    }
  });

  it("0x80 is the volume id", async () => {
    const { nexus, volume } = setup();
    const d = await vpd(nexus, 0x80);
    expect(d.subarray(4).toString("ascii")).toBe(volume.id);
  });

  it("0x83 carries NAA 6, T10 vendor id, relative port, target port and device names", async () => {
    const { nexus, volume } = setup();
    const ds = parseDesignators(await vpd(nexus, 0x83));
    expect(ds.map((d) => [d.association, d.type, d.codeSet, d.piv, d.protocol])).toEqual([
      [0, 3, 1, false, 0], // NAA, logical unit, binary
      [0, 1, 2, false, 0], // T10 vendor id, logical unit, ASCII
      [1, 4, 1, true, 5], // relative target port, target port, iSCSI
      [1, 8, 3, true, 5], // SCSI name string, target port
      [2, 8, 3, true, 5], // SCSI name string, target device
    ]);
    const naa = ds[0]!.value;
    expect(naa.length).toBe(16);
    expect(naa[0]! >> 4).toBe(6);
    const company = ((naa[0]! & 0x0f) << 20) | (naa[1]! << 12) | (naa[2]! << 4) | (naa[3]! >> 4);
    expect(company).toBe(SANMUX_IEEE_COMPANY_ID);
    expect(ds[1]!.value.toString("ascii")).toBe(`SANMUX  ${volume.id}`);
    expect([...ds[2]!.value]).toEqual([0, 0, 0, 1]);
    const port = ds[3]!.value;
    expect(port.length % 4).toBe(0);
    expect(port.toString("utf8").replace(/\0+$/, "")).toBe(`${TEST_INFO.targetName},t,0x0001`);
    expect(ds[4]!.value.toString("utf8").replace(/\0+$/, "")).toBe(TEST_INFO.targetName);
  });

  it("0x83 is identical for every nexus, agent and mapping of the same volume", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const volume = new MemoryVolume({ blocks: 100 });
    // A second channel's view of the same volume (another filtered Volume object).
    const sameVolumeOtherChannel = new MemoryVolume({ blocks: 100, id: volume.id });
    const a = target.openNexus(
      identity({ initiatorName: "iqn.a" }),
      new MutableView([lunEntry(0, volume)]),
    );
    const b = target.openNexus(
      identity({ initiatorName: "iqn.b" }),
      new MutableView([lunEntry(9, sameVolumeOtherChannel, { readOnly: true })]),
    );
    const pa = await vpd(a, 0x83);
    const pb = await vpd(b, 0x83, 9);
    expect(pa.equals(pb)).toBe(true);
    // Stable across restarts: a new target derives the same designators.
    const again = new ScsiTarget(TEST_INFO).openNexus(
      identity(),
      new MutableView([lunEntry(0, volume)]),
    );
    expect((await vpd(again, 0x83)).equals(pa)).toBe(true);
    expect((await vpd(a, 0x80)).equals(await vpd(b, 0x80, 9))).toBe(true);
  });

  it("0x83 logical unit designators differ between volumes; port designators follow the port", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const v1 = new MemoryVolume({ blocks: 100 });
    const v2 = new MemoryVolume({ blocks: 100 });
    const n1 = target.openNexus(identity(), new MutableView([lunEntry(0, v1), lunEntry(1, v2)]));
    const n2 = target.openNexus(identity({ tpgt: 2 }), new MutableView([lunEntry(0, v1)]));
    const d1 = parseDesignators(await vpd(n1, 0x83, 0));
    const d2 = parseDesignators(await vpd(n1, 0x83, 1));
    expect(d1[0]!.value.equals(d2[0]!.value)).toBe(false);
    expect(d1[1]!.value.equals(d2[1]!.value)).toBe(false);
    expect(d1[3]!.value.equals(d2[3]!.value)).toBe(true);
    const d3 = parseDesignators(await vpd(n2, 0x83, 0));
    expect(d3[0]!.value.equals(d1[0]!.value)).toBe(true);
    expect([...d3[2]!.value]).toEqual([0, 0, 0, 2]);
    expect(d3[3]!.value.toString("utf8")).toContain(",t,0x0002");
  });

  it("0x86 extended INQUIRY data", async () => {
    const { nexus } = setup();
    const d = await vpd(nexus, 0x86);
    expect(d.readUInt16BE(2)).toBe(0x3c);
    expect(d[5]).toBe(0x01); // SIMPSUP
    expect(d[6]).toBe(0x01); // V_SUP
    expect(d[7]! & 0x01).toBe(1); // LUICLR
  });

  it.each([
    [512, 8, 32768, 1048576],
    [4096, 1, 4096, 131072],
  ])(
    "0xB0 block limits for %i-byte blocks",
    async (blockSize, granularity, maxTransfer, maxUnmap) => {
      // The atomic write limits are one grain (see write-atomic.ts), which is `granularity`.
      const { nexus } = setup({ blockSize });
      const d = await vpd(nexus, 0xb0);
      expect(d.readUInt16BE(2)).toBe(0x3c);
      expect(d[4]! & 1).toBe(0); // WSNZ
      expect(d[5]).toBe(255); // MAXIMUM COMPARE AND WRITE LENGTH
      expect(d.readUInt16BE(6)).toBe(granularity);
      expect(d.readUInt32BE(8)).toBe(maxTransfer);
      expect(d.readUInt32BE(16)).toBe(maxTransfer); // MAXIMUM PREFETCH LENGTH
      expect(d.readUInt32BE(20)).toBe(maxUnmap);
      expect(d.readUInt32BE(24)).toBe(256);
      expect(d.readUInt32BE(28)).toBe(granularity);
      expect(d.readUInt32BE(32)).toBe(0x80000000); // UGAVALID, alignment 0
      expect(d.readBigUInt64BE(36)).toBe(0xffffn);
      expect(d.readUInt32BE(44)).toBe(granularity); // MAXIMUM ATOMIC TRANSFER LENGTH
      expect(d.readUInt32BE(48)).toBe(granularity); // ATOMIC ALIGNMENT
      expect(d.readUInt32BE(52)).toBe(0); // ATOMIC TRANSFER LENGTH GRANULARITY
      expect(d.readUInt32BE(56)).toBe(0); // MAXIMUM ATOMIC TRANSFER LENGTH WITH ATOMIC BOUNDARY
      expect(d.readUInt32BE(60)).toBe(0); // MAXIMUM ATOMIC BOUNDARY SIZE
      expect(d.readUInt32BE(44)).toBeLessThanOrEqual(d.readUInt32BE(8));
    },
  );

  it("0xB1 says non-rotating medium, and reads after SANITIZE BLOCK ERASE succeed", async () => {
    const { nexus } = setup();
    const d = await vpd(nexus, 0xb1);
    expect(d.readUInt16BE(2)).toBe(0x3c);
    expect(d.readUInt16BE(4)).toBe(1);
    expect(d[7]! >> 6).toBe(0b01); // WABEREQ
    expect((d[7]! >> 4) & 0b11).toBe(0b00); // WACEREQ: no CRYPTOGRAPHIC ERASE
  });

  it("0xB2 says thin provisioning with UNMAP, WRITE SAME unmap and LBPRZ", async () => {
    const { nexus } = setup();
    const d = await vpd(nexus, 0xb2);
    expect(d.length).toBe(8);
    expect(d[5]! & 0x80).toBe(0x80); // LBPU
    expect(d[5]! & 0x40).toBe(0x40); // LBPWS
    expect(d[5]! & 0x20).toBe(0x20); // LBPWS10
    expect((d[5]! >> 2) & 0x07).toBe(1); // LBPRZ
    expect(d[5]! & 0x03).toBe(0); // ANC_SUP, DP
    expect(d[6]! & 0x07).toBe(2); // thin
  });

  it("0xC0 names the sanmux host, NUL padded to a multiple of 4", async () => {
    const { nexus } = setup();
    const d = await vpd(nexus, 0xc0);
    expect(d[1]).toBe(0xc0);
    const name = d.subarray(4);
    expect(name.length % 4).toBe(0);
    expect(name.toString("ascii").replace(/\0+$/, "")).toBe(TEST_INFO.hostName);
    expect(name[TEST_INFO.hostName.length]).toBe(0);
  });

  it("truncates every page to the allocation length", async () => {
    const { run } = setup();
    for (const page of [0x00, 0x80, 0x83, 0x86, 0xb0, 0xb1, 0xb2, 0xc0]) {
      const r = await run(Cdb.inquiry({ evpd: true, page, allocationLength: 3 }));
      expect(r.data?.length).toBe(3);
    }
  });

  it("derives ASCII identifiers from ids that are not printable", async () => {
    const target = new ScsiTarget(TEST_INFO);
    const volume = new MemoryVolume({ blocks: 10, id: "volume with spaces" });
    const nexus = target.openNexus(identity(), new MutableView([lunEntry(0, volume)]));
    const serial = (await vpd(nexus, 0x80)).subarray(4).toString("ascii");
    expect(serial).toMatch(/^H[0-9a-f]{32}$/);
  });

  it("unsupported LUNs only list page 0", async () => {
    const { run } = setup();
    expectSense(
      await run(Cdb.inquiry({ evpd: true, page: 0xb0 }), undefined, 3),
      5,
      Asc.INVALID_FIELD_IN_CDB,
    );
  });
});
