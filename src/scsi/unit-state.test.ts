import { describe, expect, it } from "vitest";
import { Asc } from "./asc.js";
import { Limits, SenseKey } from "./constants.js";
import { LogicalUnitState } from "./unit-state.js";

describe("LogicalUnitState", () => {
  it("keeps unit attentions per nexus, FIFO, without duplicates", () => {
    const unit = new LogicalUnitState("v");
    const a = {};
    const b = {};
    expect(unit.hasPending).toBe(false);
    unit.addUnitAttention(a, Asc.CAPACITY_DATA_HAS_CHANGED);
    unit.addUnitAttention(a, Asc.MODE_PARAMETERS_CHANGED);
    unit.addUnitAttention(a, Asc.CAPACITY_DATA_HAS_CHANGED);
    expect(unit.pendingUnitAttentions(a)).toEqual([
      Asc.CAPACITY_DATA_HAS_CHANGED,
      Asc.MODE_PARAMETERS_CHANGED,
    ]);
    expect(unit.pendingUnitAttentions(b)).toEqual([]);
    expect(unit.takeUnitAttention(a)).toEqual({
      key: SenseKey.UNIT_ATTENTION,
      asc: Asc.CAPACITY_DATA_HAS_CHANGED,
    });
    expect(unit.takeUnitAttention(b)).toBeUndefined();
    unit.clearUnitAttention(a, Asc.MODE_PARAMETERS_CHANGED);
    expect(unit.hasPending).toBe(false);
  });

  it("puts reset conditions first and keeps only the latest one", () => {
    const unit = new LogicalUnitState("v");
    const a = {};
    unit.addUnitAttention(a, Asc.MODE_PARAMETERS_CHANGED);
    unit.addUnitAttention(a, Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED);
    unit.addUnitAttention(a, Asc.POWER_ON_RESET_OCCURRED);
    expect(unit.pendingUnitAttentions(a)).toEqual([
      Asc.POWER_ON_RESET_OCCURRED,
      Asc.MODE_PARAMETERS_CHANGED,
    ]);
  });

  it("bounds the queue, dropping the oldest non-reset condition", () => {
    const unit = new LogicalUnitState("v");
    const a = {};
    unit.addUnitAttention(a, Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED);
    for (let i = 0; i < Limits.MAX_PENDING_UNIT_ATTENTIONS + 4; i++)
      unit.addUnitAttention(a, 0x3f00 + i);
    const pending = unit.pendingUnitAttentions(a);
    expect(pending.length).toBe(Limits.MAX_PENDING_UNIT_ATTENTIONS);
    expect(pending[0]).toBe(Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED);
    expect(pending.at(-1)).toBe(0x3f00 + Limits.MAX_PENDING_UNIT_ATTENTIONS + 3);
  });

  it("reports deferred errors before unit attentions", () => {
    const unit = new LogicalUnitState("v");
    const a = {};
    unit.addUnitAttention(a, Asc.MODE_PARAMETERS_CHANGED);
    unit.addDeferredError(a, { key: SenseKey.MEDIUM_ERROR, asc: Asc.WRITE_ERROR });
    expect(unit.takeReportable(a)).toEqual({
      key: SenseKey.MEDIUM_ERROR,
      asc: Asc.WRITE_ERROR,
      deferred: true,
    });
    expect(unit.takeReportable(a)?.asc).toBe(Asc.MODE_PARAMETERS_CHANGED);
    expect(unit.takeReportable(a)).toBeUndefined();
  });

  it("reset releases the reservation; forgetting a nexus drops its state and reservation", () => {
    const unit = new LogicalUnitState("v");
    const a = {};
    const b = {};
    unit.reservationHolder = a;
    unit.reset([a, b]);
    expect(unit.reservationHolder).toBeUndefined();
    expect(unit.pendingUnitAttentions(b)).toEqual([Asc.BUS_DEVICE_RESET_FUNCTION_OCCURRED]);
    unit.reservationHolder = b;
    unit.forgetNexus(b);
    expect(unit.reservationHolder).toBeUndefined();
    expect(unit.pendingUnitAttentions(b)).toEqual([]);
  });
});
