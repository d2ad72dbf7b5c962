import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { arbiterPolicy } from "../arbiter/policy.js";
import {
  ConfigError,
  DEMO_CONFIG_YAML,
  defaultTargetName,
  formatSize,
  loadConfig,
  parseConfig,
  parseSize,
} from "./config.js";

const VALID = `target: iqn.2026-11.io.sanmux:demo
agents:
  - name: backup1
    initiators: [iqn.1994-05.com.example:backup1, IQN.1994-05.com.example:Backup1b]
    chap: { user: backup1, secret: "at-least-12-chars" }
  - name: backup2
    initiators:
      - eui.02004567A425678D
      - naa.52004567BA64678D
    chap:
      user: backup2
      secret: "another-secret-123"
      target_user: sanmux
      target_secret: "target-secret-456"
volumes:
  - name: vol1
    size: 10GiB
  - name: vol2
    size: 1048576
    block_size: 4096
    backend: file
mappings:
  - { agent: backup1, lun: 0, volume: vol1, mode: rw }
  - { agent: backup2, lun: 3, volume: vol1, mode: ro }
  - { agent: backup2, lun: 0, volume: vol2 }
`;

describe("parseConfig: a valid file", () => {
  it("returns the typed config with defaults applied", () => {
    const config = parseConfig(VALID, "sanmux.yaml");
    expect(config).toEqual({
      target: "iqn.2026-11.io.sanmux:demo",
      iscsi: {},
      agents: [
        {
          name: "backup1",
          initiators: ["iqn.1994-05.com.example:backup1", "IQN.1994-05.com.example:Backup1b"],
          chap: { user: "backup1", secret: "at-least-12-chars" },
          domain: "shared",
        },
        {
          name: "backup2",
          initiators: ["eui.02004567A425678D", "naa.52004567BA64678D"],
          chap: {
            user: "backup2",
            secret: "another-secret-123",
            targetUser: "sanmux",
            targetSecret: "target-secret-456",
          },
          domain: "shared",
        },
      ],
      volumes: [
        {
          name: "vol1",
          size: 10 * 2 ** 30,
          blockSize: 512,
          backend: "pool",
          domain: "shared",
          writeCache: true,
        },
        {
          name: "vol2",
          size: 1048576,
          blockSize: 4096,
          backend: "file",
          domain: "shared",
          writeCache: true,
        },
      ],
      mappings: [
        { agent: "backup1", lun: 0, volume: "vol1", mode: "rw" },
        { agent: "backup2", lun: 3, volume: "vol1", mode: "ro" },
        { agent: "backup2", lun: 0, volume: "vol2", mode: "rw" },
      ],
      pool: { devices: [] },
    });
  });

  it("derives the default target name from the host name", () => {
    const config = parseConfig("agents: []\n", "x.yaml", { hostName: "Backup_Host.Example.COM" });
    expect(config.target).toBe("iqn.2026-11.io.sanmux:backup-host.example.com");
    expect(defaultTargetName("My Host!!")).toBe("iqn.2026-11.io.sanmux:my-host");
    expect(defaultTargetName("__")).toBe("iqn.2026-11.io.sanmux:localhost");
    expect(defaultTargetName("h".repeat(300)).length).toBe(223);
    expect(defaultTargetName()).toMatch(/^iqn\.2026-11\.io\.sanmux:[a-z0-9.-]+$/);
  });

  it("accepts an empty file as an empty config", () => {
    const config = parseConfig("# nothing yet\n", "x.yaml", { hostName: "h" });
    expect(config).toEqual({
      target: "iqn.2026-11.io.sanmux:h",
      iscsi: {},
      agents: [],
      volumes: [],
      mappings: [],
      pool: { devices: [] },
    });
  });

  it("takes empty values of optional keys and lists as absent", () => {
    const config = parseConfig(
      "target:\nagents:\n  - name: a\n    initiators: [iqn.2000-01.com.x:a]\n    chap:\nvolumes:\nmappings:\n",
      "x.yaml",
      { hostName: "h" },
    );
    expect(config).toEqual({
      target: "iqn.2026-11.io.sanmux:h",
      iscsi: {},
      agents: [{ name: "a", initiators: ["iqn.2000-01.com.x:a"], domain: "shared" }],
      volumes: [],
      mappings: [],
      pool: { devices: [] },
    });
  });

  it("reads an agent's reservations options, key_by defaulting to nexus", () => {
    const config = parseConfig(
      `agents:
  - name: a
    initiators: [iqn.2000-01.com.x:a]
    reservations: { key_by: initiator }
  - name: b
    initiators: [iqn.2000-01.com.x:b]
    reservations: {}
  - name: c
    initiators: [iqn.2000-01.com.x:c]
    reservations:
`,
      "x.yaml",
      { hostName: "h" },
    );
    expect(config.agents).toEqual([
      {
        name: "a",
        initiators: ["iqn.2000-01.com.x:a"],
        reservations: { keyBy: "initiator" },
        domain: "shared",
      },
      {
        name: "b",
        initiators: ["iqn.2000-01.com.x:b"],
        reservations: { keyBy: "nexus" },
        domain: "shared",
      },
      { name: "c", initiators: ["iqn.2000-01.com.x:c"], domain: "shared" },
    ]);
  });

  it("reads the iscsi section, leaving unset keys to sanmux's defaults", () => {
    const config = parseConfig(
      "iscsi:\n  immediate_data: false\n  first_burst_length: 65536\n  queue_depth: 32\n",
      "x.yaml",
      { hostName: "h" },
    );
    expect(config.iscsi).toEqual({ immediateData: false, firstBurstLength: 65536, queueDepth: 32 });
    expect(parseConfig("agents: []\n", "x.yaml", { hostName: "h" }).iscsi).toEqual({});
  });

  it("refuses iscsi values out of range and unknown iscsi keys, with their lines", () => {
    expect(() =>
      parseConfig(
        "iscsi:\n  queue_depth: 0\n  max_burst_length: 100\n  immediate: yes\n",
        "x.yaml",
      ),
    ).toThrow(
      /x\.yaml:2: iscsi\.queue_depth[\s\S]*x\.yaml:3: iscsi\.max_burst_length[\s\S]*x\.yaml:4: iscsi/,
    );
  });

  it("parses the demo config", () => {
    const config = parseConfig(DEMO_CONFIG_YAML, "sanmux.yaml");
    expect(config.agents).toEqual([
      { name: "demo", initiators: ["iqn.2026-11.io.sanmux:demo-initiator"], domain: "shared" },
    ]);
    expect(config.volumes).toEqual([
      {
        name: "demo",
        size: 2 ** 30,
        blockSize: 512,
        backend: "pool",
        domain: "shared",
        writeCache: true,
      },
    ]);
    expect(config.mappings).toEqual([{ agent: "demo", lun: 0, volume: "demo", mode: "rw" }]);
  });
});

/** The one-line message of a config that must fail. */
function errorOf(text: string, fileName = "sanmux.yaml"): ConfigError {
  try {
    parseConfig(text, fileName, { hostName: "h" });
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

const AGENT = `agents:
  - name: a1
    initiators: [iqn.1994-05.com.example:a1]
`;
const VOLUME = `volumes:
  - name: v1
    size: 1MiB
`;

describe("parseConfig: every problem names file, line and path", () => {
  const cases: [string, string, string][] = [
    ["YAML syntax", "agents: [\nvolumes: []\n", "sanmux.yaml:2: YAML syntax: "],
    [
      "duplicate YAML key",
      "agents: []\nvolumes: []\nagents: []\n",
      'sanmux.yaml:3: duplicate key "agents"',
    ],
    [
      "two documents",
      "agents: []\n---\nvolumes: []\n",
      "sanmux.yaml:2: a config file holds one YAML document",
    ],
    ["root not a mapping", "- 1\n- 2\n", "sanmux.yaml:1: expected a mapping, got a list"],
    [
      "unknown top-level key",
      "agents: []\nvolume: []\n",
      'sanmux.yaml:2: volume: unknown key "volume" (did you mean "volumes"?)',
    ],
    [
      "unknown agent key",
      `${AGENT}    chapp: {}\n`,
      'sanmux.yaml:4: agents[0].chapp: unknown key "chapp" (did you mean "chap"?)',
    ],
    [
      "unknown chap key",
      `${AGENT}    chap:\n      user: u\n      secret: "123456789012"\n      password: x\n`,
      'sanmux.yaml:7: agents[0].chap.password: unknown key "password" (allowed: user, secret, target_user, target_secret)',
    ],
    [
      "bad reservations key_by",
      `${AGENT}    reservations: { key_by: isid }\n`,
      'sanmux.yaml:4: agents[0].reservations.key_by: must be "nexus" or "initiator", got "isid"',
    ],
    [
      "unknown reservations key",
      `${AGENT}    reservations:\n      keyby: initiator\n`,
      'sanmux.yaml:5: agents[0].reservations.keyby: unknown key "keyby" (did you mean "key_by"?)',
    ],
    [
      "reservations not a mapping",
      `${AGENT}    reservations: initiator\n`,
      'sanmux.yaml:4: agents[0].reservations: expected a mapping, got "initiator"',
    ],
    ["agents not a list", "agents: foo\n", 'sanmux.yaml:1: agents: expected a list, got "foo"'],
    [
      "missing agent name",
      "agents:\n  - initiators: [iqn.1994-05.com.example:a1]\n",
      "sanmux.yaml:2: agents[0].name: required",
    ],
    [
      "bad agent name",
      "agents:\n  - name: Backup_1\n    initiators: [iqn.1994-05.com.example:a1]\n",
      'sanmux.yaml:2: agents[0].name: "Backup_1" is not a valid name',
    ],
    [
      "name too long",
      `agents:\n  - name: ${"a".repeat(64)}\n    initiators: [iqn.1994-05.com.example:a1]\n`,
      "sanmux.yaml:2: agents[0].name: ",
    ],
    [
      "name with a dot first",
      "volumes:\n  - name: .v\n    size: 512\n",
      'sanmux.yaml:2: volumes[0].name: ".v" is not a valid name',
    ],
    [
      "empty initiators",
      "agents:\n  - name: a1\n    initiators: []\n",
      "sanmux.yaml:3: agents[0].initiators: must list at least 1 item(s)",
    ],
    [
      "initiator not iqn/eui/naa",
      "agents:\n  - name: a1\n    initiators:\n      - foo.bar\n",
      'sanmux.yaml:4: agents[0].initiators[0]: "foo.bar" is not a valid iSCSI name: must start with iqn., eui. or naa.',
    ],
    [
      "iqn bad month",
      "agents:\n  - name: a1\n    initiators:\n      - iqn.1994-13.com.example:a\n",
      'sanmux.yaml:4: agents[0].initiators[0]: "iqn.1994-13.com.example:a" is not a valid iSCSI name: month "13"',
    ],
    [
      "iqn bad domain",
      "agents:\n  - name: a1\n    initiators:\n      - iqn.1994-05.com..example\n",
      "sanmux.yaml:4: agents[0].initiators[0]: ",
    ],
    [
      "iqn underscore",
      "agents:\n  - name: a1\n    initiators:\n      - iqn.1994-05.com.example:a_b\n",
      'sanmux.yaml:4: agents[0].initiators[0]: "iqn.1994-05.com.example:a_b" is not a valid iSCSI name: "a_b" may hold only',
    ],
    [
      "eui wrong length",
      "agents:\n  - name: a1\n    initiators: [eui.0200]\n",
      'sanmux.yaml:3: agents[0].initiators[0]: "eui.0200" is not a valid iSCSI name: an eui name',
    ],
    [
      "naa wrong length",
      "agents:\n  - name: a1\n    initiators: [naa.0123456789abcdef0]\n",
      "sanmux.yaml:3: agents[0].initiators[0]: ",
    ],
    [
      "iqn too long",
      `agents:\n  - name: a1\n    initiators: [iqn.1994-05.com.example:${"x".repeat(200)}]\n`,
      "longer than 223 bytes",
    ],
    [
      "initiator listed twice by one agent",
      "agents:\n  - name: a1\n    initiators:\n      - iqn.1994-05.com.example:a\n      - IQN.1994-05.COM.EXAMPLE:A\n",
      'sanmux.yaml:5: agents[0].initiators[1]: initiator "IQN.1994-05.COM.EXAMPLE:A" is listed twice (line 4)',
    ],
    [
      "initiator listed by two agents",
      `${AGENT}  - name: a2\n    initiators:\n      - iqn.1994-05.com.example:A1\n`,
      'sanmux.yaml:6: agents[1].initiators[0]: initiator "iqn.1994-05.com.example:A1" is already listed by agent "a1" (line 3)',
    ],
    [
      "duplicate agent name",
      `${AGENT}  - name: a1\n    initiators: [iqn.1994-05.com.example:other]\n`,
      'sanmux.yaml:4: agents[1].name: duplicate agent name "a1" (line 2)',
    ],
    [
      "chap secret too short",
      `${AGENT}    chap: { user: u, secret: short }\n`,
      "sanmux.yaml:4: agents[0].chap.secret: must be 12 to 255 bytes long (it is 5)",
    ],
    [
      "chap secret too long",
      `${AGENT}    chap: { user: u, secret: ${"s".repeat(256)} }\n`,
      "sanmux.yaml:4: agents[0].chap.secret: must be 12 to 255 bytes long (it is 256)",
    ],
    [
      "chap user missing",
      `${AGENT}    chap:\n      secret: "123456789012"\n`,
      "sanmux.yaml:4: agents[0].chap.user: required",
    ],
    [
      "chap secret a number",
      `${AGENT}    chap: { user: u, secret: 123456789012345 }\n`,
      "sanmux.yaml:4: agents[0].chap.secret: expected text, got 123456789012345",
    ],
    [
      "mutual without target_secret",
      `${AGENT}    chap:\n      user: u\n      secret: "123456789012"\n      target_user: t\n`,
      "sanmux.yaml:7: agents[0].chap.target_user: mutual CHAP needs both target_user and target_secret (target_secret is missing)",
    ],
    [
      "mutual without target_user",
      `${AGENT}    chap:\n      user: u\n      secret: "123456789012"\n      target_secret: "abcdefghijkl"\n`,
      "sanmux.yaml:7: agents[0].chap.target_secret: mutual CHAP needs both target_user and target_secret (target_user is missing)",
    ],
    [
      "target_secret equal to secret",
      `${AGENT}    chap:\n      user: u\n      secret: "123456789012"\n      target_user: t\n      target_secret: "123456789012"\n`,
      "sanmux.yaml:8: agents[0].chap.target_secret: must differ from secret",
    ],
    [
      "target_secret equal to another agent's secret",
      `${AGENT}    chap: { user: u, secret: "123456789012" }\n  - name: a2\n    initiators: [iqn.1994-05.com.example:a2]\n    chap: { user: v, secret: "abcdefghijkl", target_user: t, target_secret: "123456789012" }\n`,
      'sanmux.yaml:7: agents[1].chap.target_secret: equals the CHAP secret of agent "a1"',
    ],
    [
      "target not an iSCSI name",
      "target: mytarget\n",
      'sanmux.yaml:1: target: "mytarget" is not a valid iSCSI name',
    ],
    ["volume size missing", "volumes:\n  - name: v1\n", "sanmux.yaml:2: volumes[0].size: required"],
    [
      "volume size unit",
      "volumes:\n  - name: v1\n    size: 10 GB2\n",
      'sanmux.yaml:3: volumes[0].size: "10 GB2" has an unknown unit "GB2"',
    ],
    [
      "volume size zero",
      "volumes:\n  - name: v1\n    size: 0\n",
      "sanmux.yaml:3: volumes[0].size: 0 is not a positive whole number of bytes",
    ],
    [
      "volume size negative",
      "volumes:\n  - name: v1\n    size: -1MiB\n",
      'sanmux.yaml:3: volumes[0].size: "-1MiB" is not a size',
    ],
    [
      "volume size fraction of a byte",
      "volumes:\n  - name: v1\n    size: 1.5\n",
      "sanmux.yaml:3: volumes[0].size: 1.5 is not a positive whole number of bytes",
    ],
    [
      "volume size a list",
      "volumes:\n  - name: v1\n    size: [1]\n",
      "sanmux.yaml:3: volumes[0].size: expected a size like 10GiB, got a list",
    ],
    [
      "size not a multiple of the block size",
      "volumes:\n  - name: v1\n    size: 1000\n",
      "sanmux.yaml:3: volumes[0].size: 1000 bytes is not a multiple of the block size 512",
    ],
    [
      "size not a multiple of 4096",
      "volumes:\n  - name: v1\n    block_size: 4096\n    size: 1.5KiB\n",
      "sanmux.yaml:4: volumes[0].size: 1536 bytes is not a multiple of the block size 4096",
    ],
    [
      "bad block size",
      "volumes:\n  - name: v1\n    size: 1MiB\n    block_size: 1024\n",
      "sanmux.yaml:4: volumes[0].block_size: must be 512 or 4096, got 1024",
    ],
    [
      "unknown backend",
      "volumes:\n  - name: v1\n    size: 1MiB\n    backend: lvm\n",
      'sanmux.yaml:4: volumes[0].backend: must be "pool" or "file", got "lvm"',
    ],
    [
      "duplicate volume",
      `${VOLUME}  - name: v1\n    size: 2MiB\n`,
      'sanmux.yaml:4: volumes[1].name: duplicate volume name "v1" (line 2)',
    ],
    [
      "mapping to an unknown volume",
      `${AGENT}${VOLUME}mappings:\n  - { agent: a1, lun: 0, volume: v1 }\n  - { agent: a1, lun: 1, volume: vol9 }\n`,
      'sanmux.yaml:9: mappings[1].volume: unknown volume "vol9"',
    ],
    [
      "mapping to an unknown agent",
      `${AGENT}${VOLUME}mappings:\n  - agent: a9\n    lun: 0\n    volume: v1\n`,
      'sanmux.yaml:8: mappings[0].agent: unknown agent "a9"',
    ],
    [
      "duplicate LUN for one agent",
      `${AGENT}${VOLUME}  - name: v2\n    size: 1MiB\nmappings:\n  - { agent: a1, lun: 0, volume: v1 }\n  - { agent: a1, lun: 0, volume: v2 }\n`,
      'sanmux.yaml:11: mappings[1].lun: agent "a1" already has LUN 0 (line 10)',
    ],
    [
      "same volume twice for one agent",
      `${AGENT}${VOLUME}mappings:\n  - { agent: a1, lun: 0, volume: v1 }\n  - { agent: a1, lun: 1, volume: v1 }\n`,
      'sanmux.yaml:9: mappings[1].volume: volume "v1" is already mapped to agent "a1" at LUN 0 (line 8)',
    ],
    [
      "LUN too large",
      `${AGENT}${VOLUME}mappings:\n  - { agent: a1, lun: 16384, volume: v1 }\n`,
      "sanmux.yaml:8: mappings[0].lun: must be at most 16383, got 16384",
    ],
    [
      "LUN negative",
      `${AGENT}${VOLUME}mappings:\n  - { agent: a1, lun: -1, volume: v1 }\n`,
      "sanmux.yaml:8: mappings[0].lun: must be at least 0, got -1",
    ],
    [
      "LUN not whole",
      `${AGENT}${VOLUME}mappings:\n  - { agent: a1, lun: 1.5, volume: v1 }\n`,
      "sanmux.yaml:8: mappings[0].lun: expected a whole number, got 1.5",
    ],
    [
      "LUN as text",
      `${AGENT}${VOLUME}mappings:\n  - { agent: a1, lun: "0", volume: v1 }\n`,
      'sanmux.yaml:8: mappings[0].lun: expected a number, got "0"',
    ],
    [
      "bad mode",
      `${AGENT}${VOLUME}mappings:\n  - { agent: a1, lun: 0, volume: v1, mode: wo }\n`,
      'sanmux.yaml:8: mappings[0].mode: must be "rw" or "ro", got "wo"',
    ],
    [
      "missing mapping volume",
      `${AGENT}${VOLUME}mappings:\n  - agent: a1\n    lun: 0\n`,
      "sanmux.yaml:8: mappings[0].volume: required",
    ],
  ];

  it.each(cases)("%s", (_name, text, expected) => {
    const error = errorOf(text);
    expect(error.message.split("\n")[0]).toContain(expected);
    expect(error.fileName).toBe("sanmux.yaml");
    const line = /^sanmux\.yaml:(\d+):/.exec(expected)?.[1];
    if (line !== undefined) expect(error.line).toBe(Number(line));
  });

  it("reports every problem, sorted by line, one per message line", () => {
    const error = errorOf(
      "agents:\n  - name: A\n    initiators: [bad]\nvolumes:\n  - name: v\n    size: 7\nfoo: 1\n",
    );
    expect(error.message.split("\n")).toEqual([
      "sanmux.yaml:2: agents[0].name: \"A\" is not a valid name: use 1 to 63 characters from a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
      'sanmux.yaml:3: agents[0].initiators[0]: "bad" is not a valid iSCSI name: must start with iqn., eui. or naa. (RFC 7143 4.2.7)',
      'sanmux.yaml:7: foo: unknown key "foo" (allowed: target, iscsi, agents, volumes, mappings, pool)',
    ]);
    expect(error.issues.map((i) => i.line)).toEqual([2, 3, 7]);
  });

  it("cross-reference problems are all reported too", () => {
    const error = errorOf(
      `${VOLUME}  - name: v1\n    size: 1000\nmappings:\n  - { agent: x, lun: 0, volume: y }\n`,
    );
    expect(error.message.split("\n")).toEqual([
      'sanmux.yaml:4: volumes[1].name: duplicate volume name "v1" (line 2)',
      "sanmux.yaml:5: volumes[1].size: 1000 bytes is not a multiple of the block size 512",
      'sanmux.yaml:7: mappings[0].agent: unknown agent "x"',
      'sanmux.yaml:7: mappings[0].volume: unknown volume "y"',
    ]);
  });
});

describe("parseConfig: snapshot mappings", () => {
  const base = `agents:
  - { name: a, initiators: [iqn.2000-01.com.x:a] }
volumes:
  - { name: v, size: 1MiB }
  - { name: f, size: 1MiB, backend: file }
mappings:
`;
  it("maps a snapshot read-only under the key volume@snapshot", () => {
    const config = parseConfig(
      `${base}  - { agent: a, lun: 0, volume: v }\n  - { agent: a, lun: 1, volume: v, snapshot: nightly }\n`,
      "x.yaml",
      { hostName: "h" },
    );
    expect(config.mappings[1]).toEqual({
      agent: "a",
      lun: 1,
      volume: "v@nightly",
      mode: "ro",
      snapshot: { volume: "v", name: "nightly" },
    });
    expect(config.mappings[0]?.mode).toBe("rw");
  });

  it("refuses a writable snapshot mapping and snapshots of file volumes", () => {
    expect(
      errorOf(`${base}  - { agent: a, lun: 1, volume: v, snapshot: s1, mode: rw }\n`).message,
    ).toMatch(/sanmux\.yaml:7: mappings\[0\]\.mode: a snapshot is read-only/);
    expect(errorOf(`${base}  - { agent: a, lun: 1, volume: f, snapshot: s1 }\n`).message).toMatch(
      /only pool volumes have snapshots/,
    );
  });
});

describe("parseConfig: dedup domains", () => {
  const agents = `agents:
  - { name: a, initiators: [iqn.2000-01.com.x:a] }
  - { name: b, initiators: [iqn.2000-01.com.x:b], domain: secret }
`;
  it("gives a volume the domain of the agents writing it, else shared", () => {
    const config = parseConfig(
      `${agents}volumes:
  - { name: va, size: 1MiB }
  - { name: vb, size: 1MiB }
  - { name: vc, size: 1MiB }
  - { name: vd, size: 1MiB, domain: secret }
mappings:
  - { agent: a, lun: 0, volume: va }
  - { agent: b, lun: 0, volume: vb }
  - { agent: a, lun: 1, volume: vb, mode: ro }
  - { agent: b, lun: 1, volume: vd }
`,
      "x.yaml",
      { hostName: "h" },
    );
    expect(config.agents.map((a) => a.domain)).toEqual(["shared", "secret"]);
    expect(config.volumes.map((v) => v.domain)).toEqual(["shared", "secret", "shared", "secret"]);
  });

  it("refuses a read-write mapping across domains, naming the line", () => {
    const error = errorOf(
      `${agents}volumes:
  - { name: v, size: 1MiB, domain: secret }
mappings:
  - { agent: a, lun: 0, volume: v }
`,
    );
    expect(error.message).toBe(
      'sanmux.yaml:7: mappings[0].agent: agent "a" (domain "shared") cannot write to volume "v" of domain "secret"; map it read-only',
    );
  });

  it("refuses a volume written by agents of two domains unless it names its domain", () => {
    const error = errorOf(
      `${agents}volumes:
  - { name: v, size: 1MiB }
mappings:
  - { agent: a, lun: 0, volume: v }
  - { agent: b, lun: 0, volume: v }
`,
    );
    expect(error.message).toMatch(/mapped read-write to agents of different domains/);
  });

  it("lets file volumes be written by any domain", () => {
    const config = parseConfig(
      `${agents}volumes:
  - { name: v, size: 1MiB, backend: file }
mappings:
  - { agent: a, lun: 0, volume: v }
  - { agent: b, lun: 0, volume: v }
`,
      "x.yaml",
      { hostName: "h" },
    );
    expect(config.volumes[0]?.backend).toBe("file");
  });
});

describe("parseSize", () => {
  const table: [string, number][] = [
    ["0", 0],
    ["512", 512],
    ["512B", 512],
    ["1KiB", 1024],
    ["1 KiB", 1024],
    ["4MiB", 4 * 2 ** 20],
    ["10GiB", 10 * 2 ** 30],
    ["10gib", 10 * 2 ** 30],
    ["2TiB", 2 * 2 ** 40],
    ["1KB", 1000],
    ["5MB", 5_000_000],
    ["10GB", 10_000_000_000],
    ["3TB", 3_000_000_000_000],
    ["1.5GiB", 1.5 * 2 ** 30],
    ["0.5KiB", 512],
    ["2.0", 2],
    [" 7 B ", 7],
    ["8191TiB", 8191 * 2 ** 40],
  ];
  it.each(table)("%s = %d bytes", (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  const bad: [string, RegExp][] = [
    ["", /is not a size/],
    ["GiB", /is not a size/],
    ["-1", /is not a size/],
    ["1e9", /unknown unit "e9"/],
    ["10 GB2", /unknown unit/],
    ["1.5", /not a whole number of bytes/],
    ["0.1KiB", /not a whole number of bytes/],
    ["10 PiB", /unknown unit "PiB"/],
    ["9000TiB", /too large/],
    ["1,5GiB", /is not a size/],
  ];
  it.each(bad)("refuses %j", (text, message) => {
    expect(() => parseSize(text)).toThrow(message);
  });

  it("formats sizes back", () => {
    expect(formatSize(2 ** 30)).toBe("1 GiB");
    expect(formatSize(1536)).toBe("1536 B");
    expect(formatSize(3 * 2 ** 20)).toBe("3 MiB");
  });
});

describe("loadConfig", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it("reads a file and names it in errors", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sanmux-config-"));
    dirs.push(dir);
    const good = join(dir, "good.yaml");
    await writeFile(good, VALID);
    expect((await loadConfig(good)).agents).toHaveLength(2);

    const bad = join(dir, "bad.yaml");
    await writeFile(bad, `${AGENT}${VOLUME}mappings:\n  - { agent: a1, lun: 0, volume: vol9 }\n`);
    await expect(loadConfig(bad)).rejects.toThrow(
      `${bad}:8: mappings[0].volume: unknown volume "vol9"`,
    );
    await expect(loadConfig(join(dir, "missing.yaml"))).rejects.toThrow(
      `${join(dir, "missing.yaml")}: no such file`,
    );
  });
});

describe("parseConfig: arbitration keys", () => {
  const agentWith = (extra: string) =>
    `agents:\n  - name: a1\n    initiators: [iqn.1994-05.com.example:a1]\n${extra}`;

  it("reads weights, capacity rules, speed limits and the pool's policy", () => {
    const config = parseConfig(
      `agents:
  - name: backup1
    initiators: [iqn.1994-05.com.example:backup1]
    weight: 3
    capacity: { limit: 2TiB, reserved: 500GiB, soft_threshold: 80% }
    limits: { read_iops: 2000, write_iops: 2000, read_bps: 20MB, write_bps: 20MiB, iops: 5000, bps: 50000000, burst: 1s }
  - name: backup2
    initiators: [iqn.1994-05.com.example:backup2]
    weight: 0.5
    capacity: { reserved: 0 }
    limits: { write_bps: 100MB/s, burst: 250ms }
volumes:
  - { name: vol1, size: 1TiB, limits: { write_bps: 100MB } }
  - { name: vol2, size: 1GiB }
pool: { soft_threshold: 85%, balance: auto }
`,
      "x.yaml",
      { hostName: "h" },
    );
    expect(config.agents[0]).toEqual({
      name: "backup1",
      initiators: ["iqn.1994-05.com.example:backup1"],
      domain: "shared",
      weight: 3,
      capacity: { limit: 2 * 2 ** 40, reserved: 500 * 2 ** 30, softThreshold: 0.8 },
      limits: {
        readIops: 2000,
        writeIops: 2000,
        iops: 5000,
        readBps: 20_000_000,
        writeBps: 20 * 2 ** 20,
        bps: 50_000_000,
        burst: 1,
      },
    });
    expect(config.agents[1]).toMatchObject({
      weight: 0.5,
      capacity: { reserved: 0 },
      limits: { writeBps: 100_000_000, burst: 0.25 },
    });
    expect(config.volumes[0]?.limits).toEqual({ writeBps: 100_000_000 });
    expect(config.volumes[1]).not.toHaveProperty("limits");
    expect(config.pool).toEqual({ devices: [], softThreshold: 0.85, balance: "auto" });
  });

  it("reads an agent's queue depth and the arbiter's budget", () => {
    const config = parseConfig(
      `${agentWith("    queue_depth: 16\n")}pool: { concurrency: 32 }\n`,
      "x.yaml",
      { hostName: "h" },
    );
    expect(config.agents[0]?.queueDepth).toBe(16);
    expect(config.pool.concurrency).toBe(32);
  });

  it("reads the background GC interval in s, m or h, and off", () => {
    const gc = (value: string) =>
      parseConfig(`${agentWith("")}pool: { gc_interval: ${value} }\n`, "x.yaml", {
        hostName: "h",
      }).pool.gcInterval;
    expect(gc("10m")).toBe(600);
    expect(gc("30s")).toBe(30);
    expect(gc("1h")).toBe(3600);
    expect(gc("45")).toBe(45);
    expect(gc("off")).toBe(0);
    expect(gc("0")).toBe(0);
    expect(() => gc("soon")).toThrow(
      /pool.gc_interval: expected an interval like 10m, 30s or 1h \(1s to 7 days\), or off, got "soon"/,
    );
  });

  it("reads the grain cache size, 0 included", () => {
    const cache = (value: string) =>
      parseConfig(`${agentWith("")}pool: { cache_size: ${value} }\n`, "x.yaml", {
        hostName: "h",
      }).pool.cacheSize;
    expect(cache("256MiB")).toBe(256 * 1024 * 1024);
    expect(cache("0")).toBe(0);
    expect(cache("off")).toBe(0);
    expect(() => cache("lots")).toThrow(/pool.cache_size/);
  });

  it("leaves every key absent when unset, so older files mean what they meant", () => {
    const config = parseConfig(`${agentWith("    limits:\n    capacity:\n")}`, "x.yaml", {
      hostName: "h",
    });
    expect(config.agents[0]).toEqual({
      name: "a1",
      initiators: ["iqn.1994-05.com.example:a1"],
      domain: "shared",
    });
    expect(config.pool).toEqual({ devices: [] });
  });

  const cases: [string, string, string][] = [
    [
      "weight zero",
      agentWith("    weight: 0\n"),
      "sanmux.yaml:4: agents[0].weight: expected a number more than 0 (at most 1000000), got 0",
    ],
    [
      "weight as text",
      agentWith("    weight: high\n"),
      'sanmux.yaml:4: agents[0].weight: expected a number more than 0 (at most 1000000), got "high"',
    ],
    [
      "threshold without %",
      agentWith("    capacity: { limit: 1TiB, soft_threshold: 0.8 }\n"),
      "sanmux.yaml:4: agents[0].capacity.soft_threshold: expected a percentage like 80% (more than 0, at most 100%), got 0.8",
    ],
    [
      "threshold over 100%",
      agentWith("    capacity:\n      soft_threshold: 120%\n"),
      'sanmux.yaml:5: agents[0].capacity.soft_threshold: expected a percentage like 80% (more than 0, at most 100%), got "120%"',
    ],
    [
      "limit of zero",
      agentWith("    capacity:\n      limit: 0\n"),
      "sanmux.yaml:5: agents[0].capacity.limit: 0 is not a positive whole number of bytes",
    ],
    [
      "reservation over the limit",
      agentWith("    capacity:\n      limit: 1TiB\n      reserved: 2TiB\n"),
      "sanmux.yaml:6: agents[0].capacity.reserved: 2 TiB is more than the agent's limit of 1 TiB",
    ],
    [
      "queue depth zero",
      agentWith("    queue_depth: 0\n"),
      "sanmux.yaml:4: agents[0].queue_depth: must be at least 1, got 0",
    ],
    [
      "budget as text",
      "pool:\n  concurrency: lots\n",
      'sanmux.yaml:2: pool.concurrency: expected a number, got "lots"',
    ],
    [
      "unknown capacity key",
      agentWith("    capacity:\n      quota: 1TiB\n"),
      'sanmux.yaml:5: agents[0].capacity.quota: unknown key "quota" (allowed: limit, reserved, soft_threshold)',
    ],
    [
      "misspelt limit key",
      agentWith("    limits:\n      read_bw: 20MB\n"),
      'sanmux.yaml:5: agents[0].limits.read_bw: unknown key "read_bw" (did you mean "read_bps"?)',
    ],
    [
      "rate with a bad unit",
      agentWith("    limits:\n      read_bps: 20 Mbit\n"),
      'sanmux.yaml:5: agents[0].limits.read_bps: "20 Mbit" has an unknown unit "Mbit": expected a number with an optional unit B, KiB, MiB, GiB, TiB, KB, MB, GB or TB',
    ],
    [
      "rate of zero",
      agentWith("    limits:\n      write_bps: 0\n"),
      "sanmux.yaml:5: agents[0].limits.write_bps: 0 is not a positive number of bytes per second",
    ],
    [
      "iops negative",
      agentWith("    limits:\n      read_iops: -5\n"),
      "sanmux.yaml:5: agents[0].limits.read_iops: expected a positive number of commands per second, got -5",
    ],
    [
      "iops as text",
      agentWith('    limits:\n      iops: "fast"\n'),
      'sanmux.yaml:5: agents[0].limits.iops: expected a positive number of commands per second, got "fast"',
    ],
    [
      "burst in minutes",
      agentWith("    limits:\n      burst: 1m\n"),
      'sanmux.yaml:5: agents[0].limits.burst: expected a duration like 1s or 500ms (more than 0, at most 3600s), got "1m"',
    ],
    [
      "volume limit rate a list",
      "volumes:\n  - name: v1\n    size: 1MiB\n    limits: { bps: [1] }\n",
      "sanmux.yaml:4: volumes[0].limits.bps: expected a rate like 20MB (bytes per second), got a list",
    ],
    [
      "unknown volume limit key",
      "volumes:\n  - name: v1\n    size: 1MiB\n    limits: { weight: 2 }\n",
      'sanmux.yaml:4: volumes[0].limits.weight: unknown key "weight" (allowed: read_iops, write_iops, iops, read_bps, write_bps, bps, burst)',
    ],
    [
      "pool balance on",
      "pool: { balance: on }\n",
      'sanmux.yaml:1: pool.balance: must be "auto" or "off", got "on"',
    ],
    [
      "pool threshold a number",
      "pool:\n  soft_threshold: 85\n",
      "sanmux.yaml:2: pool.soft_threshold: expected a percentage like 80% (more than 0, at most 100%), got 85",
    ],
    [
      "unknown pool key",
      "pool:\n  balanse: auto\n",
      'sanmux.yaml:2: pool.balanse: unknown key "balanse" (did you mean "balance"?)',
    ],
  ];

  it.each(cases)("%s", (_name, text, expected) => {
    const error = errorOf(text);
    expect(error.message.split("\n")[0]).toBe(expected);
    const line = /^sanmux\.yaml:(\d+):/.exec(expected)?.[1];
    expect(error.line).toBe(Number(line));
  });
});

describe("parseConfig → arbiterPolicy", () => {
  it("hands the validated config to the arbiter as it is, with defaults resolved", () => {
    const config = parseConfig(
      `agents:
  - name: a
    initiators: [iqn.1994-05.com.example:a]
    weight: 2
    limits: { burst: 2s }
  - name: b
    initiators: [iqn.1994-05.com.example:b]
    capacity: { limit: 1TiB }
volumes:
  - { name: v, size: 1GiB, limits: { iops: 100 } }
`,
      "x.yaml",
      { hostName: "h" },
    );
    expect(arbiterPolicy(config)).toEqual({
      agents: [
        { name: "a", weight: 2 }, // a burst alone limits nothing
        { name: "b", weight: 1, capacity: { limit: 2 ** 40 } },
      ],
      volumes: [{ name: "v", limits: { iops: 100 } }],
      poolSoftThreshold: 0.8,
      balance: "off",
    });
  });
});
