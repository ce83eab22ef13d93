import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { setHeapGrowth } from "../../src/runtime/heap";

/**
 * FIELDVAULT_HEAP_GROWING_PERCENT (runtime/heap.ts) is what keeps the vault's RSS near its live set
 * under many concurrent batch calls. What an operator relies on: with the default (100) a process
 * that keeps a live set and churns medium-lived garbage — the shape of a busy vault — holds a much
 * smaller heap than with V8's adaptive factor (0), and it still grows past that when the live set
 * needs it (a factor, not a limit).
 */
const heap = join(__dirname, "..", "..", "src", "runtime", "heap.ts");
function peakHeapMb(percent: number, liveItems: number): number {
  const body = `
    const v8 = require("node:v8");
    require(${JSON.stringify(heap)}).setHeapGrowth(${percent});
    const live = []; for (let i = 0; i < ${liveItems}; i++) live.push({ a: i, s: "x" + i, b: [i] });
    const ring = new Array(100000); let peak = 0;
    for (let i = 0; i < 3000000; i++) {
      ring[i % 100000] = { i, s: "y" + i, arr: [i, i + 1] };
      if (i % 10000 === 0) peak = Math.max(peak, v8.getHeapStatistics().total_heap_size);
    }
    console.log(JSON.stringify({ peak, live: live.length }));`;
  const r = spawnSync(process.execPath, ["--import", "tsx", "-e", body], { encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) throw new Error(`child failed: ${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split("\n").pop() as string) as { peak: number; live: number };
  expect(out.live).toBe(liveItems);
  return out.peak / 1048576;
}

describe("heap growing percent", () => {
  it("keeps the heap well below V8's adaptive growth for the same live set and churn", () => {
    const adaptive = peakHeapMb(0, 300_000);
    const fixed = peakHeapMb(100, 300_000);
    expect(fixed).toBeLessThan(adaptive * 0.8);
  });

  it("is a growth factor, not a cap: the heap still grows with a larger live set", () => {
    expect(peakHeapMb(100, 900_000)).toBeGreaterThan(peakHeapMb(100, 300_000));
  });

  it.each([-1, 301, 1.5, Number.NaN])("rejects %p without touching V8's flags", (p) => {
    expect(() => setHeapGrowth(p)).toThrow(RangeError);
  });
});
