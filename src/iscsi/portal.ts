/**
 * The network portal: a TCP listener whose sockets each feed one IscsiConnection. This is the
 * only file of the iSCSI layer that touches sockets.
 */
import net from "node:net";
import { type ConnectionIo, IscsiConnection } from "./connection.js";
import type { TargetServices } from "./services.js";
import { SessionRegistry } from "./sessions.js";

export interface PortalAddress {
  readonly host: string;
  readonly port: number;
}

export class Portal {
  private readonly server: net.Server;
  readonly sessions = new SessionRegistry();
  private readonly connections = new Set<IscsiConnection>();
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly services: TargetServices) {
    // pauseOnConnect: the accepted socket must not start reading before adoptWithOwnBuffer()
    // moved its handle to a socket that reads into a fixed buffer.
    this.server = net.createServer({ noDelay: true, pauseOnConnect: true }, (socket) =>
      this.accept(socket),
    );
  }

  listen(address: PortalAddress): Promise<PortalAddress> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(address.port, address.host, () => {
        this.server.off("error", reject);
        const a = this.server.address() as net.AddressInfo;
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  /** Stop listening, end every session, and wait for the sockets to close. */
  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.sessions.terminateAll("target shutting down");
      for (const c of this.connections) c.terminate("target shutting down");
      for (const s of this.sockets) s.destroySoon();
      setTimeout(() => {
        for (const s of this.sockets) s.destroy();
      }, 2000).unref();
    });
  }

  private accept(accepted: net.Socket): void {
    let receive: (chunk: Buffer) => void = () => {};
    const socket = adoptWithOwnBuffer(accepted, (chunk) => receive(chunk));
    socket.setKeepAlive(true, 30_000);
    this.sockets.add(socket);
    const io: ConnectionIo = {
      remoteAddress: `${socket.remoteAddress}:${socket.remotePort}`,
      localAddress: socket.localAddress ?? "",
      write(buffers, onFlushed) {
        // Cork so that header, data and digests of a PDU leave in as few segments as possible.
        socket.cork();
        let ok = true;
        const last = buffers.length - 1;
        for (let i = 0; i < last; i++) ok = socket.write(buffers[i]!);
        // The callback of the last write: called once everything before it left too, or with an
        // error when the socket is destroyed first (Writable calls every pending callback then).
        if (last >= 0)
          ok = onFlushed ? socket.write(buffers[last]!, onFlushed) : socket.write(buffers[last]!);
        else onFlushed?.();
        process.nextTick(uncork, socket);
        return ok;
      },
      end() {
        socket.end();
      },
      destroy() {
        socket.destroy();
      },
    };
    const connection = new IscsiConnection(io, this.services, this.sessions);
    this.connections.add(connection);
    receive = (chunk) => connection.receive(chunk);
    socket.on("data", (chunk: Buffer) => connection.receive(chunk));
    socket.on("error", (err) => {
      this.services.logger.debug({ err, peer: io.remoteAddress }, "socket error");
    });
    socket.on("close", () => {
      this.sockets.delete(socket);
      this.connections.delete(connection);
      connection.closed();
    });
  }
}

/**
 * Reading into one reused buffer instead of a fresh 64 KiB ArrayBuffer per read: at line rate
 * those allocations made V8 run a full mark-compact about every 10 ms (seen with --trace-gc).
 * The PduReader copies everything it keeps out of each chunk before returning, so a reused
 * buffer is safe. Node offers `onread` only for sockets it does not accept itself, so the
 * accepted socket's handle moves to a new Socket created with `onread`. If that fails (another
 * Node version), the accepted socket is used as it is, with 'data' events.
 */
function adoptWithOwnBuffer(accepted: net.Socket, onChunk: (chunk: Buffer) => void): net.Socket {
  const holder = accepted as unknown as { _handle: unknown };
  const handle = holder._handle;
  if (!handle) {
    accepted.resume();
    return accepted;
  }
  const buffer = Buffer.allocUnsafe(256 * 1024);
  try {
    const socket = new net.Socket({
      handle,
      readable: true,
      writable: true,
      onread: {
        buffer,
        callback: (nread: number, buf: Uint8Array) => {
          onChunk(Buffer.from(buf.buffer, buf.byteOffset, nread));
          return true;
        },
      },
    } as net.SocketConstructorOpts);
    holder._handle = null;
    accepted.destroy();
    socket.setNoDelay(true);
    return socket;
  } catch {
    accepted.resume();
    return accepted;
  }
}

function uncork(socket: net.Socket): void {
  socket.uncork();
}
