/**
 * The control socket: a small HTTP/JSON API on a Unix socket in the data directory
 * (DATA/sanmux.sock, mode 0600), through which the `sanmux` command talks to a running server
 * (`sanmux status`, `sanmux events`, `sanmux pool scrub|check|gc|add-device`, `sanmux snapshot ...`). File permissions are the access
 * control: only the user running sanmux (root) can connect. The REST API for remote management
 * will sit beside it on TCP with a token.
 */
import { chmod, unlink } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import Fastify, { type FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { isErrnoException } from "../util/atomic-file.js";

export const CONTROL_SOCKET = "sanmux.sock";

/** What the control API serves; the server implements it. */
export interface ControlHandlers {
  status(): Promise<unknown>;
  /** Events with an id above `since` (events.ts). */
  events(since: number): Promise<unknown>;
  reload(): Promise<unknown>;
  scrub(): Promise<unknown>;
  check(): Promise<unknown>;
  gc(): Promise<unknown>;
  addDevice(dir: string): Promise<unknown>;
  createSnapshot(volume: string, name: string): Promise<unknown>;
  listSnapshots(volume: string | undefined): Promise<unknown>;
  deleteSnapshot(volume: string, name: string): Promise<unknown>;
  deleteVolume(name: string): Promise<unknown>;
  cloneSnapshot(volume: string, name: string, newVolume: string): Promise<unknown>;
}

export function controlSocketPath(dataDir: string): string {
  return path.join(dataDir, CONTROL_SOCKET);
}

export class ControlApi {
  private constructor(
    private readonly app: FastifyInstance,
    readonly socketPath: string,
  ) {}

  static async listen(
    dataDir: string,
    handlers: ControlHandlers,
    logger: Logger,
  ): Promise<ControlApi> {
    const socketPath = controlSocketPath(dataDir);
    const app = Fastify({ logger: false });
    app.get("/v1/status", () => handlers.status());
    app.get<{ Querystring: { since?: string } }>("/v1/events", (req) =>
      handlers.events(Number.parseInt(req.query.since ?? "0", 10) || 0),
    );
    app.post("/v1/reload", () => handlers.reload());
    app.post("/v1/pool/scrub", () => handlers.scrub());
    app.post("/v1/pool/check", () => handlers.check());
    app.post("/v1/pool/gc", () => handlers.gc());
    app.post<{ Body: { dir?: unknown } }>("/v1/pool/devices", async (req, reply) => {
      const dir = req.body?.dir;
      if (typeof dir !== "string" || dir === "") {
        return reply.code(400).send({ error: "body must be { dir: <absolute path> }" });
      }
      return handlers.addDevice(path.resolve(dir));
    });
    // Snapshots: POST /v1/snapshots { volume, name }, GET /v1/snapshots[?volume=V],
    // DELETE /v1/snapshots/V/NAME, POST /v1/snapshots/V/NAME/clone { volume: NEW }.
    app.post<{ Body: { volume?: unknown; name?: unknown } }>(
      "/v1/snapshots",
      async (req, reply) => {
        const { volume, name } = req.body ?? {};
        if (typeof volume !== "string" || typeof name !== "string") {
          return reply.code(400).send({ error: "body must be { volume, name }" });
        }
        return handlers.createSnapshot(volume, name);
      },
    );
    app.get<{ Querystring: { volume?: string } }>("/v1/snapshots", (req) =>
      handlers.listSnapshots(req.query.volume),
    );
    app.delete<{ Params: { name: string } }>("/v1/volumes/:name", (req) =>
      handlers.deleteVolume(req.params.name),
    );
    app.delete<{ Params: { volume: string; name: string } }>("/v1/snapshots/:volume/:name", (req) =>
      handlers.deleteSnapshot(req.params.volume, req.params.name),
    );
    app.post<{ Params: { volume: string; name: string }; Body: { volume?: unknown } }>(
      "/v1/snapshots/:volume/:name/clone",
      async (req, reply) => {
        const newVolume = req.body?.volume;
        if (typeof newVolume !== "string") {
          return reply.code(400).send({ error: "body must be { volume: <new volume name> }" });
        }
        return handlers.cloneSnapshot(req.params.volume, req.params.name, newVolume);
      },
    );
    app.setErrorHandler((error, _req, reply) => {
      logger.warn({ err: error }, "control request failed");
      void reply.code(500).send({ error: error instanceof Error ? error.message : String(error) });
    });
    // The data directory lock (server.ts) guarantees no other server owns the socket: a file
    // left by a killed process is stale.
    await unlink(socketPath).catch((e: unknown) => {
      if (!(isErrnoException(e) && e.code === "ENOENT")) throw e;
    });
    await app.listen({ path: socketPath });
    await chmod(socketPath, 0o600);
    return new ControlApi(app, socketPath);
  }

  async close(): Promise<void> {
    await this.app.close();
    await unlink(this.socketPath).catch(() => undefined);
  }
}

/**
 * Call the control API of the server running on `dataDir`. Resolves undefined when no server
 * answers there (no socket, or a stale one), so that the caller can open the data directory
 * itself.
 */
export async function callControl(
  dataDir: string,
  method: "GET" | "POST" | "DELETE",
  route: string,
  body?: unknown,
): Promise<unknown> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: controlSocketPath(dataDir),
        method,
        path: route,
        headers: payload ? { "content-type": "application/json" } : {},
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          text += chunk;
        });
        res.on("end", () => {
          let parsed: unknown;
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = text;
          }
          if ((res.statusCode ?? 500) >= 400) {
            const message =
              typeof parsed === "object" && parsed !== null && "error" in parsed
                ? String((parsed as { error: unknown }).error)
                : text;
            reject(new Error(`the running server refused: ${message}`));
          } else {
            resolve(parsed);
          }
        });
      },
    );
    req.on("error", (error) => {
      if (isErrnoException(error) && ["ENOENT", "ECONNREFUSED"].includes(error.code ?? "")) {
        resolve(undefined);
      } else {
        reject(error);
      }
    });
    req.end(payload);
  });
}
