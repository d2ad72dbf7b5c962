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
    this.server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
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

  private accept(socket: net.Socket): void {
    socket.setKeepAlive(true, 30_000);
    this.sockets.add(socket);
    const io: ConnectionIo = {
      remoteAddress: `${socket.remoteAddress}:${socket.remotePort}`,
      localAddress: socket.localAddress ?? "",
      write(buffers) {
        // Cork so that header, data and digests of a PDU leave in as few segments as possible.
        socket.cork();
        let ok = true;
        for (const b of buffers) ok = socket.write(b);
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

function uncork(socket: net.Socket): void {
  socket.uncork();
}
