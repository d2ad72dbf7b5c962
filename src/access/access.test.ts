import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AccessControl } from "./access.js";
import { Catalog } from "./catalog.js";
import { parseConfig, type SanmuxConfig } from "./config.js";

let dataDir: string;
beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "sanmux-access-"));
});
afterEach(async () => {
  await rm(dataDir, { recursive: true, force: true });
});

const BASE = `target: iqn.2026-11.io.sanmux:t
agents:
  - name: backup1
    initiators: [iqn.1994-05.com.example:backup1, iqn.1994-05.com.example:backup1-b]
    chap: { user: backup1, secret: "at-least-12-chars" }
  - name: backup2
    initiators: [eui.02004567A425678D]
volumes:
  - { name: vol1, size: 1MiB }
  - { name: vol2, size: 1MiB }
  - { name: vol3, size: 1MiB }
mappings:
  - { agent: backup1, lun: 1, volume: vol2 }
  - { agent: backup1, lun: 0, volume: vol1 }
  - { agent: backup2, lun: 0, volume: vol1, mode: ro }
`;

function config(text: string): SanmuxConfig {
  return parseConfig(text, "test.yaml");
}

async function create(text = BASE): Promise<AccessControl> {
  return AccessControl.create(config(text), await Catalog.open(dataDir));
}

describe("AccessControl", () => {
  it("finds the agent of an initiator, case-insensitively, exact otherwise", async () => {
    const access = await create();
    expect(access.agentForInitiator("iqn.1994-05.com.example:backup1")?.name).toBe("backup1");
    expect(access.agentForInitiator("IQN.1994-05.COM.EXAMPLE:BACKUP1-B")?.name).toBe("backup1");
    expect(access.agentForInitiator("eui.02004567a425678d")?.name).toBe("backup2");
    expect(access.agentForInitiator("iqn.1994-05.com.example:backup")).toBeUndefined();
    expect(access.agentForInitiator("iqn.1994-05.com.example:backup1x")).toBeUndefined();
    expect(access.agentForInitiator("")).toBeUndefined();
    expect(access.agentForInitiator("iqn.1994-05.com.example:backup1")?.chap).toEqual({
      user: "backup1",
      secret: "at-least-12-chars",
    });
    expect(access.allAgents().map((a) => a.name)).toEqual(["backup1", "backup2"]);
    expect(access.target).toBe("iqn.2026-11.io.sanmux:t");
  });

  it("lists each agent's bindings by LUN, with unique channels", async () => {
    const access = await create();
    expect(access.bindingsFor("backup1")).toEqual([
      { channel: 2, agent: "backup1", lun: 0, volume: "vol1", mode: "rw" },
      { channel: 1, agent: "backup1", lun: 1, volume: "vol2", mode: "rw" },
    ]);
    expect(access.bindingsFor("backup2")).toEqual([
      { channel: 3, agent: "backup2", lun: 0, volume: "vol1", mode: "ro" },
    ]);
    expect(access.bindingsFor("nobody")).toEqual([]);
    expect(access.binding(3)?.agent).toBe("backup2");
    expect(access.allBindings().map((b) => b.channel)).toEqual([1, 2, 3]);
  });

  it("keeps channels across restarts", async () => {
    const first = await create();
    const second = await create();
    expect(second.allBindings()).toEqual(first.allBindings());
  });

  it("keeps one counters object per channel", async () => {
    const access = await create();
    const counters = access.countersFor(1);
    expect(counters).toEqual({
      commands: 0,
      readBytes: 0,
      writtenBytes: 0,
      readOps: 0,
      writeOps: 0,
      errors: 0,
    });
    counters.readOps++;
    expect(access.countersFor(1).readOps).toBe(1);
    expect(access.countersFor(2)).not.toBe(counters);
  });

  it("applies a new config and reports what changed", async () => {
    const access = await create();
    const kept = access.countersFor(2);
    const removedCounters = access.countersFor(1);
    removedCounters.writeOps = 5;
    const next = `target: iqn.2026-11.io.sanmux:t
agents:
  - name: backup1
    initiators: [iqn.1994-05.com.example:backup1, IQN.1994-05.com.example:BACKUP1-B]
    chap: { user: backup1, secret: "at-least-12-chars" }
  - name: backup2
    initiators: [eui.02004567A425678D, iqn.1994-05.com.example:backup2]
  - name: backup3
    initiators: [iqn.1994-05.com.example:backup3]
volumes:
  - { name: vol1, size: 1MiB }
  - { name: vol2, size: 1MiB }
  - { name: vol3, size: 1MiB }
mappings:
  - { agent: backup1, lun: 0, volume: vol1 }
  - { agent: backup1, lun: 1, volume: vol3 }
  - { agent: backup2, lun: 0, volume: vol1, mode: rw }
  - { agent: backup3, lun: 7, volume: vol2, mode: ro }
`;
    const change = await access.applyConfig(config(next));
    expect(change).toEqual({
      targetChanged: false,
      agentsAdded: ["backup3"],
      agentsRemoved: [],
      agentsChanged: ["backup2"], // an initiator added; backup1 only changed case
      bindingsAdded: [
        { channel: 4, agent: "backup1", lun: 1, volume: "vol3", mode: "rw" },
        { channel: 5, agent: "backup3", lun: 7, volume: "vol2", mode: "ro" },
      ],
      bindingsRemoved: [{ channel: 1, agent: "backup1", lun: 1, volume: "vol2", mode: "rw" }],
      bindingsChanged: [{ channel: 3, agent: "backup2", lun: 0, volume: "vol1", mode: "rw" }],
    });
    expect(access.bindingsFor("backup1").map((b) => b.channel)).toEqual([2, 4]);
    expect(access.agentForInitiator("iqn.1994-05.com.example:backup3")?.name).toBe("backup3");
    expect(access.countersFor(2)).toBe(kept);
    expect(access.countersFor(1)).not.toBe(removedCounters);

    const back = await access.applyConfig(config(BASE.replace(":t\n", ":t2\n")));
    expect(back.targetChanged).toBe(true);
    expect(back.agentsRemoved).toEqual(["backup3"]);
    expect(back.agentsChanged).toEqual(["backup2"]);
    // vol2 at LUN 1 again: a new mapping, so a new channel (1 is never reused).
    expect(back.bindingsAdded).toEqual([
      { channel: 6, agent: "backup1", lun: 1, volume: "vol2", mode: "rw" },
    ]);
    expect(back.bindingsRemoved.map((b) => b.channel)).toEqual([4, 5]);
    expect(access.agentForInitiator("iqn.1994-05.com.example:backup3")).toBeUndefined();
    expect(access.bindingsFor("backup3")).toEqual([]);
  });

  it("reports a CHAP change", async () => {
    const access = await create();
    const change = await access.applyConfig(
      config(BASE.replace("at-least-12-chars", "a-new-secret-123")),
    );
    expect(change.agentsChanged).toEqual(["backup1"]);
    expect(change.bindingsAdded).toEqual([]);
    expect(change.bindingsRemoved).toEqual([]);
  });

  it("an unchanged config changes nothing", async () => {
    const access = await create();
    const change = await access.applyConfig(config(BASE));
    expect(change).toEqual({
      targetChanged: false,
      agentsAdded: [],
      agentsRemoved: [],
      agentsChanged: [],
      bindingsAdded: [],
      bindingsRemoved: [],
      bindingsChanged: [],
    });
  });
});
