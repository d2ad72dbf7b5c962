/**
 * The server's event log: what an administrator should hear about without reading the logs —
 * a soft capacity threshold crossed (with its unit attention, issue "Arbitration"), a config
 * reload applied or refused, damage found by scrub, a GC pass. Kept in memory (the newest
 * `capacity` events, 1000 by default) and served by the control API (`GET /v1/events`,
 * `sanmux events`); every event is also a log line, written by the caller with its details.
 * Ids grow by one from 1 for the life of the process, so a client polls with `since=<last id>`.
 */
export interface ServerEvent {
  readonly id: number;
  /** ISO 8601 time. */
  readonly time: string;
  /** Dotted kind, e.g. `capacity.soft-threshold`, `config.reloaded`, `pool.damage`. */
  readonly kind: string;
  readonly severity: "info" | "warning" | "error";
  readonly message: string;
  readonly details?: Readonly<Record<string, unknown>>;
}

export class EventLog {
  private readonly events: ServerEvent[] = [];
  private nextId = 1;

  constructor(private readonly capacity = 1000) {}

  record(
    kind: string,
    severity: ServerEvent["severity"],
    message: string,
    details?: Readonly<Record<string, unknown>>,
  ): ServerEvent {
    const event: ServerEvent = {
      id: this.nextId++,
      time: new Date().toISOString(),
      kind,
      severity,
      message,
      ...(details === undefined ? {} : { details }),
    };
    this.events.push(event);
    if (this.events.length > this.capacity)
      this.events.splice(0, this.events.length - this.capacity);
    return event;
  }

  /** Events with an id above `since` (all kept ones by default), oldest first. */
  list(since = 0): ServerEvent[] {
    // Ids are consecutive, so the first wanted event's index follows from the oldest id kept.
    const oldest = this.events[0]?.id ?? this.nextId;
    return this.events.slice(Math.max(0, since + 1 - oldest));
  }
}
