/**
 * End-to-end: malformed PDUs from a misbehaving client get a Reject or a closed connection, and
 * the server keeps serving every other session (a real libiscsi session stays usable throughout).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Opcode, RejectReason } from "../../src/iscsi/constants.js";
import { newBhs, opcodeOf } from "../../src/iscsi/pdu.js";
import { decodeNopIn, decodeReject, encodeNopOut } from "../../src/iscsi/pdu-initiator.js";
import { RawInitiator } from "../helpers/raw-initiator.js";
import { type RunningSanmux, startSanmux, tool } from "../helpers/sanmux.js";

const TARGET = "iqn.2026-11.io.sanmux:malformed";
const GOOD = "iqn.2026-11.test:good";
const BAD = "iqn.2026-11.test:bad";

let server: RunningSanmux;
let bystander: RawInitiator;

beforeAll(async () => {
  server = await startSanmux({
    config: `
target: ${TARGET}
agents:
  - { name: good, initiators: [${GOOD}] }
  - { name: bad, initiators: [${BAD}] }
volumes:
  - { name: v, size: 8MiB }
mappings:
  - { agent: good, lun: 0, volume: v }
  - { agent: bad, lun: 0, volume: v }
`,
  });
  bystander = await RawInitiator.connect(server.port);
  await bystander.login(GOOD, TARGET, true);
});

afterAll(async () => {
  bystander?.destroy();
  expect(await server?.stop()).toBe(0);
  await server?.cleanup();
});

/** The bystander session and a fresh libiscsi session both still work. */
async function othersStillServed(): Promise<void> {
  const itt = 0x500 + bystander.cmdSN;
  bystander.send(
    encodeNopOut({ immediate: true, itt, cmdSN: bystander.cmdSN, expStatSN: bystander.expStatSN }),
  );
  const nop = decodeNopIn(await bystander.next());
  expect(nop.itt).toBe(itt);
  bystander.expStatSN = nop.statSN + 1;
  const inq = await tool("iscsi-inq", ["-i", GOOD, `iscsi://127.0.0.1:${server.port}/${TARGET}/0`]);
  expect(inq.code, inq.stderr).toBe(0);
}

describe("malformed PDUs", () => {
  it("rejects an unknown opcode with reason 'command not supported' and keeps the session", async () => {
    const c = await RawInitiator.connect(server.port);
    await c.login(BAD, TARGET, false);
    const bhs = newBhs(0x1c, 0x80, 0); // opcode 0x1c is not defined by RFC 7143
    bhs.writeUInt32BE(0x77, 16);
    c.send({ bhs, data: Buffer.alloc(0) });
    const pdu = await c.next();
    expect(opcodeOf(pdu.bhs)).toBe(Opcode.Reject);
    const reject = decodeReject(pdu);
    expect(reject.reason).toBe(RejectReason.CommandNotSupported);
    expect(reject.data.subarray(0, 48)).toEqual(bhs);
    // The session is still usable.
    c.send(encodeNopOut({ immediate: true, itt: 9, cmdSN: c.cmdSN, expStatSN: c.expStatSN }));
    expect(decodeNopIn(await c.next()).itt).toBe(9);
    c.destroy();
    await othersStillServed();
  });

  it("rejects a PDU with a wrong data digest and keeps the session", async () => {
    const c = await RawInitiator.connect(server.port);
    await c.login(BAD, TARGET, true);
    const bytes = c.bytesOf(
      encodeNopOut({
        immediate: true,
        itt: 5,
        cmdSN: c.cmdSN,
        expStatSN: c.expStatSN,
        data: Buffer.from("ping"),
      }),
    );
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0xff; // corrupt the data digest
    c.sendRaw(bytes);
    const reject = decodeReject(await c.next());
    expect(reject.reason).toBe(RejectReason.DataDigestError);
    c.send(
      encodeNopOut({
        immediate: true,
        itt: 6,
        cmdSN: c.cmdSN,
        expStatSN: c.expStatSN,
        data: Buffer.from("ok"),
      }),
    );
    const nop = decodeNopIn(await c.next());
    expect(nop.itt).toBe(6);
    expect(nop.data.toString()).toBe("ok");
    c.destroy();
    await othersStillServed();
  });

  it("closes the connection on a wrong header digest", async () => {
    const c = await RawInitiator.connect(server.port);
    await c.login(BAD, TARGET, true);
    const bytes = c.bytesOf(
      encodeNopOut({ immediate: true, itt: 7, cmdSN: c.cmdSN, expStatSN: c.expStatSN }),
    );
    bytes[49] = (bytes[49] ?? 0) ^ 0x01; // inside the header digest
    c.sendRaw(bytes);
    expect(await c.closedWithin(5000)).toBe(true);
    await othersStillServed();
  });

  it("rejects an oversize data segment and closes the connection", async () => {
    const c = await RawInitiator.connect(server.port);
    await c.login(BAD, TARGET, false);
    // 1 MiB of data in one NOP-Out: far beyond the MaxRecvDataSegmentLength we declared.
    c.send(
      encodeNopOut({
        immediate: true,
        itt: 8,
        cmdSN: c.cmdSN,
        expStatSN: c.expStatSN,
        data: Buffer.alloc(1 << 20),
      }),
    );
    const first = await c.next().catch(() => undefined);
    if (first) expect(decodeReject(first).reason).toBe(RejectReason.ProtocolError);
    expect(await c.closedWithin(5000)).toBe(true);
    // The log line may arrive a moment after the close: wait for it.
    const deadline = Date.now() + 5000;
    const logged = () =>
      server.logs.some(
        (l) => typeof l.msg === "string" && /larger than negotiated|oversize/.test(l.msg),
      );
    while (!logged() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(logged()).toBe(true);
    await othersStillServed();
  });

  it("closes the connection when a PDU other than Login arrives before login", async () => {
    const c = await RawInitiator.connect(server.port);
    c.send(encodeNopOut({ immediate: true, itt: 1, cmdSN: 1, expStatSN: 0 }));
    expect(await c.closedWithin(5000)).toBe(true);
    await othersStillServed();
  });
});
