/**
 * Persistent reservations through the dispatcher: PERSISTENT RESERVE OUT / IN per service
 * action and reservation type with several I_T nexuses, the conflict matrix (SPC-4 table 65,
 * SBC-4 table 13), unit attentions, RESERVE(6) interplay, APTPL and key_by.
 */
import { describe, expect, it } from "vitest";
import { Asc } from "../asc.js";
import { ScsiStatus, SenseKey } from "../constants.js";
import { ScsiTarget } from "../target.js";
import { Cdb } from "../testing/cdb-builders.js";
import {
  exec,
  expectGood,
  expectSense,
  identity,
  lunEntry,
  MutableView,
  pattern,
  TEST_INFO,
} from "../testing/harness.js";
import { MemoryVolume } from "../testing/memory-volume.js";
import type { NexusIdentity, ScsiResult } from "../types.js";
import { PrAsc, PrType } from "./constants.js";
import type { ReservationStore } from "./store.js";
import {
  basicParameters,
  MemoryReservationStore,
  moveParameters,
  PrIn,
  PrOut,
  parseFullStatus,
  parseReadKeys,
  parseReadReservation,
  prIn,
  prInCdb,
  prOut,
  prOutCdb,
  register,
  release,
  reserve,
} from "./testing.js";
import { encodeTransportId } from "./transport-id.js";

const ILLEGAL = SenseKey.ILLEGAL_REQUEST;
const UA = SenseKey.UNIT_ATTENTION;
const CONFLICT = ScsiStatus.RESERVATION_CONFLICT;
const KA = 0xa1a1_0000_0000_0001n;
const KB = 0xb2b2_0000_0000_0002n;
const KC = 0xc3c3_0000_0000_0003n;
const NAME_A = "iqn.2025-01.com.example:a";
const NAME_B = "iqn.2025-01.com.example:b";
const NAME_C = "iqn.2025-01.com.example:c";
const TYPES = [
  ["WE", PrType.WRITE_EXCLUSIVE],
  ["EA", PrType.EXCLUSIVE_ACCESS],
  ["WERO", PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY],
  ["EARO", PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY],
  ["WEAR", PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS],
  ["EAAR", PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS],
] as const;
const ALL_REGISTRANTS: readonly number[] = [
  PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS,
  PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
];
const REGISTRANTS: readonly number[] = [
  PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
  PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
  ...ALL_REGISTRANTS,
];
const WRITE_EXCLUSIVE: readonly number[] = [
  PrType.WRITE_EXCLUSIVE,
  PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
  PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS,
];

interface OpenOptions {
  readonly isid?: string;
  readonly keyBy?: "nexus" | "initiator";
  readonly readOnly?: boolean;
  readonly tpgt?: number;
}

/** A target with one volume and three initiators a, b, c (one session each). */
function world(o: { store?: ReservationStore | null } = {}) {
  const store = o.store === null ? undefined : (o.store ?? new MemoryReservationStore());
  const target = new ScsiTarget(TEST_INFO, store ? { reservationStore: store } : {});
  const volume = new MemoryVolume({ blocks: 64 });
  const open = (initiatorName: string, x: OpenOptions = {}) => {
    const id: NexusIdentity = {
      ...identity({ initiatorName, ...(x.isid ? { isid: x.isid } : {}), tpgt: x.tpgt ?? 1 }),
      ...(x.keyBy ? { reservationKeyBy: x.keyBy } : {}),
    };
    return target.openNexus(id, new MutableView([lunEntry(0, volume, { readOnly: !!x.readOnly })]));
  };
  const a = open(NAME_A, { isid: "400000000001" });
  const b = open(NAME_B, { isid: "400000000002" });
  const c = open(NAME_C, { isid: "400000000003" });
  return { target, volume, store, open, a, b, c };
}

type Nexus = ReturnType<typeof world>["a"];

async function readKeys(n: Nexus) {
  const r = await prIn(n, PrIn.READ_KEYS);
  expectGood(r);
  return parseReadKeys(r.data!);
}

async function readReservation(n: Nexus) {
  const r = await prIn(n, PrIn.READ_RESERVATION);
  expectGood(r);
  return parseReadReservation(r.data!);
}

async function fullStatus(n: Nexus) {
  const r = await prIn(n, PrIn.READ_FULL_STATUS);
  expectGood(r);
  return parseFullStatus(r.data!);
}

function expectConflict(r: ScsiResult): void {
  expect(r.status, "RESERVATION CONFLICT").toBe(CONFLICT);
}

/** Report-and-clear every pending unit attention of `n`, in order. */
async function attentions(n: Nexus): Promise<number[]> {
  const out: number[] = [];
  for (;;) {
    const r = await exec(n, Cdb.testUnitReady());
    if (r.status === ScsiStatus.GOOD) return out;
    const sense = expectSense(r, UA, (r.sense![12]! << 8) | r.sense![13]!);
    out.push(sense.asc);
  }
}

describe("REGISTER and REGISTER AND IGNORE EXISTING KEY (SPC-4 5.13.7, tables 67-68)", () => {
  it("registers, changes the key and unregisters, counting PRgeneration", async () => {
    const { a, b } = world();
    expect(await readKeys(a)).toEqual({ generation: 0, additionalLength: 0, keys: [] });
    expectGood(await prOut(a, PrOut.REGISTER, { saKey: KA }));
    expectGood(await prOut(b, PrOut.REGISTER, { saKey: KB }));
    expect(await readKeys(b)).toEqual({ generation: 2, additionalLength: 16, keys: [KA, KB] });
    expectGood(await prOut(a, PrOut.REGISTER, { key: KA, saKey: KC }));
    expect((await readKeys(a)).keys).toEqual([KC, KB]);
    expectGood(await prOut(a, PrOut.REGISTER, { key: KC, saKey: 0n }));
    expect(await readKeys(a)).toEqual({ generation: 4, additionalLength: 8, keys: [KB] });
  });

  it("does nothing for an unregistered nexus sending two zero keys", async () => {
    const { a } = world();
    expectGood(await prOut(a, PrOut.REGISTER, {}));
    expectGood(await prOut(a, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY, {}));
    expect(await readKeys(a)).toEqual({ generation: 0, additionalLength: 0, keys: [] });
  });

  it("answers RESERVATION CONFLICT for a wrong RESERVATION KEY, leaving PRgeneration alone", async () => {
    const { a } = world();
    expectConflict(await prOut(a, PrOut.REGISTER, { key: KB, saKey: KA })); // unregistered, key ≠ 0
    expectGood(await prOut(a, PrOut.REGISTER, { saKey: KA }));
    expectConflict(await prOut(a, PrOut.REGISTER, { key: KB, saKey: KC })); // registered, wrong key
    expectConflict(await prOut(a, PrOut.REGISTER, { saKey: KC })); // libiscsi "reregister fails"
    expect(await readKeys(a)).toEqual({ generation: 1, additionalLength: 8, keys: [KA] });
  });

  it("REGISTER AND IGNORE EXISTING KEY ignores the RESERVATION KEY", async () => {
    const { a } = world();
    expectGood(await prOut(a, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY, { key: KC, saKey: KA }));
    expectGood(await prOut(a, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY, { key: KC, saKey: KB }));
    expect((await readKeys(a)).keys).toEqual([KB]);
    expectGood(await prOut(a, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY, { key: KC }));
    expect((await readKeys(a)).keys).toEqual([]);
  });

  it("refuses SPEC_I_PT from a registered nexus and with REGISTER AND IGNORE EXISTING KEY", async () => {
    const { a } = world();
    const tids = [{ initiator: NAME_B }];
    expectSense(
      await prOut(a, PrOut.REGISTER_AND_IGNORE_EXISTING_KEY, {
        saKey: KA,
        specIPt: true,
        transportIds: tids,
      }),
      ILLEGAL,
      Asc.INVALID_FIELD_IN_PARAMETER_LIST,
    );
    expectGood(await register(a, KA));
    const s = expectSense(
      await prOut(a, PrOut.REGISTER, { key: KA, saKey: KB, specIPt: true, transportIds: tids }),
      ILLEGAL,
      Asc.INVALID_FIELD_IN_PARAMETER_LIST,
    );
    expect(s.fieldPointer).toEqual({ inCdb: false, byte: 20, bit: 3 });
  });

  it("SPEC_I_PT registers the sender and every TransportID, all or nothing", async () => {
    const { a, b, c, open } = world();
    expectGood(
      await prOut(a, PrOut.REGISTER, {
        saKey: KA,
        specIPt: true,
        transportIds: [
          { initiator: NAME_B, isid: "400000000002" }, // b's port (format 01b)
          { initiator: NAME_C }, // every port of c (format 00b)
          { initiator: NAME_A, isid: "400000000001" }, // the sender itself: registered once
        ],
      }),
    );
    expect(await readKeys(a)).toEqual({ generation: 1, additionalLength: 24, keys: [KA, KA, KA] });
    // b and c are registered with KA: they may reserve with it.
    expectGood(await reserve(b, KA, PrType.WRITE_EXCLUSIVE));
    expectGood(await release(b, KA, PrType.WRITE_EXCLUSIVE));
    const c2 = open(NAME_C, { isid: "400000000099" });
    expectGood(await reserve(c2, KA, PrType.WRITE_EXCLUSIVE));
    expectGood(await release(c, KA, PrType.WRITE_EXCLUSIVE));
    const status = await fullStatus(a);
    expect(status.descriptors.map((d) => [d.format, d.initiator])).toEqual([
      [1, { initiator: NAME_A, isid: "400000000001" }],
      [1, { initiator: NAME_B, isid: "400000000002" }],
      [0, { initiator: NAME_C }],
    ]);

    // An I_T nexus that is already registered fails the whole command.
    const d = open("iqn.2025-01.com.example:d");
    const r = await prOut(d, PrOut.REGISTER, {
      saKey: KC,
      specIPt: true,
      transportIds: [{ initiator: "iqn.2025-01.com.example:e" }, { initiator: NAME_B }],
    });
    const s = expectSense(r, ILLEGAL, Asc.INVALID_FIELD_IN_PARAMETER_LIST);
    expect(s.fieldPointer?.byte).toBeGreaterThan(28);
    expect((await readKeys(a)).keys).toEqual([KA, KA, KA]);
  });

  it("checks the SPEC_I_PT TransportID list", async () => {
    const { a } = world();
    const good = encodeTransportId({ initiator: NAME_B });
    // TRANSPORTID PARAMETER DATA LENGTH beyond the parameter list: PARAMETER LIST LENGTH ERROR.
    const long = basicParameters({ saKey: KA, specIPt: true, transportIds: [good] });
    long.writeUInt32BE(good.length + 4, 24);
    expectSense(
      await exec(a, prOutCdb(PrOut.REGISTER, { length: long.length }), long),
      ILLEGAL,
      Asc.PARAMETER_LIST_LENGTH_ERROR,
    );
    // A TransportID cut by the TRANSPORTID PARAMETER DATA LENGTH, of another protocol, or
    // without a NUL: INVALID FIELD IN PARAMETER LIST.
    const cut = basicParameters({ saKey: KA, specIPt: true, transportIds: [good] });
    cut.writeUInt32BE(good.length - 4, 24);
    const fc = Buffer.from(good);
    fc[0] = 0x00; // Fibre Channel
    const noNul = Buffer.from(good);
    noNul.fill(0x61, 4);
    for (const params of [
      cut,
      basicParameters({ saKey: KA, specIPt: true, transportIds: [fc] }),
      basicParameters({ saKey: KA, specIPt: true, transportIds: [noNul] }),
    ]) {
      expectSense(
        await exec(a, prOutCdb(PrOut.REGISTER, { length: params.length }), params),
        ILLEGAL,
        Asc.INVALID_FIELD_IN_PARAMETER_LIST,
      );
    }
    expect((await readKeys(a)).keys).toEqual([]);
  });

  it("ALL_TG_PT registers through every target port", async () => {
    const { a, open } = world();
    expectGood(await register(a, KA, { allTgPt: true }));
    const [d] = (await fullStatus(a)).descriptors;
    expect(d).toMatchObject({ key: KA, allTgPt: true, relativeTargetPort: 0 });
    // The same initiator port through target port 2 is registered too.
    const a2 = open(NAME_A, { isid: "400000000001", tpgt: 2 });
    expectGood(await reserve(a2, KA, PrType.EXCLUSIVE_ACCESS));
    // Without ALL_TG_PT, only the target port the command came through.
    const { b, open: open2 } = world();
    expectGood(await register(b, KB));
    expect((await fullStatus(b)).descriptors[0]).toMatchObject({
      allTgPt: false,
      relativeTargetPort: 1,
    });
    expectConflict(await reserve(open2(NAME_B, { isid: "400000000002", tpgt: 2 }), KB, 1));
  });
});

describe("PERSISTENT RESERVE OUT validation (SPC-4 6.16)", () => {
  it("requires a 24-byte parameter list without SPEC_I_PT", async () => {
    const { a } = world();
    for (const length of [0, 8, 23]) {
      expectSense(
        await exec(a, prOutCdb(PrOut.REGISTER, { length }), Buffer.alloc(length)),
        ILLEGAL,
        Asc.PARAMETER_LIST_LENGTH_ERROR,
      );
    }
    expectSense(
      await exec(a, prOutCdb(PrOut.RESERVE, { length: 28, type: 1 }), Buffer.alloc(28)),
      ILLEGAL,
      Asc.PARAMETER_LIST_LENGTH_ERROR,
    );
    // Less Data-Out than the PARAMETER LIST LENGTH: INVALID FIELD IN COMMAND INFORMATION UNIT.
    const r = await exec(a, prOutCdb(PrOut.REGISTER), Buffer.alloc(12), 0);
    expectSense(r, ILLEGAL, Asc.INVALID_FIELD_IN_COMMAND_IU);
    expect(r.dataOutLength).toBe(24);
  });

  it("checks SCOPE and TYPE where they are used, ignores them elsewhere", async () => {
    const { a } = world();
    expectGood(await prOut(a, PrOut.REGISTER, { saKey: KA }, { scope: 2, type: 9 }));
    for (const action of [PrOut.RESERVE, PrOut.RELEASE, PrOut.PREEMPT, PrOut.PREEMPT_AND_ABORT]) {
      for (const type of [0, 2, 4, 9, 15]) {
        const s = expectSense(
          await prOut(a, action, { key: KA, saKey: KA }, { type }),
          ILLEGAL,
          Asc.INVALID_FIELD_IN_CDB,
        );
        expect(s.fieldPointer).toEqual({ inCdb: true, byte: 2, bit: 3 });
      }
      const s = expectSense(
        await prOut(a, action, { key: KA, saKey: KA }, { type: 1, scope: 1 }),
        ILLEGAL,
        Asc.INVALID_FIELD_IN_CDB,
      );
      expect(s.fieldPointer).toEqual({ inCdb: true, byte: 2, bit: 7 });
    }
    expectGood(await prOut(a, PrOut.CLEAR, { key: KA }, { type: 9, scope: 3 }));
  });

  it("refuses unknown service actions and reserved CDB bits", async () => {
    const { a } = world();
    for (const sa of [0x08, 0x1f]) {
      expectSense(
        await exec(a, prOutCdb(sa), basicParameters()),
        ILLEGAL,
        Asc.INVALID_FIELD_IN_CDB,
      );
    }
    const cdb = prOutCdb(PrOut.REGISTER);
    cdb[3] = 1;
    expectSense(
      await exec(a, cdb, basicParameters({ saKey: KA })),
      ILLEGAL,
      Asc.INVALID_FIELD_IN_CDB,
    );
  });

  it("answers RESERVATION CONFLICT to every other service action from an unregistered nexus", async () => {
    const { a, b } = world();
    expectGood(await register(a, KA));
    expectGood(await reserve(a, KA, PrType.WRITE_EXCLUSIVE));
    for (const action of [PrOut.RESERVE, PrOut.RELEASE, PrOut.CLEAR, PrOut.PREEMPT]) {
      expectConflict(await prOut(b, action, { key: 0n, saKey: KA }, { type: 1 }));
    }
    const params = moveParameters({ key: 0n, saKey: KB, destination: { initiator: NAME_C } });
    expectConflict(
      await exec(b, prOutCdb(PrOut.REGISTER_AND_MOVE, { length: params.length }), params),
    );
    expect(await readReservation(a)).toMatchObject({ key: KA, type: 1 });
  });

  it("refuses PERSISTENT RESERVE OUT through a read-only mapping, allows PERSISTENT RESERVE IN", async () => {
    const { a, open } = world();
    expectGood(await register(a, KA));
    const ro = open(NAME_C, { readOnly: true });
    expectSense(await register(ro, KC), SenseKey.DATA_PROTECT, Asc.WRITE_PROTECTED);
    expectSense(
      await prOut(ro, PrOut.CLEAR, { key: KC }),
      SenseKey.DATA_PROTECT,
      Asc.WRITE_PROTECTED,
    );
    expect((await readKeys(ro)).keys).toEqual([KA]);
  });
});

describe("RESERVE and RELEASE (SPC-4 5.13.9, 5.13.11.2.2)", () => {
  it.each(TYPES)(
    "%s: reports the reservation; the holder may repeat it, nobody may change it",
    async (_, type) => {
      const { a, b } = world();
      expectGood(await register(a, KA));
      expectGood(await register(b, KB));
      expect(await readReservation(a)).toEqual({ generation: 2, additionalLength: 0 });
      expectGood(await reserve(a, KA, type));
      // SPC-4 5.13.10: the key of an All Registrants reservation reads as zero.
      expect(await readReservation(b)).toEqual({
        generation: 2,
        additionalLength: 16,
        key: ALL_REGISTRANTS.includes(type) ? 0n : KA,
        scope: 0,
        type,
      });
      expectGood(await reserve(a, KA, type));
      const other =
        type === PrType.WRITE_EXCLUSIVE ? PrType.EXCLUSIVE_ACCESS : PrType.WRITE_EXCLUSIVE;
      expectConflict(await reserve(a, KA, other));
      if (ALL_REGISTRANTS.includes(type)) expectGood(await reserve(b, KB, type));
      else expectConflict(await reserve(b, KB, type));
      expectConflict(await reserve(a, KB, type)); // wrong key
      expect((await readReservation(a)).type).toBe(type);
      expect((await readKeys(a)).generation).toBe(2); // RESERVE does not count
    },
  );

  it.each(TYPES)(
    "%s: RELEASE by a non-holder does nothing; a wrong TYPE is INVALID RELEASE",
    async (_, type) => {
      const { a, b, c } = world();
      expectGood(await register(a, KA));
      expectGood(await register(b, KB));
      expectGood(await release(a, KA, type)); // nothing reserved: GOOD
      expectGood(await reserve(a, KA, type));
      if (!ALL_REGISTRANTS.includes(type)) {
        expectGood(await release(b, KB, type));
        expect((await readReservation(a)).type).toBe(type);
      }
      const other =
        type === PrType.WRITE_EXCLUSIVE ? PrType.EXCLUSIVE_ACCESS : PrType.WRITE_EXCLUSIVE;
      expectSense(
        await release(a, KA, other),
        ILLEGAL,
        PrAsc.INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
      );
      expectConflict(await release(a, KB, type));
      // Any holder releases an All Registrants reservation.
      expectGood(
        await release(
          ALL_REGISTRANTS.includes(type) ? b : a,
          ALL_REGISTRANTS.includes(type) ? KB : KA,
          type,
        ),
      );
      expect(await readReservation(c)).toEqual({ generation: 2, additionalLength: 0 });
      expect((await readKeys(c)).keys).toEqual([KA, KB]);
    },
  );

  it.each(TYPES)("%s: RELEASE tells the other registrants only for RR types", async (_, type) => {
    const { a, b, c } = world();
    expectGood(await register(a, KA));
    expectGood(await register(b, KB));
    expectGood(await reserve(a, KA, type));
    expectGood(await release(a, KA, type));
    const expected = REGISTRANTS.includes(type) ? [PrAsc.RESERVATIONS_RELEASED] : [];
    expect(await attentions(b)).toEqual(expected);
    expect(await attentions(a)).toEqual([]);
    expect(await attentions(c)).toEqual([]);
  });

  it.each(TYPES)(
    "%s: unregistering the holder (libiscsi ProutReserve.Ownership*)",
    async (_, type) => {
      const { a, b, c } = world();
      expectGood(await register(a, KA));
      expectGood(await register(b, KB));
      expectGood(await reserve(a, KA, type));
      expectGood(await prOut(a, PrOut.REGISTER, { key: KA, saKey: 0n }));
      if (ALL_REGISTRANTS.includes(type)) {
        // b still holds it; released with the last registration.
        expect(await readReservation(c)).toMatchObject({ key: 0n, type });
        expect(await attentions(b)).toEqual([]);
        expectGood(await prOut(b, PrOut.REGISTER, { key: KB, saKey: 0n }));
      } else {
        const expected = REGISTRANTS.includes(type) ? [PrAsc.RESERVATIONS_RELEASED] : [];
        expect(await attentions(b)).toEqual(expected);
      }
      expect(await readReservation(c)).toMatchObject({ additionalLength: 0 });
    },
  );
});

describe("CLEAR (SPC-4 5.13.11.2.7)", () => {
  it("removes everything, counts once, and tells the other registrants RESERVATIONS PREEMPTED", async () => {
    const { a, b, c } = world();
    expectGood(await register(a, KA));
    expectGood(await register(b, KB));
    expectGood(await reserve(a, KA, PrType.EXCLUSIVE_ACCESS));
    const before = (await readKeys(a)).generation;
    expectConflict(await prOut(b, PrOut.CLEAR, { key: KA }));
    expectGood(await prOut(b, PrOut.CLEAR, { key: KB }));
    expect(await readKeys(c)).toEqual({ generation: before + 1, additionalLength: 0, keys: [] });
    expect(await readReservation(c)).toMatchObject({ additionalLength: 0 });
    expect(await attentions(a)).toEqual([PrAsc.RESERVATIONS_PREEMPTED]);
    expect(await attentions(b)).toEqual([]);
    expect(await attentions(c)).toEqual([]);
  });
});

describe("PREEMPT and PREEMPT AND ABORT (SPC-4 5.13.11.2.4-6, figure 9, table 72)", () => {
  const actions = [
    ["PREEMPT", PrOut.PREEMPT],
    ["PREEMPT AND ABORT", PrOut.PREEMPT_AND_ABORT],
  ] as const;

  it.each(actions)(
    "%s without a reservation removes registrations (libiscsi ProutPreempt)",
    async (_, action) => {
      const { a, b, c } = world();
      expectGood(await register(a, KA));
      expectGood(await register(b, KB));
      const gen = (await readKeys(a)).generation;
      expectGood(await prOut(b, action, { key: KB, saKey: KA }, { type: PrType.EXCLUSIVE_ACCESS }));
      expect(await readKeys(c)).toEqual({ generation: gen + 1, additionalLength: 8, keys: [KB] });
      expect(await readReservation(c)).toMatchObject({ additionalLength: 0 });
      expect(await attentions(a)).toEqual([PrAsc.REGISTRATIONS_PREEMPTED]);
      expect(await attentions(b)).toEqual([]);
      // A key nobody has: RESERVATION CONFLICT; zero: INVALID FIELD IN PARAMETER LIST.
      expectConflict(await prOut(b, action, { key: KB, saKey: KC }, { type: 1 }));
      const s = expectSense(
        await prOut(b, action, { key: KB, saKey: 0n }, { type: 1 }),
        ILLEGAL,
        Asc.INVALID_FIELD_IN_PARAMETER_LIST,
      );
      expect(s.fieldPointer).toEqual({ inCdb: false, byte: 8 });
      expect((await readKeys(c)).generation).toBe(gen + 1);
      // Its own key: the registration goes, without a unit attention.
      expectGood(await prOut(b, action, { key: KB, saKey: KB }, { type: 1 }));
      expect((await readKeys(c)).keys).toEqual([]);
      expect(await attentions(b)).toEqual([]);
    },
  );

  it.each(actions)("%s of the holder's key takes the reservation over", async (_, action) => {
    const { a, b, c, open } = world();
    const a2 = open(NAME_A, { isid: "400000000009" });
    expectGood(await register(a, KA));
    expectGood(await register(a2, KA)); // a second registration with the same key
    expectGood(await register(b, KB));
    expectGood(await register(c, KC));
    expectGood(await reserve(a, KA, PrType.EXCLUSIVE_ACCESS));
    // Same type: the preempted registrations hear REGISTRATIONS PREEMPTED, nobody else.
    expectGood(await prOut(b, action, { key: KB, saKey: KA }, { type: PrType.EXCLUSIVE_ACCESS }));
    expect(await readReservation(c)).toMatchObject({ key: KB, type: PrType.EXCLUSIVE_ACCESS });
    expect((await readKeys(c)).keys).toEqual([KB, KC]);
    expect(await attentions(a)).toEqual([PrAsc.REGISTRATIONS_PREEMPTED]);
    expect(await attentions(a2)).toEqual([PrAsc.REGISTRATIONS_PREEMPTED]);
    expect(await attentions(c)).toEqual([]);
    expectConflict(await exec(a, Cdb.read10({ lba: 0, blocks: 1 })));
    expectConflict(await exec(c, Cdb.read10({ lba: 0, blocks: 1 })));
    // The holder preempting itself to change the type: the others hear RESERVATIONS RELEASED.
    expectGood(await prOut(b, action, { key: KB, saKey: KB }, { type: PrType.WRITE_EXCLUSIVE }));
    expect(await attentions(c)).toEqual([PrAsc.RESERVATIONS_RELEASED]);
    expect(await attentions(b)).toEqual([]);
    expect(await readReservation(c)).toMatchObject({ key: KB, type: PrType.WRITE_EXCLUSIVE });
    expect((await readKeys(c)).keys).toEqual([KB, KC]);
    // Another registrant's key while b holds it: only that registration goes.
    expectGood(await prOut(b, action, { key: KB, saKey: KC }, { type: PrType.EXCLUSIVE_ACCESS }));
    expect(await readReservation(a)).toMatchObject({ key: KB, type: PrType.WRITE_EXCLUSIVE });
    expect(await attentions(c)).toEqual([PrAsc.REGISTRATIONS_PREEMPTED]);
  });

  it.each(actions)("%s of an All Registrants reservation", async (_, action) => {
    const { a, b, c } = world();
    expectGood(await register(a, KA));
    expectGood(await register(b, KB));
    expectGood(await register(c, KC));
    expectGood(await reserve(a, KA, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS));
    // A non-zero key only removes registrations; the reservation stays.
    expectGood(await prOut(b, action, { key: KB, saKey: KC }, { type: PrType.EXCLUSIVE_ACCESS }));
    expect(await readReservation(a)).toMatchObject({
      key: 0n,
      type: PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS,
    });
    expect(await attentions(c)).toEqual([PrAsc.REGISTRATIONS_PREEMPTED]);
    // Zero: every other registration goes and the preempting nexus holds a new reservation.
    expectGood(await prOut(b, action, { key: KB, saKey: 0n }, { type: PrType.EXCLUSIVE_ACCESS }));
    expect(await attentions(a)).toEqual([PrAsc.REGISTRATIONS_PREEMPTED]);
    expect(await readReservation(a)).toMatchObject({ key: KB, type: PrType.EXCLUSIVE_ACCESS });
    expect((await readKeys(a)).keys).toEqual([KB]);
  });
});

describe("PREEMPT AND ABORT, best effort (SPC-4 5.13.11.2.6)", () => {
  it("answers GOOD only once the commands admitted under the old reservation have settled", async () => {
    let finish!: () => void;
    const held = new Promise<void>((resolve) => {
      finish = resolve;
    });
    /** A volume whose next write waits for `held`. */
    class SlowVolume extends MemoryVolume {
      slow = true;
      override async write(lba: number, data: Buffer): Promise<void> {
        if (this.slow) {
          this.slow = false;
          await held;
        }
        return super.write(lba, data);
      }
    }
    const target = new ScsiTarget(TEST_INFO);
    const volume = new SlowVolume({ blocks: 16 });
    const open = (initiatorName: string) =>
      target.openNexus(identity({ initiatorName }), new MutableView([lunEntry(0, volume)]));
    const a = open(NAME_A);
    const b = open(NAME_B);
    expectGood(await register(a, KA));
    expectGood(await register(b, KB));
    expectGood(await reserve(a, KA, PrType.WRITE_EXCLUSIVE));
    const write = exec(a, Cdb.write10({ lba: 2, blocks: 1 }), pattern(1, 0x99));
    let preempted = false;
    const preempt = prOut(
      b,
      PrOut.PREEMPT_AND_ABORT,
      { key: KB, saKey: KA },
      { type: PrType.WRITE_EXCLUSIVE },
    ).then((r) => {
      preempted = true;
      return r;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    // The new reservation already applies to new commands; GOOD waits for the running write.
    expect(preempted).toBe(false);
    expect(await attentions(a)).toEqual([PrAsc.REGISTRATIONS_PREEMPTED]);
    expectConflict(await exec(a, Cdb.write10({ lba: 3, blocks: 1 }), pattern(1, 0x98)));
    finish();
    expectGood(await write);
    expectGood(await preempt);
    expect(await readReservation(b)).toMatchObject({ key: KB, type: PrType.WRITE_EXCLUSIVE });
  });
});

describe("REGISTER AND MOVE (SPC-4 5.13.8, table 70)", () => {
  const move = (n: Nexus, params: Buffer) =>
    exec(n, prOutCdb(PrOut.REGISTER_AND_MOVE, { length: params.length }), params);

  it("registers the destination and moves the reservation to it", async () => {
    const { a, b, c } = world();
    expectGood(await register(a, KA, { aptpl: false }));
    expectGood(await reserve(a, KA, PrType.EXCLUSIVE_ACCESS));
    const gen = (await readKeys(a)).generation;
    expectGood(
      await move(
        a,
        moveParameters({
          key: KA,
          saKey: KB,
          destination: { initiator: NAME_B, isid: "400000000002" },
        }),
      ),
    );
    expect(await readReservation(c)).toMatchObject({ key: KB, type: PrType.EXCLUSIVE_ACCESS });
    expect(await readKeys(c)).toEqual({
      generation: gen + 1,
      additionalLength: 16,
      keys: [KA, KB],
    });
    expectGood(await exec(b, Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 0x22)));
    expectConflict(await exec(a, Cdb.read10({ lba: 0, blocks: 1 })));
    // UNREG: b moves it on to c (already registered: its key is replaced) and leaves.
    expectGood(await register(c, KC));
    expectGood(
      await move(
        b,
        moveParameters({ key: KB, saKey: KA, unreg: true, destination: { initiator: NAME_C } }),
      ),
    );
    expect(await readReservation(a)).toMatchObject({ key: KA, type: PrType.EXCLUSIVE_ACCESS });
    expect((await readKeys(a)).keys).toEqual([KA, KA]);
    expect((await fullStatus(a)).descriptors.map((d) => [d.initiator.initiator, d.holder])).toEqual(
      [
        [NAME_A, false],
        [NAME_C, true],
      ],
    );
  });

  it("refuses what table 70 refuses", async () => {
    const { a, b } = world();
    const to = (o: { key?: bigint; saKey?: bigint; port?: number; dest?: object } = {}) =>
      moveParameters({
        key: o.key ?? KA,
        saKey: o.saKey ?? KB,
        relativeTargetPort: o.port ?? 1,
        destination: (o.dest as { initiator: string }) ?? { initiator: NAME_B },
      });
    expectGood(await register(a, KA));
    expectGood(await register(b, KB));
    // No reservation: INVALID FIELD IN CDB.
    expectSense(await move(a, to()), ILLEGAL, Asc.INVALID_FIELD_IN_CDB);
    expectGood(await reserve(a, KA, PrType.WRITE_EXCLUSIVE));
    expectConflict(await move(b, to({ key: KB }))); // not the holder
    expectConflict(await move(a, to({ key: KC }))); // wrong key
    expectSense(await move(a, to({ saKey: 0n })), ILLEGAL, Asc.INVALID_FIELD_IN_PARAMETER_LIST);
    expectSense(await move(a, to({ port: 7 })), ILLEGAL, Asc.INVALID_FIELD_IN_PARAMETER_LIST);
    expectSense(
      await move(a, to({ dest: { initiator: NAME_A, isid: "400000000001" } })),
      ILLEGAL,
      Asc.INVALID_FIELD_IN_PARAMETER_LIST,
    );
    // A TRANSPORTID LENGTH beyond the parameter list.
    const long = to();
    long.writeUInt32BE(long.length, 20);
    expectSense(await move(a, long), ILLEGAL, Asc.PARAMETER_LIST_LENGTH_ERROR);
    expectGood(await release(a, KA, PrType.WRITE_EXCLUSIVE));
    expectGood(await reserve(a, KA, PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS));
    expectConflict(await move(a, to()));
    expect(await readReservation(a)).toMatchObject({
      type: PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS,
    });
  });
});

describe("PERSISTENT RESERVE IN (SPC-4 6.15)", () => {
  it("REPORT CAPABILITIES", async () => {
    const { a } = world();
    const r = await prIn(a, PrIn.REPORT_CAPABILITIES);
    expectGood(r);
    // LENGTH 8; CRH SIP_C ATP_C PTPL_C; TMV, ALLOW COMMANDS 011b; all six types.
    expect([...r.data!]).toEqual([0, 8, 0x1d, 0xb0, 0xea, 0x01, 0, 0]);
    expectGood(await register(a, KA, { aptpl: true }));
    expect((await prIn(a, PrIn.REPORT_CAPABILITIES)).data![3]).toBe(0xb1); // PTPL_A
    const { a: x } = world({ store: null });
    expect([...(await prIn(x, PrIn.REPORT_CAPABILITIES)).data!]).toEqual([
      0, 8, 0x1c, 0xb0, 0xea, 0x01, 0, 0,
    ]);
  });

  it("truncates to the ALLOCATION LENGTH without changing the length fields", async () => {
    const { a, b } = world();
    expectGood(await register(a, KA));
    expectGood(await register(b, KB));
    const r = await prIn(a, PrIn.READ_KEYS, 8);
    expect(r.data!.length).toBe(8);
    expect(parseReadKeys(r.data!)).toEqual({ generation: 2, additionalLength: 16, keys: [] });
    expect((await prIn(a, PrIn.READ_KEYS, 12)).data!.length).toBe(12);
    expect((await prIn(a, PrIn.REPORT_CAPABILITIES, 2)).data).toEqual(Buffer.from([0, 8]));
    expect((await prIn(a, PrIn.READ_FULL_STATUS, 0)).data!.length).toBe(0);
  });

  it("READ FULL STATUS describes every registration with its iSCSI TransportID", async () => {
    const { a, b, c } = world();
    expectGood(await register(a, KA));
    expectGood(await register(b, KB));
    expectGood(await reserve(a, KA, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY));
    const r = await prIn(c, PrIn.READ_FULL_STATUS);
    expectGood(r);
    expect(parseFullStatus(r.data!)).toEqual({
      generation: 2,
      descriptors: [
        {
          key: KA,
          allTgPt: false,
          holder: true,
          scope: 0,
          type: PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY,
          relativeTargetPort: 1,
          format: 1,
          initiator: { initiator: NAME_A, isid: "400000000001" },
        },
        {
          key: KB,
          allTgPt: false,
          holder: false,
          scope: 0,
          type: 0,
          relativeTargetPort: 1,
          format: 1,
          initiator: { initiator: NAME_B, isid: "400000000002" },
        },
      ],
    });
    // The TransportID: 01b/iSCSI, ADDITIONAL LENGTH, "name,i,0x" + ISID, NUL-padded to 4.
    const tid = r.data!.subarray(8 + 24, 8 + 24 + r.data!.readUInt32BE(8 + 20));
    expect(tid[0]).toBe(0x45);
    expect(tid.length % 4).toBe(0);
    expect(tid.subarray(4).toString("latin1").replace(/\0+$/, "")).toBe(
      `${NAME_A},i,0x400000000001`,
    );
  });

  it("refuses service actions 04h-1Fh (libiscsi PrinServiceactionRange)", async () => {
    const { a } = world();
    for (let sa = 0; sa < 4; sa++) expectGood(await exec(a, prInCdb(sa)));
    for (let sa = 4; sa < 0x20; sa++) {
      expectSense(await exec(a, prInCdb(sa)), ILLEGAL, Asc.INVALID_FIELD_IN_CDB);
    }
  });
});

describe("conflicts (SPC-4 table 65, SBC-4 table 13)", () => {
  /** Commands by what they are under a persistent reservation. */
  const COMMANDS: readonly [
    string,
    () => Buffer,
    Buffer | undefined,
    "allowed" | "read" | "write",
  ][] = [
    ["TEST UNIT READY", () => Cdb.testUnitReady(), undefined, "allowed"],
    ["INQUIRY", () => Cdb.inquiry(), undefined, "allowed"],
    ["REPORT LUNS", () => Cdb.reportLuns(), undefined, "allowed"],
    ["READ CAPACITY(10)", () => Cdb.readCapacity10(), undefined, "allowed"],
    ["READ CAPACITY(16)", () => Cdb.readCapacity16(), undefined, "allowed"],
    ["START STOP UNIT (start)", () => Cdb.startStopUnit({ start: true }), undefined, "allowed"],
    ["PERSISTENT RESERVE IN", () => prInCdb(PrIn.READ_KEYS), undefined, "allowed"],
    ["READ(10)", () => Cdb.read10({ lba: 0, blocks: 1 }), undefined, "read"],
    ["READ(16)", () => Cdb.read16({ lba: 0, blocks: 1 }), undefined, "read"],
    ["VERIFY(10)", () => Cdb.verify10({ lba: 0, blocks: 1 }), undefined, "read"],
    ["PRE-FETCH(10)", () => Cdb.preFetch10({ lba: 0, blocks: 1 }), undefined, "read"],
    ["GET LBA STATUS", () => Cdb.getLbaStatus(0), undefined, "read"],
    ["MODE SENSE(6)", () => Cdb.modeSense6(), undefined, "read"],
    ["REPORT SUPPORTED OPERATION CODES", () => Cdb.reportSupportedOpcodes(), undefined, "read"],
    ["WRITE(10)", () => Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 0x33), "write"],
    ["WRITE SAME(10)", () => Cdb.writeSame10({ lba: 0, blocks: 1 }), pattern(1, 0), "write"],
    ["SYNCHRONIZE CACHE(10)", () => Cdb.syncCache10(), undefined, "write"],
    ["START STOP UNIT (stop)", () => Cdb.startStopUnit({ start: false }), undefined, "write"],
  ];

  it.each(TYPES)("%s", async (_, type) => {
    const { a, b, c } = world();
    expectGood(await register(a, KA));
    expectGood(await register(b, KB));
    expectGood(await reserve(a, KA, type));
    const roles = [
      ["holder", a, true],
      ["registered", b, REGISTRANTS.includes(type)],
      ["unregistered", c, false],
    ] as const;
    for (const [role, nexus, runsEverything] of roles) {
      for (const [name, cdb, data, access] of COMMANDS) {
        const conflicts =
          !runsEverything &&
          (access === "write" || (access === "read" && !WRITE_EXCLUSIVE.includes(type)));
        const r = await exec(nexus, cdb(), data);
        expect(r.status, `${role} ${name}`).toBe(conflicts ? CONFLICT : ScsiStatus.GOOD);
      }
    }
  });

  it("registrations without a reservation restrict nothing", async () => {
    const { a, c } = world();
    expectGood(await register(a, KA));
    expectGood(await exec(c, Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 0x44)));
  });

  it("reports a unit attention before a reservation conflict", async () => {
    const { a, c, target, volume } = world();
    expectGood(await register(a, KA));
    expectGood(await reserve(a, KA, PrType.EXCLUSIVE_ACCESS));
    target.notifyVolumeChanged(volume.id, "mode-changed");
    expectSense(await exec(c, Cdb.read10({ lba: 0, blocks: 1 })), UA, Asc.MODE_PARAMETERS_CHANGED);
    expectConflict(await exec(c, Cdb.read10({ lba: 0, blocks: 1 })));
  });

  it("persistent reservations survive LUN reset, target reset and I_T nexus loss", async () => {
    const { a, c, open } = world();
    expectGood(await register(a, KA));
    expectGood(await reserve(a, KA, PrType.EXCLUSIVE_ACCESS));
    c.lunReset(0);
    c.targetReset();
    a.close();
    expect(await attentions(c)).toEqual([Asc.POWER_ON_RESET_OCCURRED]);
    expectConflict(await exec(c, Cdb.read10({ lba: 0, blocks: 1 })));
    // The same I_T nexus logging in again (same name, ISID and port) is still the holder.
    const again = open(NAME_A, { isid: "400000000001" });
    expectGood(await exec(again, Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 0x55)));
    // Another ISID is another I_T nexus.
    expectConflict(
      await exec(open(NAME_A, { isid: "400000000077" }), Cdb.read10({ lba: 0, blocks: 1 })),
    );
  });
});

describe("RESERVE(6) / RELEASE(6) with persistent reservations (SPC-4 5.13.3, SPC-2 5.5.1)", () => {
  it("conflict while anyone is registered, except holders and RR registrants (GOOD, no effect)", async () => {
    const { a, b, c } = world();
    expectGood(await register(a, KA));
    expectConflict(await exec(a, Cdb.reserve6())); // registered, nothing reserved
    expectConflict(await exec(c, Cdb.release6()));
    expectGood(await reserve(a, KA, PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY));
    expectGood(await exec(a, Cdb.reserve6())); // the holder: GOOD, no reservation made
    expectGood(await exec(a, Cdb.release6()));
    expectGood(await register(b, KB));
    expectGood(await exec(b, Cdb.reserve6())); // a registrant of an RR type: same
    expectConflict(await exec(c, Cdb.reserve6()));
    // No RESERVE(6) reservation was established: b still reads, a still writes.
    expectGood(await exec(a, Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 0x66)));
    expectGood(await exec(c, Cdb.read10({ lba: 0, blocks: 1 })));
    // Once nobody is registered, RESERVE(6) works as SPC-2 says.
    expectGood(await prOut(a, PrOut.CLEAR, { key: KA }));
    expectGood(await exec(c, Cdb.reserve6()));
  });

  it("a RESERVE(6) reservation makes PERSISTENT RESERVE IN and OUT conflict, even for its holder", async () => {
    const { a, b } = world();
    expectGood(await exec(a, Cdb.reserve6()));
    for (const n of [a, b]) {
      expectConflict(await register(n, KA));
      expectConflict(await prIn(n, PrIn.READ_KEYS));
      expectConflict(await prIn(n, PrIn.REPORT_CAPABILITIES));
    }
    expectGood(await exec(a, Cdb.release6()));
    expectGood(await register(b, KB));
  });
});

describe("key_by initiator", () => {
  it("keys a registration by initiator name: another ISID of it is the same registrant", async () => {
    const { c, open } = world();
    const a1 = open(NAME_A, { isid: "400000000011", keyBy: "initiator" });
    expectGood(await register(a1, KA));
    expectGood(await reserve(a1, KA, PrType.EXCLUSIVE_ACCESS));
    a1.close();
    // A re-login with a new ISID (a cluster node, a fencing agent) still holds it.
    const a2 = open(NAME_A.toUpperCase(), { isid: "400000000022", keyBy: "initiator" });
    expectGood(await exec(a2, Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 0x77)));
    expectGood(await release(a2, KA, PrType.EXCLUSIVE_ACCESS));
    expect((await fullStatus(c)).descriptors).toMatchObject([
      { key: KA, format: 0, initiator: { initiator: NAME_A } },
    ]);
    // Unit attentions reach every session of that initiator.
    const a3 = open(NAME_A, { isid: "400000000033", keyBy: "initiator" });
    expectGood(await register(c, KC));
    expectGood(await prOut(c, PrOut.CLEAR, { key: KC }));
    expect(await attentions(a2)).toEqual([PrAsc.RESERVATIONS_PREEMPTED]);
    expect(await attentions(a3)).toEqual([PrAsc.RESERVATIONS_PREEMPTED]);
  });

  it("with key_by nexus (the default) a new ISID is a new, unregistered I_T nexus", async () => {
    const { open } = world();
    const a1 = open(NAME_A, { isid: "400000000011" });
    expectGood(await register(a1, KA));
    expectGood(await reserve(a1, KA, PrType.EXCLUSIVE_ACCESS));
    a1.close();
    const a2 = open(NAME_A, { isid: "400000000022" });
    expectConflict(await exec(a2, Cdb.read10({ lba: 0, blocks: 1 })));
    expectConflict(await release(a2, KA, PrType.EXCLUSIVE_ACCESS));
    // The way out for such a host: register again and preempt the old registration.
    expectGood(await register(a2, KB));
    expectGood(
      await prOut(a2, PrOut.PREEMPT, { key: KB, saKey: KA }, { type: PrType.EXCLUSIVE_ACCESS }),
    );
    expectGood(await exec(a2, Cdb.read10({ lba: 0, blocks: 1 })));
  });
});

describe("APTPL and the reservation store (SPC-4 5.13.5)", () => {
  it("answers GOOD only once the state is saved, and commits nothing before", async () => {
    const store = new MemoryReservationStore();
    const { a, b, volume } = world({ store });
    let open!: () => void;
    store.gate = new Promise((resolve) => {
      open = resolve;
    });
    let settled = false;
    const pending = register(a, KA, { aptpl: true }).then((r) => {
      settled = true;
      return r;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(settled).toBe(false);
    expect((await readKeys(b)).keys).toEqual([]); // not committed yet
    open();
    expectGood(await pending);
    expect(store.saves).toHaveLength(1);
    expect(store.saved.get(volume.id)).toMatchObject({ aptpl: true, generation: 1 });
    // While APTPL is set every change is saved; APTPL=0 forgets the saved state.
    expectGood(await reserve(a, KA, PrType.WRITE_EXCLUSIVE));
    expect(store.saved.get(volume.id)?.reservation).toEqual({ type: 1, holder: 1 });
    expectGood(await register(b, KB));
    expect(store.saves.at(-1)).toEqual({ volumeId: volume.id, state: undefined });
    expectGood(await register(b, KC));
    expect(store.saves).toHaveLength(3); // nothing saved while APTPL is zero
  });

  it("a failed save is HARDWARE ERROR and changes nothing", async () => {
    const store = new MemoryReservationStore();
    const { a } = world({ store });
    store.failNext("save");
    const r = await register(a, KA, { aptpl: true });
    expectSense(r, SenseKey.HARDWARE_ERROR, Asc.INTERNAL_TARGET_FAILURE);
    expect(await readKeys(a)).toEqual({ generation: 0, additionalLength: 0, keys: [] });
  });

  it("refuses APTPL=1 without a store (PTPL_C=0)", async () => {
    const { a } = world({ store: null });
    const s = expectSense(
      await register(a, KA, { aptpl: true }),
      ILLEGAL,
      Asc.INVALID_FIELD_IN_PARAMETER_LIST,
    );
    expect(s.fieldPointer).toEqual({ inCdb: false, byte: 20, bit: 0 });
    expectGood(await register(a, KA));
  });

  it("a restarted target finds the registrations and the reservation; PRgeneration restarts at 0", async () => {
    const store = new MemoryReservationStore();
    const first = world({ store });
    expectGood(await register(first.a, KA, { aptpl: true }));
    expectGood(await register(first.b, KB));
    expectGood(await register(first.b, KB, { aptpl: true })); // APTPL=1 again: all is saved
    expectGood(await reserve(first.a, KA, PrType.EXCLUSIVE_ACCESS));

    // "Power on": a new target on the same store and volume id.
    const target = new ScsiTarget(TEST_INFO, { reservationStore: store });
    const view = () => new MutableView([lunEntry(0, first.volume)]);
    const a = target.openNexus(identity({ initiatorName: NAME_A, isid: "400000000001" }), view());
    const c = target.openNexus(identity({ initiatorName: NAME_C }), view());
    // Power on resets PRgeneration (SPC-4 6.15.2); APTPL kept the rest.
    expect(await readKeys(c)).toEqual({ generation: 0, additionalLength: 16, keys: [KA, KB] });
    expect(await readReservation(c)).toMatchObject({ key: KA, type: PrType.EXCLUSIVE_ACCESS });
    expect((await prIn(c, PrIn.REPORT_CAPABILITIES)).data![3]! & 1).toBe(1);
    expectConflict(await exec(c, Cdb.read10({ lba: 0, blocks: 1 })));
    expectGood(await exec(a, Cdb.write10({ lba: 0, blocks: 1 }), pattern(1, 0x88)));
  });

  it("commands wait for the saved state to load; INQUIRY does not", async () => {
    const store = new MemoryReservationStore();
    const volume = new MemoryVolume({ blocks: 8 });
    store.saved.set(volume.id, {
      generation: 7,
      aptpl: true,
      registrations: [{ id: 1, key: KA, initiator: NAME_A, isid: "400000000001", targetPort: 1 }],
      reservation: { type: PrType.EXCLUSIVE_ACCESS, holder: 1 },
    });
    let open!: () => void;
    store.loadGate = new Promise((resolve) => {
      open = resolve;
    });
    const target = new ScsiTarget(TEST_INFO, { reservationStore: store });
    const c = target.openNexus(
      identity({ initiatorName: NAME_C }),
      new MutableView([lunEntry(0, volume)]),
    );
    let read: ScsiResult | undefined;
    const pending = exec(c, Cdb.read10({ lba: 0, blocks: 1 })).then((r) => {
      read = r;
    });
    expectGood(await exec(c, Cdb.inquiry()));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(read).toBeUndefined();
    open();
    await pending;
    expectConflict(read!);
  });

  it("a state that cannot be loaded is HARDWARE ERROR until it can", async () => {
    const store = new MemoryReservationStore();
    const warnings: string[] = [];
    const target = new ScsiTarget(TEST_INFO, {
      reservationStore: store,
      logger: { warn: (_obj, msg) => warnings.push(msg) },
    });
    const volume = new MemoryVolume({ blocks: 8 });
    store.failNext("load", new Error("disk on fire"));
    const n = target.openNexus(
      identity({ initiatorName: NAME_A }),
      new MutableView([lunEntry(0, volume)]),
    );
    expectSense(
      await exec(n, Cdb.testUnitReady()),
      SenseKey.HARDWARE_ERROR,
      Asc.INTERNAL_TARGET_FAILURE,
    );
    expect(warnings.length).toBeGreaterThan(0);
    expectGood(await exec(n, Cdb.testUnitReady()));
  });

  it("serializes PERSISTENT RESERVE OUT commands", async () => {
    const store = new MemoryReservationStore();
    const { a, b } = world({ store });
    expectGood(await register(a, KA, { aptpl: true }));
    let open!: () => void;
    store.gate = new Promise((resolve) => {
      open = resolve;
    });
    // Both race for the unit; b's RESERVE must see a's, which is still being saved.
    const first = reserve(a, KA, PrType.EXCLUSIVE_ACCESS);
    const registered = register(b, KB);
    const second = reserve(b, KB, PrType.EXCLUSIVE_ACCESS);
    open();
    expectGood(await first);
    expectGood(await registered);
    expectConflict(await second);
  });
});
