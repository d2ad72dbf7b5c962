/**
 * The pool's devices: directories (one per file system, usually) that hold containers, added
 * online. New containers go to the device with the most free space (DESIGN.md, "Pool": "the pool
 * grows by adding a device, and no agent notices").
 *
 * Free space comes from `statfs` (bytes available to this user), refreshed every few seconds and
 * at every container creation; between refreshes the bytes this process appends are charged
 * against the cached figure, so a fast writer notices a filling device before the next refresh.
 *
 * Reserve: a device whose free space falls below its reserve takes no new container, and the
 * current container on it takes no new chunk: writes that need new space fail with PoolFull
 * (DESIGN.md "Arbitration": the SCSI layer answers SPACE ALLOCATION FAILED WRITE PROTECT) while
 * writes that dedup, unmaps and reads go on. The reserve leaves room for the metadata store, the
 * registry and containers being sealed.
 */
import { access, constants, mkdir, statfs } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { DeviceRecord, Registry } from "./registry.js";

/** Where a device keeps its container files. */
export function containerDir(device: DeviceRecord): string {
  return join(device.path, "containers");
}

export interface DeviceStatus {
  readonly number: number;
  readonly path: string;
  /** Bytes available to this process (statfs bavail), minus what was appended since. */
  readonly freeBytes: number;
  readonly totalBytes: number;
  readonly reserveBytes: number;
  /** False when statfs failed at the last refresh (the device takes no new container). */
  readonly online: boolean;
}

export interface DevicesOptions {
  /**
   * Bytes kept free on every device. Default: 2 % of the device, at most 1 GiB, at least 16 MiB
   * (capped at half of the device so that small test file systems stay usable).
   */
  readonly reserveBytes?: number | undefined;
  /** How often free space is re-read, in milliseconds. Default 5000. */
  readonly refreshMs?: number | undefined;
}

interface Cached {
  free: number;
  total: number;
  online: boolean;
}

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

export class Devices {
  private readonly cache = new Map<number, Cached>();
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;

  constructor(
    private readonly registry: Registry,
    private readonly options: DevicesOptions = {},
  ) {}

  /** Create the container directories, read free space, start the periodic refresh. */
  async start(): Promise<void> {
    for (const d of this.registry.devices) await mkdir(containerDir(d), { recursive: true });
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.options.refreshMs ?? 5000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Re-read free space on every device (concurrent calls share one pass). */
  refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        for (const d of this.registry.devices) {
          try {
            const s = await statfs(d.path);
            this.cache.set(d.number, {
              free: s.bavail * s.bsize,
              total: s.blocks * s.bsize,
              online: true,
            });
          } catch {
            this.cache.set(d.number, { free: 0, total: 0, online: false });
          }
        }
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /**
   * Add a directory as a device (durable in the registry when this resolves). Refuses a
   * directory that is already a device, or that is not writable.
   */
  async add(dir: string): Promise<DeviceRecord> {
    const path = resolve(dir);
    const existing = this.registry.devices.find((d) => d.path === path);
    if (existing !== undefined) return existing;
    await mkdir(join(path, "containers"), { recursive: true });
    await access(join(path, "containers"), constants.W_OK);
    const rec = this.registry.addDevice(path);
    await this.registry.save();
    await this.refresh();
    return rec;
  }

  reserveOf(number: number): number {
    if (this.options.reserveBytes !== undefined) return this.options.reserveBytes;
    const total = this.cache.get(number)?.total ?? 0;
    return Math.min(Math.max(Math.min(GiB, total * 0.02), 16 * MiB), total / 2);
  }

  /** Whether the device can take `bytes` more without going below its reserve. */
  hasRoom(number: number, bytes = 0): boolean {
    const c = this.cache.get(number);
    return c?.online === true && c.free - bytes >= this.reserveOf(number);
  }

  /** Count bytes just appended on a device against its cached free space. */
  charge(number: number, bytes: number): void {
    const c = this.cache.get(number);
    if (c === undefined) return;
    c.free -= bytes;
    // Crossing the reserve on a stale figure: look again before refusing anything.
    if (c.free < this.reserveOf(number)) void this.refresh();
  }

  /** The device for a new container: the most free space above the reserve, or undefined. */
  pick(bytes: number): DeviceRecord | undefined {
    let best: DeviceRecord | undefined;
    let bestFree = -1;
    for (const d of this.registry.devices) {
      const c = this.cache.get(d.number);
      if (c === undefined || !this.hasRoom(d.number, bytes)) continue;
      if (c.free > bestFree) {
        best = d;
        bestFree = c.free;
      }
    }
    return best;
  }

  status(): DeviceStatus[] {
    return this.registry.devices.map((d) => {
      const c = this.cache.get(d.number) ?? { free: 0, total: 0, online: false };
      return {
        number: d.number,
        path: d.path,
        freeBytes: Math.max(0, c.free),
        totalBytes: c.total,
        reserveBytes: this.reserveOf(d.number),
        online: c.online,
      };
    });
  }
}
