import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PrType } from "../scsi/pr/constants.js";
import type { PrState } from "../scsi/pr/state.js";
import { FileReservationStore } from "./pr-store.js";

const VOLUME = "3f1c2a9e-8b7d-4c55-9a10-6d2e4f8b1c07";
const STATE: PrState = {
  generation: 4,
  aptpl: true,
  registrations: [
    {
      id: 1,
      key: 0xabcdn,
      initiator: "iqn.2025-01.com.example:a",
      isid: "400000000001",
      targetPort: 1,
    },
  ],
  reservation: { type: PrType.EXCLUSIVE_ACCESS, holder: 1 },
};

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sanmux-pr-store-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("FileReservationStore", () => {
  it("saves one JSON file per volume under reservations/ and loads it back", async () => {
    const store = new FileReservationStore(dir);
    expect(await store.load(VOLUME)).toBeUndefined();
    await store.save(VOLUME, STATE);
    const file = join(dir, "reservations", `${VOLUME}.json`);
    const json = JSON.parse(await readFile(file, "utf8"));
    expect(json).toMatchObject({ version: 1, generation: 4, aptpl: true });
    // A new store (a restart) reads the same state.
    expect(await new FileReservationStore(dir).load(VOLUME)).toEqual(STATE);
    // No temporary file is left behind.
    expect(await readdir(join(dir, "reservations"))).toEqual([`${VOLUME}.json`]);
  });

  it("forgets a volume (APTPL back to zero), which is no error when nothing was saved", async () => {
    const store = new FileReservationStore(dir);
    await store.save(VOLUME, STATE);
    await store.save(VOLUME, undefined);
    expect(await store.load(VOLUME)).toBeUndefined();
    await store.save("another-volume", undefined);
  });

  it("refuses a corrupt file instead of reading it as no reservations", async () => {
    const store = new FileReservationStore(dir);
    await store.save(VOLUME, STATE);
    const file = join(dir, "reservations", `${VOLUME}.json`);
    await writeFile(file, "{ not json");
    await expect(store.load(VOLUME)).rejects.toThrow("not valid JSON");
    await writeFile(file, JSON.stringify({ version: 1, generation: 1, aptpl: true }));
    await expect(store.load(VOLUME)).rejects.toThrow(`${VOLUME}.json: registrations`);
  });

  it("refuses volume ids that are not file names", async () => {
    const store = new FileReservationStore(dir);
    for (const id of ["../x", ".hidden", "", "a/b"]) {
      await expect(store.load(id)).rejects.toThrow("not a volume id");
    }
  });
});
