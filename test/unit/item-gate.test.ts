import { ItemGate } from "../../src/services/item-gate";

/** A piece of work that finishes when the test says so, recording when it started. */
function held(log: string[], name: string) {
  let finish!: () => void;
  let fail!: (e: Error) => void;
  const done = new Promise<string>((resolve, reject) => {
    finish = () => resolve(name);
    fail = reject;
  });
  return { work: () => (log.push(name), done), finish: () => finish(), fail: (e: Error) => fail(e) };
}
const tick = () => new Promise((r) => setImmediate(r));

describe("ItemGate", () => {
  it("admits calls while their items fit, holds the rest first come first served, and admits them as items are released", async () => {
    const gate = new ItemGate(10);
    const started: string[] = [];
    const a = held(started, "a");
    const b = held(started, "b");
    const c = held(started, "c");
    const d = held(started, "d");
    const runs = [gate.run(6, a.work), gate.run(6, b.work), gate.run(1, c.work), gate.run(5, d.work)];
    await tick();
    // b does not fit beside a; c would, but it came after b and waits its turn.
    expect(started).toEqual(["a"]);
    expect(gate.state).toEqual({ inUse: 6, waiting: 3 });
    a.finish();
    await tick();
    // b (6) and c (1) fit together; d (5) would make 12, and still 11 once c is done.
    expect(started).toEqual(["a", "b", "c"]);
    c.finish();
    await tick();
    expect(started).toEqual(["a", "b", "c"]);
    b.finish();
    await tick();
    expect(started).toEqual(["a", "b", "c", "d"]);
    d.finish();
    await expect(Promise.all(runs)).resolves.toEqual(["a", "b", "c", "d"]);
    expect(gate.state).toEqual({ inUse: 0, waiting: 0 });
  });

  it("runs a call larger than the limit alone instead of never", async () => {
    const gate = new ItemGate(10);
    const started: string[] = [];
    const small = held(started, "small");
    const big = held(started, "big");
    const runs = [gate.run(2, small.work), gate.run(50, big.work)];
    await tick();
    expect(started).toEqual(["small"]);
    small.finish();
    await tick();
    expect(started).toEqual(["small", "big"]);
    expect(gate.state.inUse).toBe(50);
    big.finish();
    await Promise.all(runs);
    expect(gate.state).toEqual({ inUse: 0, waiting: 0 });
  });

  it("releases a failed call's items", async () => {
    const gate = new ItemGate(5);
    const started: string[] = [];
    const bad = held(started, "bad");
    const next = held(started, "next");
    const failed = gate.run(5, bad.work);
    const after = gate.run(5, next.work);
    await tick();
    bad.fail(new Error("boom"));
    await expect(failed).rejects.toThrow("boom");
    await tick();
    expect(started).toEqual(["bad", "next"]);
    next.finish();
    await after;
    expect(gate.state).toEqual({ inUse: 0, waiting: 0 });
  });

  it.each([0, -1, 1.5])("refuses a limit of %p", (n) => {
    expect(() => new ItemGate(n)).toThrow(RangeError);
  });
});
