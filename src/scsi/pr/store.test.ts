import { describe, expect, it } from "vitest";
import { PrType } from "./constants.js";
import type { PrState } from "./state.js";
import { decodePrState, encodePrState } from "./store.js";

const STATE: PrState = {
  generation: 0xffffffff,
  aptpl: true,
  registrations: [
    { id: 1, key: 0xffff_ffff_ffff_fffen, initiator: "iqn.a", isid: "400000000001", targetPort: 1 },
    { id: 3, key: 1n, initiator: "iqn.b" },
  ],
  reservation: { type: PrType.EXCLUSIVE_ACCESS, holder: 3 },
};

describe("the JSON form of the persistent reservation state", () => {
  it("round-trips through JSON, keys as 16 hex digits", () => {
    const json = JSON.parse(JSON.stringify(encodePrState(STATE)));
    expect(json.registrations[0].key).toBe("0xfffffffffffffffe");
    expect(json.registrations[1]).toEqual({ id: 3, key: "0x0000000000000001", initiator: "iqn.b" });
    expect(decodePrState(json)).toEqual(STATE);
    const ar: PrState = {
      generation: 1,
      aptpl: true,
      registrations: [{ id: 1, key: 5n, initiator: "iqn.a" }],
      reservation: { type: PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS },
    };
    expect(decodePrState(JSON.parse(JSON.stringify(encodePrState(ar))))).toEqual(ar);
    const empty: PrState = { generation: 0, aptpl: true, registrations: [] };
    expect(decodePrState(encodePrState(empty))).toEqual(empty);
  });

  it.each([
    ["not an object", [], "state: expected an object"],
    ["another version", { ...encodePrState(STATE), version: 2 }, "unsupported version 2"],
    ["a bad generation", { ...encodePrState(STATE), generation: -1 }, "generation"],
    ["a bad key", mutate((j) => (j.registrations[0].key = "0x12")), "registrations[0].key"],
    ["a zero key", mutate((j) => (j.registrations[0].key = `0x${"0".repeat(16)}`)), ".key"],
    ["a duplicate id", mutate((j) => (j.registrations[1].id = 1)), "registrations[1].id"],
    ["a bad ISID", mutate((j) => (j.registrations[0].isid = "xyz")), "registrations[0].isid"],
    ["a bad port", mutate((j) => (j.registrations[0].targetPort = 0)), ".targetPort"],
    ["an unknown holder", mutate((j) => (j.reservation.holder = 9)), "reservation.holder"],
    ["a bad type", mutate((j) => (j.reservation.type = 4)), "reservation.type"],
    ["an AR holder", mutate((j) => (j.reservation.type = 8)), "reservation.holder"],
  ])("refuses %s", (_, value, message) => {
    expect(() => decodePrState(value)).toThrow(message);
  });
});

// biome-ignore lint/suspicious/noExplicitAny: test fixture mutation of a JSON document
function mutate(change: (json: any) => void): unknown {
  const json = JSON.parse(JSON.stringify(encodePrState(STATE)));
  change(json);
  return json;
}
