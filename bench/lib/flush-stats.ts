/**
 * The commit path's shape over a measured window, from the vault's own /metrics: how many calls
 * shared each flush, and how long a call's entries waited before their flush started. Histogram
 * deltas between two scrapes; quantiles are bucket upper bounds ("≤ x").
 */

export type Buckets = Map<string, Map<number, number>>;

export async function scrapeBuckets(metricsAddress: string, families: string[]): Promise<Buckets> {
  const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
  const out: Buckets = new Map(families.map((f) => [f, new Map<number, number>()]));
  for (const line of text.split("\n")) {
    const m = /^(\w+)_bucket\{(?:[^}]*,)?le="([^"]+)"[^}]*\} (\S+)$/.exec(line);
    if (!m || !out.has(m[1]!)) continue;
    const le = m[2] === "+Inf" ? Infinity : Number(m[2]);
    out.get(m[1]!)!.set(le, (out.get(m[1]!)!.get(le) ?? 0) + Number(m[3]));
  }
  return out;
}

export interface Distribution {
  count: number;
  p50: number;
  p90: number;
  p99: number;
}

/** Quantiles of the observations made between two scrapes of one histogram family. */
export function between(a: Buckets, b: Buckets, family: string): Distribution {
  const before = a.get(family) ?? new Map<number, number>();
  const after = [...(b.get(family) ?? new Map<number, number>()).entries()].sort((x, y) => x[0] - y[0]);
  const cum = after.map(([le, n]) => [le, n - (before.get(le) ?? 0)] as const);
  const total = cum.length ? cum[cum.length - 1]![1] : 0;
  const q = (p: number) => cum.find(([, n]) => n >= p * total)?.[0] ?? NaN;
  return { count: total, p50: q(0.5), p90: q(0.9), p99: q(0.99) };
}
