/**
 * PERSISTENT RESERVE IN (5Eh) and PERSISTENT RESERVE OUT (5Fh) handlers, SPC-4 6.15 and 6.16.
 * The dispatch table has one row per service action; the dispatcher has already refused them
 * while a RESERVE(6) reservation exists (SPC-2 5.5.1) and made them wait for the unit's state
 * to be loaded.
 *
 * PERSISTENT RESERVE OUT through a read-only mapping is DATA PROTECT / WRITE PROTECTED: an
 * agent that may not write must not fence the writers out either (a read-only agent holding an
 * Exclusive Access reservation, or clearing the writers' registrations, would be a denial of
 * service). PERSISTENT RESERVE IN works through any mapping.
 *
 * PREEMPT AND ABORT (SPC-4 5.13.11.2.6), best effort: running commands cannot be cancelled
 * (a volume call is not interruptible), so instead of aborting the preempted nexuses' commands
 * it makes them harmless. The new state is committed first, so every command that starts from
 * then on is checked against the new reservation; then GOOD waits until every medium access of
 * the unit that started before has settled (the unit's gate, ../commands/io-gate.ts). Once
 * PREEMPT AND ABORT returns GOOD, no read or write admitted under the old reservation is still
 * running. Those commands complete with their own status (not TASK ABORTED), and no COMMANDS
 * CLEARED BY ANOTHER INITIATOR unit attention is raised.
 */
import { dataIn, failureResult, goodWithDataOut, requireDataOut } from "../commands/common.js";
import { gateOf, WHOLE_UNIT } from "../commands/io-gate.js";
import { ScsiStatus } from "../constants.js";
import type { LunContext, LunHandler } from "../context.js";
import { writeProtected } from "../sense.js";
import type { ScsiCommand, ScsiResult } from "../types.js";
import { PrOut } from "./constants.js";
import { readFullStatus, readKeys, readReservation, reportCapabilities } from "./in.js";
import { applyProut } from "./out.js";
import { decodeProutCdb, type ProutRequest, parseProutParameters } from "./request.js";
import { prNexusOf } from "./state.js";
import type { PersistentReservations } from "./unit.js";

/** A PERSISTENT RESERVE IN service action: the parameter data, cut to ALLOCATION LENGTH. */
export function persistentReserveIn(build: (pr: PersistentReservations) => Buffer): LunHandler {
  return (cmd, lu) => dataIn(build(lu.unit.pr), cmd.cdb.readUInt16BE(7));
}

export const prInReadKeys = persistentReserveIn((pr) => readKeys(pr.state));
export const prInReadReservation = persistentReserveIn((pr) => readReservation(pr.state));
export const prInReportCapabilities = persistentReserveIn((pr) =>
  reportCapabilities(pr.state, pr.aptplSupported),
);
export const prInReadFullStatus = persistentReserveIn((pr) => readFullStatus(pr.state));

/** Every PERSISTENT RESERVE OUT service action. */
export const persistentReserveOut: LunHandler = (cmd, lu) => {
  const length = cmd.cdb.readUInt32BE(5);
  try {
    const d = decodeProutCdb(cmd.cdb);
    if (lu.entry.readOnly) throw writeProtected();
    const data = requireDataOut(cmd, d.parameterListLength);
    const req = parseProutParameters(d, data, lu.unit.pr.aptplSupported);
    return lu.unit.pr.serialize(() => execute(cmd, lu, req, length));
  } catch (err) {
    return failureResult(err, cmd, lu, length);
  }
};

async function execute(
  cmd: ScsiCommand,
  lu: LunContext,
  req: ProutRequest,
  length: number,
): Promise<ScsiResult> {
  const pr = lu.unit.pr;
  try {
    const identity = lu.nexus.identity;
    const result = applyProut(pr.state, prNexusOf(identity), req, {
      targetPorts: pr.targetPorts(identity),
    });
    if (result.status === "conflict") {
      return { status: ScsiStatus.RESERVATION_CONFLICT, dataOutLength: length };
    }
    await pr.commit(result.state);
    pr.notify(result.attentions, lu.nexus);
    if (req.action === PrOut.PREEMPT_AND_ABORT) {
      await gateOf(lu.unit).exclusive(WHOLE_UNIT, async () => undefined);
    }
    return goodWithDataOut(length);
  } catch (err) {
    return failureResult(err, cmd, lu, length);
  }
}
