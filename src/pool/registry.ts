/**
 * The pool's own catalog: devices, domains, containers and volumes, with the small numbers the
 * metadata store (src/pool/meta, README "Key layout") uses for them.
 *
 * - device:    number ↔ directory
 * - domain:    name ↔ u32 number + 128-bit id (the id derives the domain's keys, src/crypto)
 * - container: u32 number ↔ container id (its file name, FORMAT.md §2) + device + domain + state
 * - volume:    name ↔ u32 number + stable id + domain + size + block size + write cache
 * - snapshot:  (volume, name) ↔ the store's generation number + stable id + size at creation
 *
 * Persisted as one JSON file (`registry.json`) replaced atomically (src/util/atomic-file.ts).
 * Contract: a record is durable (`save()` resolved) before anything else refers to its number —
 * an index entry naming a container, a map naming a volume — so that after any crash every
 * number the metadata store holds resolves here. Numbers are never reused (`next` only grows),
 * which is what MetaStore requires ("a number is never reused while anything refers to it").
 *
 * Why JSON and not LMDB: the registry changes rarely (a container is created every 256 MiB of new
 * data) and a human can read it. It grows by ~150 bytes per container: at 40 000 containers
 * (10 TiB of unique data) every save writes ~6 MB; past that, move `containers` into LMDB.
 *
 * Concurrency: mutations change the in-memory state synchronously; `save()` writes a snapshot and
 * resolves once a write that started after the call has completed. Saves never overlap, so the
 * file only moves forward.
 */
import { readJsonFile, writeJsonAtomic } from "../util/atomic-file.js";

export const REGISTRY_FILE = "registry.json";
const FORMAT = 1;

export interface DeviceRecord {
  readonly number: number;
  /** Absolute directory. Containers live in `<path>/containers/`. */
  readonly path: string;
  readonly addedAt: string;
}

export interface DomainRecord {
  readonly name: string;
  /** The u32 domain number of the metadata store. */
  readonly number: number;
  /** Random 128-bit id (UUID text): the context of the domain's keys. */
  readonly id: string;
}

/**
 * - open: may be appended to (or was, when the process stopped): reopened at start, torn tail
 *   truncated (FORMAT.md §6);
 * - sealed: immutable (FORMAT.md §5);
 * - deleting: GC decided to delete it and flushed the metadata that forgets it; the file may
 *   still exist (deleted again at the next start).
 */
export type ContainerState = "open" | "sealed" | "deleting";

export interface ContainerRecord {
  readonly number: number;
  /** Container id (UUID text), the file name `<id>.sxc`. */
  readonly id: string;
  readonly device: number;
  readonly domain: number;
  state: ContainerState;
  /** File size once sealed (usage reports it without a stat per container). */
  size?: number | undefined;
  /**
   * Open containers: the durable end recorded at a clean close. A torn tail found below it at the
   * next start is damage, not an interrupted append (FORMAT.md §6).
   */
  closedEnd?: number | undefined;
}

export interface VolumeRecord {
  readonly name: string;
  readonly number: number;
  /** Stable identity (UUID text), for VPD designators. */
  readonly id: string;
  readonly domain: number;
  /** Capacity in bytes. */
  size: number;
  readonly blockSize: 512 | 4096;
  writeCache: boolean;
  /** Set while deleteVolume runs; the next start finishes the deletion. */
  deleting?: boolean | undefined;
  /** Named snapshots (Pool.createSnapshot), oldest first. Absent: none. */
  snapshots?: SnapshotRecord[] | undefined;
  /**
   * Set while Pool.cloneSnapshot copies the source snapshot's map into this volume; the next
   * start finishes the copy (MetaStore.cloneVolume may be called again).
   */
  cloning?: { readonly volume: number; readonly snapshot: number } | undefined;
}

/**
 * A named snapshot of a volume. Saved only after the metadata store's snapshot is durable; a
 * store snapshot the registry does not name (a crash in between) is deleted at the next start.
 */
export interface SnapshotRecord {
  readonly name: string;
  /** The snapshot number `s` of MetaStore.createSnapshot (the volume's generation). */
  readonly generation: number;
  /** Stable identity (UUID text), for the VPD designators of a LUN that maps it. */
  readonly id: string;
  readonly createdAt: string;
  /** The volume's capacity in bytes when the snapshot was taken. */
  readonly size: number;
  /** Set while Pool.deleteSnapshot runs; the next start finishes the deletion. */
  deleting?: boolean | undefined;
}

export interface RegistryData {
  format: number;
  poolId: string;
  /** keyCheckValue(master) (src/crypto/README.md, "Wrong key at start"). */
  keyCheck: string;
  grainSize: number;
  createdAt: string;
  devices: DeviceRecord[];
  domains: DomainRecord[];
  containers: ContainerRecord[];
  volumes: VolumeRecord[];
  next: { device: number; domain: number; container: number; volume: number };
}

export class Registry {
  private readonly containersByNumber = new Map<number, ContainerRecord>();
  private saving: Promise<void> = Promise.resolve();
  private queued: Promise<void> | undefined;

  private constructor(
    readonly path: string,
    readonly data: RegistryData,
  ) {
    for (const c of data.containers) this.containersByNumber.set(c.number, c);
  }

  /** Load `path`, or undefined when it does not exist. Rejects on a corrupt file. */
  static async load(path: string): Promise<Registry | undefined> {
    const raw = await readJsonFile(path);
    if (raw === undefined) return undefined;
    return new Registry(path, validate(raw, path));
  }

  /** A new registry (not saved yet: call `save()`). */
  static create(
    path: string,
    init: { poolId: string; keyCheck: string; grainSize: number },
  ): Registry {
    return new Registry(path, {
      format: FORMAT,
      ...init,
      createdAt: new Date().toISOString(),
      devices: [],
      domains: [],
      containers: [],
      volumes: [],
      next: { device: 0, domain: 1, container: 1, volume: 1 },
    });
  }

  /** Write the current state durably (see the module comment). */
  save(): Promise<void> {
    if (this.queued !== undefined) return this.queued;
    const run = this.saving
      .catch(() => undefined)
      .then(() => {
        this.queued = undefined;
        return writeJsonAtomic(this.path, this.data);
      });
    this.queued = run;
    this.saving = run;
    return run;
  }

  // -------------------------------------------------------------------------------------------
  // Devices

  get devices(): readonly DeviceRecord[] {
    return this.data.devices;
  }

  addDevice(path: string): DeviceRecord {
    const rec: DeviceRecord = {
      number: this.data.next.device++,
      path,
      addedAt: new Date().toISOString(),
    };
    this.data.devices.push(rec);
    return rec;
  }

  device(number: number): DeviceRecord | undefined {
    return this.data.devices.find((d) => d.number === number);
  }

  // -------------------------------------------------------------------------------------------
  // Domains

  domainByName(name: string): DomainRecord | undefined {
    return this.data.domains.find((d) => d.name === name);
  }

  domain(number: number): DomainRecord | undefined {
    return this.data.domains.find((d) => d.number === number);
  }

  addDomain(name: string, id: string): DomainRecord {
    const rec: DomainRecord = { name, number: this.data.next.domain++, id };
    this.data.domains.push(rec);
    return rec;
  }

  // -------------------------------------------------------------------------------------------
  // Containers

  container(number: number): ContainerRecord | undefined {
    return this.containersByNumber.get(number);
  }

  get containers(): readonly ContainerRecord[] {
    return this.data.containers;
  }

  addContainer(id: string, device: number, domain: number): ContainerRecord {
    const rec: ContainerRecord = {
      number: this.data.next.container++,
      id,
      device,
      domain,
      state: "open",
    };
    this.data.containers.push(rec);
    this.containersByNumber.set(rec.number, rec);
    return rec;
  }

  removeContainer(number: number): void {
    this.containersByNumber.delete(number);
    this.data.containers = this.data.containers.filter((c) => c.number !== number);
  }

  // -------------------------------------------------------------------------------------------
  // Volumes

  volumeByName(name: string): VolumeRecord | undefined {
    return this.data.volumes.find((v) => v.name === name);
  }

  get volumes(): readonly VolumeRecord[] {
    return this.data.volumes;
  }

  addVolume(v: Omit<VolumeRecord, "number">): VolumeRecord {
    const rec: VolumeRecord = { ...v, number: this.data.next.volume++ };
    this.data.volumes.push(rec);
    return rec;
  }

  removeVolume(name: string): void {
    this.data.volumes = this.data.volumes.filter((v) => v.name !== name);
  }
}

/** Structural checks: a registry that does not look like ours must never be half-used. */
function validate(raw: unknown, path: string): RegistryData {
  const bad = (what: string): Error => new Error(`${path}: not a sanmux pool registry (${what})`);
  if (raw === null || typeof raw !== "object") throw bad("not an object");
  const d = raw as Partial<RegistryData>;
  if (d.format !== FORMAT) throw bad(`format ${String(d.format)}, expected ${FORMAT}`);
  if (typeof d.keyCheck !== "string" || typeof d.poolId !== "string") throw bad("no key check");
  if (typeof d.grainSize !== "number") throw bad("no grain size");
  for (const k of ["devices", "domains", "containers", "volumes"] as const) {
    if (!Array.isArray(d[k])) throw bad(`no ${k} list`);
  }
  const n = d.next;
  if (
    n === undefined ||
    ![n.device, n.domain, n.container, n.volume].every((x) => Number.isSafeInteger(x))
  ) {
    throw bad("no number counters");
  }
  return d as RegistryData;
}
