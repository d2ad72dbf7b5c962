/**
 * PDU framing on a TCP byte stream (RFC 7143 11.2): BHS, AHS, optional header digest, data
 * segment padded to 4 bytes, optional data digest. `serializePdu` builds the buffers to write;
 * `PduReader` cuts a byte stream back into PDUs. Neither touches a socket.
 */

import { crc32c } from "@node-rs/crc32";
import { dataBuffers } from "../util/buffer-pool.js";
import { BHS_LENGTH } from "./constants.js";
import { DIGEST_LENGTH, digestBytes, readDigest } from "./digest.js";
import {
  ahsIsWellFormed,
  dataSegmentLengthOf,
  EMPTY,
  type OutPdu,
  opcodeOf,
  type RawPdu,
  totalAhsLengthOf,
} from "./pdu.js";

/** Which digests are in force on a connection (RFC 7143 13.1: HeaderDigest, DataDigest). */
export interface DigestSettings {
  readonly header: boolean;
  readonly data: boolean;
}

/**
 * Zero padding, indexed by the pad length (RFC 7143 13.1: padding SHOULD be 0 and is covered by
 * the data digest). Shared and never written: the socket only reads them.
 */
const PADDING: readonly Buffer[] = [EMPTY, Buffer.alloc(1), Buffer.alloc(2), Buffer.alloc(3)];

/** Bytes of padding after a data segment of `length` bytes, to the next multiple of 4. */
export function paddingOf(length: number): number {
  return -length & 3;
}

/**
 * The buffers to write for one PDU, in order: BHS, AHS, header digest, data, padding, data
 * digest (absent parts are left out). The data payload is not copied, so the caller writes the
 * buffers before the payload can change (e.g. `socket.cork()`, one `write` per buffer,
 * `socket.uncork()`, or `writev`).
 *
 * The data digest covers the data and its padding (RFC 7143 13.1) and is only sent when there
 * is a data segment: with DataSegmentLength 0 there is nothing to digest (the Linux initiator
 * likewise sends and expects none).
 */
export function serializePdu(pdu: OutPdu, digests: DigestSettings): Buffer[] {
  const { bhs, data } = pdu;
  const ahs = pdu.ahs ?? EMPTY;
  // Assert the encoders' invariants: a mismatch here would desynchronize the peer's framing.
  if (dataSegmentLengthOf(bhs) !== data.length || totalAhsLengthOf(bhs) !== ahs.length) {
    throw new Error(
      `PDU 0x${opcodeOf(bhs).toString(16)}: BHS lengths do not match the AHS/data given`,
    );
  }
  const out: Buffer[] = [bhs];
  if (ahs.length !== 0) out.push(ahs);
  if (digests.header) {
    const crc = ahs.length === 0 ? crc32c(bhs) : crc32c(ahs, crc32c(bhs));
    out.push(digestBytes(crc));
  }
  const length = data.length;
  if (length !== 0) {
    out.push(data);
    const pad = PADDING[paddingOf(length)]!;
    if (pad.length !== 0) out.push(pad);
    if (digests.data) {
      const crc = pad.length === 0 ? crc32c(data) : crc32c(pad, crc32c(data));
      out.push(digestBytes(crc));
    }
  }
  return out;
}

/**
 * What a PduReader checks each PDU against. Read once at the first byte of every PDU, so a
 * change made while a PDU is being delivered (e.g. digests switched on from `onPdu` when login
 * completes) applies to the very next PDU, even one already waiting in the same chunk.
 */
export interface ReaderSettings {
  /** HeaderDigest=CRC32C is in force. */
  readonly headerDigest: boolean;
  /** DataDigest=CRC32C is in force. */
  readonly dataDigest: boolean;
  /**
   * The largest DataSegmentLength accepted: our declared MaxRecvDataSegmentLength (RFC 7143
   * 13.12; 8192 until it is negotiated).
   */
  readonly maxDataSegmentLength: number;
}

/**
 * - `header-digest`: the header digest does not match. Connection-fatal: the lengths in the
 *   header cannot be trusted, so the stream cannot be resynchronized (RFC 7143 7.8, Digest Errors).
 * - `data-digest`: the data digest does not match. Recoverable: the PDU (data included) has been
 *   consumed and is not delivered; the caller answers with a Reject, reason 0x02 (RFC 7143 7.8, Digest Errors).
 * - `oversize`: DataSegmentLength exceeds `maxDataSegmentLength`. Fatal: the caller rejects the
 *   PDU (reason 0x04, protocol error) and closes, so the reader reads no further.
 * - `bad-ahs`: the AHS area is not a well-formed AHS sequence (RFC 7143 11.2.2). Recoverable:
 *   the header digest (if any) matched, so the lengths are trusted; the PDU is consumed and not
 *   delivered, and the caller may Reject it (reason 0x09, invalid PDU field).
 */
export type FramingErrorKind = "header-digest" | "data-digest" | "oversize" | "bad-ahs";

export class FramingError extends Error {
  override readonly name = "FramingError";
  /** True when the reader has stopped: the caller must close the connection. */
  readonly fatal: boolean;

  constructor(
    readonly kind: FramingErrorKind,
    message: string,
    /**
     * The offending PDU's BHS (owned, 48 bytes), e.g. for the data segment of a Reject. After
     * a header digest error its contents are untrusted: use it only for logging.
     */
    readonly bhs: Buffer,
  ) {
    super(message);
    this.fatal = kind === "header-digest" || kind === "oversize";
  }
}

/**
 * Receives what a PduReader produces. The reader calls these as methods of the object given to
 * its constructor, once per PDU: create any closures once per connection, not per PDU. Neither
 * may call `push` on the same reader; if one throws, the exception propagates out of `push` and
 * the reader stops, since the rest of the chunk has not been consumed.
 */
export interface PduSink {
  /** A complete PDU with matching digests. The PDU owns its buffers (see RawPdu). */
  onPdu(pdu: RawPdu): void;
  onError(error: FramingError): void;
}

export interface PduReaderOptions extends PduSink {
  /** The initial settings (see PduReader.settings). */
  readonly settings: ReaderSettings;
}

// Reader states: which part of the PDU the next bytes belong to.
const READ_BHS = 0;
/** The AHS, then the header digest. */
const READ_HEADER_REST = 1;
const READ_DATA = 2;
/** The padding, then the data digest. */
const READ_TRAILER = 3;
const STOPPED = 4;

/**
 * Cuts a byte stream into PDUs (the idea of pg-protocol's parser: consume what is complete, keep
 * the remainder), handling the header before the data as SPDK's iscsi_read_pdu does: the BHS,
 * AHS and header digest are read and checked first, and only then is the data segment, whose
 * length is now trusted, read.
 *
 * Copies: instead of accumulating chunks and re-slicing them, each part of a PDU is copied
 * straight from the incoming chunk into the buffer the PDU will own (the BHS, the AHS, a data
 * buffer of exactly DataSegmentLength bytes). Every byte is copied once, however the stream is
 * chunked: no quadratic re-copying for many small chunks, no per-PDU slicing overhead for one
 * huge chunk. The reader keeps no reference to a chunk after `push` returns, so the caller may
 * reuse it.
 */
export class PduReader {
  /** Read at the start of every PDU; assign a new object to change it (see ReaderSettings). */
  settings: ReaderSettings;

  private readonly sink: PduSink;
  private state = READ_BHS;
  /** Bytes of the current part received so far. */
  private filled = 0;
  private pushing = false;

  // The PDU being read.
  private bhs: Buffer = EMPTY;
  private ahs: Buffer = EMPTY;
  private data: Buffer = EMPTY;
  private dataLength = 0;
  /** AHS length + header digest length. */
  private headerRestLength = 0;
  /** Padding length + data digest length. */
  private trailerLength = 0;
  private padLength = 0;
  /** Data is consumed but the PDU will not be delivered (bad AHS). */
  private discard = false;

  // Settings snapshot for the PDU being read.
  private headerDigest = false;
  private dataDigest = false;
  private maxDataSegmentLength = 0;

  /** Holds the header digest, or the padding and data digest (at most 3 + 4 bytes). */
  private readonly scratch = Buffer.alloc(8);
  /** Views of the received padding, indexed by its length, to digest without allocating. */
  private readonly padViews: readonly Buffer[];

  constructor(options: PduReaderOptions) {
    this.sink = options;
    this.settings = options.settings;
    this.padViews = [
      EMPTY,
      this.scratch.subarray(0, 1),
      this.scratch.subarray(0, 2),
      this.scratch.subarray(0, 3),
    ];
  }

  /** True once a fatal error was reported (or a callback threw): further input is ignored. */
  get stopped(): boolean {
    return this.state === STOPPED;
  }

  /** True when no partial PDU is buffered (the stream is at a PDU boundary). */
  get idle(): boolean {
    return this.state === READ_BHS && this.filled === 0;
  }

  /** Consumes `chunk`, delivering every PDU it completes, in order, before returning. */
  push(chunk: Buffer): void {
    if (this.pushing) throw new Error("PduReader.push called from one of its own callbacks");
    this.pushing = true;
    try {
      this.consume(chunk);
    } catch (error) {
      this.stop();
      throw error;
    } finally {
      this.pushing = false;
    }
  }

  private consume(chunk: Buffer): void {
    const end = chunk.length;
    let off = 0;
    while (off < end) {
      switch (this.state) {
        case READ_BHS: {
          if (this.filled === 0) this.startPdu();
          const n = Math.min(BHS_LENGTH - this.filled, end - off);
          chunk.copy(this.bhs, this.filled, off, off + n);
          off += n;
          this.filled += n;
          if (this.filled === BHS_LENGTH) this.bhsComplete();
          break;
        }
        case READ_HEADER_REST: {
          const ahsLength = this.ahs.length;
          let n: number;
          if (this.filled < ahsLength) {
            n = Math.min(ahsLength - this.filled, end - off);
            chunk.copy(this.ahs, this.filled, off, off + n);
          } else {
            n = Math.min(this.headerRestLength - this.filled, end - off);
            chunk.copy(this.scratch, this.filled - ahsLength, off, off + n);
          }
          off += n;
          this.filled += n;
          if (this.filled === this.headerRestLength) this.headerComplete();
          break;
        }
        case READ_DATA: {
          const n = Math.min(this.dataLength - this.filled, end - off);
          if (!this.discard) chunk.copy(this.data, this.filled, off, off + n);
          off += n;
          this.filled += n;
          if (this.filled === this.dataLength) this.dataComplete();
          break;
        }
        case READ_TRAILER: {
          const n = Math.min(this.trailerLength - this.filled, end - off);
          chunk.copy(this.scratch, this.filled, off, off + n);
          off += n;
          this.filled += n;
          if (this.filled === this.trailerLength) this.trailerComplete();
          break;
        }
        default:
          return;
      }
    }
  }

  private startPdu(): void {
    const s = this.settings;
    this.headerDigest = s.headerDigest;
    this.dataDigest = s.dataDigest;
    this.maxDataSegmentLength = s.maxDataSegmentLength;
    // A fresh, owned BHS per PDU (from Node's small-buffer pool: cheap, and never reused).
    this.bhs = Buffer.allocUnsafe(BHS_LENGTH);
  }

  private bhsComplete(): void {
    const ahsLength = totalAhsLengthOf(this.bhs);
    this.dataLength = dataSegmentLengthOf(this.bhs);
    this.ahs = ahsLength === 0 ? EMPTY : Buffer.allocUnsafe(ahsLength);
    this.headerRestLength = ahsLength + (this.headerDigest ? DIGEST_LENGTH : 0);
    this.filled = 0;
    if (this.headerRestLength === 0) this.headerComplete();
    else this.state = READ_HEADER_REST;
  }

  private headerComplete(): void {
    const { bhs, ahs } = this;
    if (this.headerDigest) {
      const crc = ahs.length === 0 ? crc32c(bhs) : crc32c(ahs, crc32c(bhs));
      if (crc >>> 0 !== readDigest(this.scratch, 0)) {
        this.fail("header-digest", "header digest mismatch");
        return;
      }
    }
    const length = this.dataLength;
    if (length > this.maxDataSegmentLength) {
      this.fail(
        "oversize",
        `DataSegmentLength ${length} exceeds MaxRecvDataSegmentLength ${this.maxDataSegmentLength}`,
      );
      return;
    }
    this.discard = ahs.length !== 0 && !ahsIsWellFormed(ahs);
    this.filled = 0;
    if (length === 0) {
      this.pduComplete();
      return;
    }
    this.padLength = paddingOf(length);
    this.trailerLength = this.padLength + (this.dataDigest ? DIGEST_LENGTH : 0);
    // The one copy of the payload goes here; allocUnsafe because every byte is overwritten.
    this.data = this.discard ? EMPTY : dataBuffers.acquire(length);
    this.state = READ_DATA;
  }

  private dataComplete(): void {
    this.filled = 0;
    if (this.trailerLength === 0) this.pduComplete();
    else this.state = READ_TRAILER;
  }

  private trailerComplete(): void {
    if (this.dataDigest && !this.discard) {
      const pad = this.padLength;
      // The received padding is digested as received (RFC 7143 13.1: padding is covered).
      const crc = pad === 0 ? crc32c(this.data) : crc32c(this.padViews[pad]!, crc32c(this.data));
      if (crc >>> 0 !== readDigest(this.scratch, pad)) {
        const bhs = this.bhs;
        this.nextPdu();
        this.sink.onError(new FramingError("data-digest", "data digest mismatch", bhs));
        return;
      }
    }
    this.pduComplete();
  }

  private pduComplete(): void {
    const { bhs, ahs, data, discard } = this;
    // Reset before the callback, so that the callback sees a reader at a PDU boundary and the
    // next PDU starts with whatever settings the callback leaves.
    this.nextPdu();
    if (discard) {
      this.sink.onError(new FramingError("bad-ahs", "malformed additional header segment", bhs));
    } else {
      this.sink.onPdu({ bhs, ahs, data });
    }
  }

  private nextPdu(): void {
    this.state = READ_BHS;
    this.filled = 0;
    this.bhs = EMPTY;
    this.ahs = EMPTY;
    this.data = EMPTY;
    this.discard = false;
  }

  private fail(kind: FramingErrorKind, message: string): void {
    const bhs = this.bhs;
    this.stop();
    this.sink.onError(new FramingError(kind, message, bhs));
  }

  private stop(): void {
    this.state = STOPPED;
    this.bhs = EMPTY;
    this.ahs = EMPTY;
    this.data = EMPTY;
  }
}
