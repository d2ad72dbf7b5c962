import { dataBuffers } from "../util/buffer-pool.js";

/**
 * Collects one write command's Data-Out into a single buffer (RFC 7143 4.2.? / 11.7, 11.8):
 * immediate data, then unsolicited Data-Out up to FirstBurstLength (when InitialR2T=No), then
 * bursts solicited by R2Ts of at most MaxBurstLength, at most MaxOutstandingR2T at a time.
 *
 * The buffer is allocated once at EDTL size; every Data-Out payload is copied into it exactly
 * once (the receive buffer is not ours to keep).
 */

interface Burst {
  readonly ttt: number;
  readonly offset: number;
  readonly length: number;
  received: number;
  /** DataSN restarts at 0 for every R2T-solicited sequence (RFC 7143 11.7.5). */
  nextDataSN: number;
}

interface Range {
  offset: number;
  length: number;
}

export interface R2TRequest {
  readonly ttt: number;
  readonly r2tSN: number;
  readonly offset: number;
  readonly length: number;
}

export class WriteCollector {
  readonly buffer: Buffer;
  private received = 0;
  private readonly unsolicitedEnd: number;
  private unsolicitedReceived = 0;
  private unsolicitedDataSN = 0;
  private unsolicitedDone: boolean;
  private readonly bursts = new Map<number, Burst>();
  /** Ranges still to solicit, in order. */
  private readonly toSolicit: Range[] = [];
  private r2tSN = 0;

  constructor(
    private readonly edtl: number,
    unsolicited: number,
    private readonly maxBurstLength: number,
    private readonly maxOutstandingR2T: number,
  ) {
    this.buffer = dataBuffers.acquire(edtl);
    this.unsolicitedEnd = unsolicited;
    this.unsolicitedDone = unsolicited === 0;
    if (edtl > unsolicited)
      this.toSolicit.push({ offset: unsolicited, length: edtl - unsolicited });
  }

  get complete(): boolean {
    return this.received >= this.edtl;
  }

  /** Immediate data in the SCSI Command PDU: the start of the unsolicited part. */
  acceptImmediate(data: Buffer): void {
    data.copy(this.buffer, 0);
    this.received += data.length;
    this.unsolicitedReceived += data.length;
    if (this.unsolicitedReceived >= this.unsolicitedEnd) this.unsolicitedDone = true;
  }

  /**
   * One Data-Out PDU. Returns a description of the protocol violation, if any (the caller
   * rejects the PDU and drops the connection: ERL 0).
   */
  accept(
    ttt: number,
    dataSN: number,
    offset: number,
    data: Buffer,
    final: boolean,
  ): string | undefined {
    const end = offset + data.length;
    if (ttt === 0xffffffff) {
      if (this.unsolicitedDone) return "unsolicited Data-Out after the unsolicited sequence ended";
      if (end > this.unsolicitedEnd) return "unsolicited Data-Out beyond FirstBurstLength";
      if (dataSN !== this.unsolicitedDataSN) {
        return `unsolicited Data-Out DataSN ${dataSN}, expected ${this.unsolicitedDataSN}`;
      }
      this.unsolicitedDataSN++;
      data.copy(this.buffer, offset);
      this.received += data.length;
      this.unsolicitedReceived += data.length;
      if (final || this.unsolicitedReceived >= this.unsolicitedEnd) {
        this.unsolicitedDone = true;
        if (this.unsolicitedReceived < this.unsolicitedEnd) {
          // The initiator ended its unsolicited sequence early: ask for the rest with an R2T.
          this.toSolicit.unshift({
            offset: this.unsolicitedReceived,
            length: this.unsolicitedEnd - this.unsolicitedReceived,
          });
        }
      }
      return undefined;
    }
    const burst = this.bursts.get(ttt);
    if (!burst) return `Data-Out with unknown Target Transfer Tag ${ttt}`;
    if (offset < burst.offset || end > burst.offset + burst.length) {
      return `Data-Out [${offset}, ${end}) outside its R2T [${burst.offset}, ${burst.offset + burst.length})`;
    }
    if (dataSN !== burst.nextDataSN)
      return `Data-Out DataSN ${dataSN}, expected ${burst.nextDataSN}`;
    burst.nextDataSN++;
    data.copy(this.buffer, offset);
    this.received += data.length;
    burst.received += data.length;
    if (burst.received >= burst.length) {
      this.bursts.delete(ttt);
    } else if (final) {
      return `Data-Out sequence ended with ${burst.length - burst.received} bytes missing`;
    }
    return undefined;
  }

  /** The next R2T to send, if the window allows one. */
  nextR2T(allocateTtt: () => number): R2TRequest | undefined {
    if (this.bursts.size >= this.maxOutstandingR2T) return undefined;
    const range = this.toSolicit[0];
    if (!range) return undefined;
    const length = Math.min(range.length, this.maxBurstLength);
    const offset = range.offset;
    range.offset += length;
    range.length -= length;
    if (range.length === 0) this.toSolicit.shift();
    const ttt = allocateTtt();
    this.bursts.set(ttt, { ttt, offset, length, received: 0, nextDataSN: 0 });
    return { ttt, r2tSN: this.r2tSN++, offset, length };
  }

  outstandingTtts(): number[] {
    return [...this.bursts.keys()];
  }
}
