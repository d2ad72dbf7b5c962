/**
 * The live sessions of this target, for TSIH allocation and session reinstatement
 * (RFC 7143 6.3.5: a new login with the ISID of a live session of the same initiator, and TSIH
 * 0, replaces that session).
 */

export interface LiveSession {
  readonly initiatorName: string;
  readonly isid: string;
  readonly tsih: number;
  /** Terminate the session (its connection closes, its tasks are aborted). */
  terminate(reason: string): void;
  /**
   * Change the session's CmdSN window (its agent's queue depth changed on reload; undefined:
   * the target's). A larger window opens at the next PDU the target sends; a smaller one closes
   * as commands complete (MaxCmdSN never moves backwards, RFC 7143 4.2.2.1).
   */
  setQueueDepth?(depth: number | undefined): void;
}

export class SessionRegistry {
  private readonly byTsih = new Map<number, LiveSession>();
  private nextTsih = 1;

  /** A TSIH not used by any live session (never 0, RFC 7143 11.12.6). */
  allocateTsih(): number {
    for (;;) {
      const tsih = this.nextTsih;
      this.nextTsih = this.nextTsih >= 0xffff ? 1 : this.nextTsih + 1;
      if (!this.byTsih.has(tsih)) return tsih;
    }
  }

  /** Register a session entering full feature phase; reinstates an older one with its I_T. */
  add(session: LiveSession): void {
    for (const other of this.byTsih.values()) {
      if (
        other.isid === session.isid &&
        other.initiatorName.toLowerCase() === session.initiatorName.toLowerCase()
      ) {
        this.byTsih.delete(other.tsih);
        other.terminate("session reinstated by a new login with the same ISID");
      }
    }
    this.byTsih.set(session.tsih, session);
  }

  remove(session: LiveSession): void {
    if (this.byTsih.get(session.tsih) === session) this.byTsih.delete(session.tsih);
  }

  get(tsih: number): LiveSession | undefined {
    return this.byTsih.get(tsih);
  }

  list(): LiveSession[] {
    return [...this.byTsih.values()];
  }

  terminateAll(reason: string): void {
    for (const s of [...this.byTsih.values()]) s.terminate(reason);
    this.byTsih.clear();
  }
}
