import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { CheckCondition } from "../sense.js";
import { decodeTransportId, encodeTransportId } from "./transport-id.js";

function fails(data: Buffer, byte: number): void {
  try {
    decodeTransportId(data, 0, data.length);
  } catch (err) {
    expect(err).toBeInstanceOf(CheckCondition);
    const sense = (err as CheckCondition).sense;
    expect(sense.asc).toBe(Asc.INVALID_FIELD_IN_PARAMETER_LIST);
    expect(sense.fieldPointer?.byte).toBe(byte);
    return;
  }
  throw new Error("expected INVALID FIELD IN PARAMETER LIST");
}

describe("iSCSI TransportIDs (SPC-4 7.6.4.6)", () => {
  it("encodes an initiator port as format 01b, NUL-padded to a multiple of 4", () => {
    const tid = encodeTransportId({ initiator: "iqn.2025-01.com.example:a", isid: "23d000000001" });
    expect(tid[0]).toBe(0x45);
    expect(tid.readUInt16BE(2)).toBe(tid.length - 4);
    expect(tid.length % 4).toBe(0);
    expect(tid.subarray(4).toString("latin1")).toBe(
      "iqn.2025-01.com.example:a,i,0x23d000000001\0\0",
    );
  });

  it("encodes an initiator device as format 00b, at least 20 bytes of name", () => {
    const tid = encodeTransportId({ initiator: "iqn.a" });
    expect([...tid.subarray(0, 4)]).toEqual([0x05, 0, 0, 20]);
    expect(tid.length).toBe(24);
  });

  it("round-trips, lowercasing names and padding short ISIDs", () => {
    for (const id of [
      { initiator: "iqn.2025-01.com.example:host" },
      { initiator: "eui.02004567a425678d", isid: "400000000001" },
    ]) {
      const tid = encodeTransportId(id);
      expect(decodeTransportId(tid, 0, tid.length)).toEqual({ id, length: tid.length });
    }
    const raw = Buffer.alloc(24);
    raw[0] = 0x45;
    raw.writeUInt16BE(20, 2);
    raw.write("IQN.X:Y,I,0X1F", 4, "latin1");
    expect(decodeTransportId(raw, 0, 24).id).toEqual({
      initiator: "iqn.x:y",
      isid: "00000000001f",
    });
  });

  it("refuses other protocols, formats, lengths and names", () => {
    const good = encodeTransportId({ initiator: "iqn.a" });
    const fc = Buffer.from(good);
    fc[0] = 0x00;
    fails(fc, 0);
    const format2 = Buffer.from(good);
    format2[0] = 0x85;
    fails(format2, 0);
    const short = Buffer.from(good);
    short.writeUInt16BE(16, 2);
    fails(short, 2);
    const odd = Buffer.from(good);
    odd.writeUInt16BE(21, 2);
    fails(odd, 2);
    fails(good.subarray(0, 20), 2); // truncated
    fails(Buffer.alloc(24, 0).fill(0x05, 0, 1).fill(20, 3, 4), 4); // empty name
    const port = encodeTransportId({ initiator: "iqn.a", isid: "1" });
    port.write("zz", 4 + "iqn.a,i,0x".length, "latin1");
    fails(port, 4); // ISID not hex
    const device = encodeTransportId({ initiator: "iqn.a,i,0x1" });
    fails(device, 4); // a port name in a device TransportID
  });
});
