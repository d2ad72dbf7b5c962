/**
 * A deliberately small iSCSI initiator over a real TCP socket, for tests that must send what a
 * well-behaved initiator never would (bad opcodes, wrong digests, oversize segments). It logs in
 * without CHAP and then exchanges raw PDUs.
 */
import net from "node:net";
import { Opcode } from "../../src/iscsi/constants.js";
import { type DigestSettings, PduReader, serializePdu } from "../../src/iscsi/framing.js";
import { encodeTextKeys, parseTextKeys } from "../../src/iscsi/login/text.js";
import { type OutPdu, opcodeOf, type RawPdu } from "../../src/iscsi/pdu.js";
import { decodeLoginResponse, encodeLoginRequest } from "../../src/iscsi/pdu-initiator.js";

export class RawInitiator {
  private readonly socket: net.Socket;
  private readonly reader: PduReader;
  private readonly inbox: RawPdu[] = [];
  private waiter: (() => void) | undefined;
  closed = false;
  digests: DigestSettings = { header: false, data: false };
  cmdSN = 1;
  expStatSN = 0;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.reader = new PduReader({
      settings: { headerDigest: false, dataDigest: false, maxDataSegmentLength: 16 * 1024 * 1024 },
      onPdu: (pdu) => {
        this.inbox.push(pdu);
        this.waiter?.();
      },
      onError: () => {
        this.closed = true;
        this.waiter?.();
      },
    });
    socket.on("data", (chunk: Buffer) => this.reader.push(chunk));
    socket.on("close", () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on("error", () => {});
  }

  static connect(port: number, host = "127.0.0.1"): Promise<RawInitiator> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, host, () => resolve(new RawInitiator(socket)));
      socket.once("error", reject);
    });
  }

  /** Log in straight to full feature phase (operational stage only), with the given digests. */
  async login(initiatorName: string, targetName: string, digest: boolean): Promise<void> {
    const d = digest ? "CRC32C" : "None";
    this.send(
      encodeLoginRequest({
        transit: true,
        csg: 1,
        nsg: 3,
        isid: Buffer.from([0x80, 0, 0, 0x12, 0x34, Math.floor(Math.random() * 256)]),
        itt: 0x1000,
        cmdSN: this.cmdSN,
        expStatSN: 0,
        data: encodeTextKeys([
          ["InitiatorName", initiatorName],
          ["TargetName", targetName],
          ["SessionType", "Normal"],
          ["HeaderDigest", d],
          ["DataDigest", d],
        ]),
      }),
    );
    for (;;) {
      const pdu = await this.next();
      if (opcodeOf(pdu.bhs) !== Opcode.LoginResponse) throw new Error("expected a login response");
      const r = decodeLoginResponse(pdu);
      if (r.statusClass !== 0) throw new Error(`login failed ${r.statusClass}/${r.statusDetail}`);
      this.expStatSN = r.statSN + 1;
      const keys = new Map(parseTextKeys(r.data));
      if (r.transit && r.nsg === 3) break;
      // The target wants another operational round: answer what it offered.
      const answer = [...keys].filter(
        ([k]) => k !== "TargetPortalGroupTag" && k !== "MaxRecvDataSegmentLength",
      );
      this.send(
        encodeLoginRequest({
          transit: true,
          csg: 1,
          nsg: 3,
          isid: pdu.bhs.subarray(8, 14),
          itt: 0x1000,
          cmdSN: this.cmdSN,
          expStatSN: this.expStatSN,
          data: encodeTextKeys(answer),
        }),
      );
    }
    this.digests = { header: digest, data: digest };
    this.reader.settings = {
      headerDigest: digest,
      dataDigest: digest,
      maxDataSegmentLength: 16 * 1024 * 1024,
    };
  }

  send(pdu: OutPdu): void {
    for (const b of serializePdu(pdu, this.digests)) this.socket.write(b);
  }

  /** Send bytes as they are (for corrupted PDUs). */
  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Serialize with the session's digests but return the bytes, to corrupt them. */
  bytesOf(pdu: OutPdu): Buffer {
    return Buffer.concat(serializePdu(pdu, this.digests));
  }

  /** The next PDU from the target; rejects when the connection closes or after `ms`. */
  async next(ms = 5000): Promise<RawPdu> {
    const end = Date.now() + ms;
    for (;;) {
      const pdu = this.inbox.shift();
      if (pdu) return pdu;
      if (this.closed) throw new Error("connection closed");
      const left = end - Date.now();
      if (left <= 0) throw new Error("timed out waiting for a PDU");
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
  }

  /** Resolves true when the target closes the connection within `ms`. */
  async closedWithin(ms: number): Promise<boolean> {
    const end = Date.now() + ms;
    while (!this.closed && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }

  destroy(): void {
    this.socket.destroy();
  }
}
