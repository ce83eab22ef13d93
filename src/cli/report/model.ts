/**
 * The incident report's numbers, computed from access-log entries as the AccessLog API returns them.
 * Pure: no I/O, so the figures the HTML shows can be checked against the entries they came from.
 */

export interface ReportEntry {
  sequence: number;
  time: Date;
  caller: string;
  action: string;
  category: string;
  purpose: string;
  outcome: string;
  token: string;
  detail: string;
}

export interface ReportVerify {
  ok: boolean;
  entriesChecked: number;
  checkpointsChecked: number;
  unsealedEntries: number;
  firstBrokenSequence: number;
  problem: string;
  detail: string;
}

export interface Series {
  name: string;
  /** One count per bucket, in bucket order. */
  counts: number[];
}

export interface ReportModel {
  since: Date;
  until: Date;
  by?: string;
  generatedAt: Date;
  bucketMs: number;
  /** Start of each bucket. */
  buckets: Date[];
  entries: number;
  reveals: number;
  /** Allowed reveals per caller over time (callers with the most reveals first). */
  revealsByCaller: Series[];
  /** Denials and rate limits over time. */
  refusals: Series[];
  /** Allowed reveals by caller × category × purpose, most first. */
  top: { caller: string; category: string; purpose: string; count: number }[];
  breakGlass: ReportEntry[];
  keyAdmin: ReportEntry[];
  verify?: ReportVerify;
}

const NICE_BUCKETS_MS = [60_000, 5 * 60_000, 15 * 60_000, 3_600_000, 6 * 3_600_000, 86_400_000, 7 * 86_400_000];

/** The smallest "nice" bucket that keeps the timeline at most `maxBuckets` wide. */
export function bucketFor(rangeMs: number, maxBuckets = 60): number {
  return NICE_BUCKETS_MS.find((b) => rangeMs / b <= maxBuckets) ?? Math.ceil(rangeMs / maxBuckets);
}

export const isReveal = (e: ReportEntry) => e.action === "detokenize" && e.outcome === "allowed";
const isRefusal = (e: ReportEntry) => e.action === "detokenize" && (e.outcome === "denied" || e.outcome === "rate_limited");
/** Break-glass requests, approvals, refusals and reveals (the grant id is in the entry's detail). */
export const isBreakGlass = (e: ReportEntry) => e.action.startsWith("break_glass") || /break[_-]glass/.test(e.detail);
/** Key administration that changes something (listing keys is not an action worth a row). */
export const isKeyAdmin = (e: ReportEntry) => e.action.startsWith("key_") && e.action !== "key_list";

export function buildReport(input: {
  entries: ReportEntry[];
  since: Date;
  until: Date;
  by?: string;
  verify?: ReportVerify;
  now?: Date;
  maxCallers?: number;
}): ReportModel {
  const { since, until } = input;
  const rangeMs = Math.max(1, until.getTime() - since.getTime());
  const bucketMs = bucketFor(rangeMs);
  const first = Math.floor(since.getTime() / bucketMs) * bucketMs;
  const n = Math.max(1, Math.ceil((until.getTime() - first) / bucketMs));
  const buckets = Array.from({ length: n }, (_, i) => new Date(first + i * bucketMs));
  const slot = (t: Date) => Math.min(n - 1, Math.max(0, Math.floor((t.getTime() - first) / bucketMs)));
  const inRange = input.entries.filter((e) => e.time >= since && e.time < until);

  const perCaller = new Map<string, number[]>();
  const refusals = { denied: new Array<number>(n).fill(0), rate_limited: new Array<number>(n).fill(0) };
  const top = new Map<string, { caller: string; category: string; purpose: string; count: number }>();
  let reveals = 0;
  for (const e of inRange) {
    if (isReveal(e)) {
      reveals++;
      const counts = perCaller.get(e.caller) ?? new Array<number>(n).fill(0);
      counts[slot(e.time)]!++;
      perCaller.set(e.caller, counts);
      const key = JSON.stringify([e.caller, e.category, e.purpose]);
      const row = top.get(key) ?? { caller: e.caller, category: e.category, purpose: e.purpose, count: 0 };
      row.count++;
      top.set(key, row);
    } else if (isRefusal(e)) {
      refusals[e.outcome as "denied" | "rate_limited"][slot(e.time)]!++;
    }
  }
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const byCaller = [...perCaller.entries()]
    .map(([name, counts]) => ({ name, counts }))
    .sort((a, b) => sum(b.counts) - sum(a.counts) || a.name.localeCompare(b.name));
  const maxCallers = input.maxCallers ?? 8;
  if (byCaller.length > maxCallers) {
    const rest = byCaller.splice(maxCallers - 1);
    byCaller.push({ name: `${rest.length} other callers`, counts: buckets.map((_, i) => sum(rest.map((s) => s.counts[i]!))) });
  }
  const chrono = (a: ReportEntry, b: ReportEntry) => a.time.getTime() - b.time.getTime() || a.sequence - b.sequence;
  return {
    since,
    until,
    by: input.by,
    generatedAt: input.now ?? new Date(),
    bucketMs,
    buckets,
    entries: inRange.length,
    reveals,
    revealsByCaller: byCaller,
    refusals: [
      { name: "denied", counts: refusals.denied },
      { name: "rate_limited", counts: refusals.rate_limited },
    ],
    top: [...top.values()].sort((a, b) => b.count - a.count || a.caller.localeCompare(b.caller)).slice(0, 50),
    breakGlass: inRange.filter(isBreakGlass).sort(chrono),
    keyAdmin: inRange.filter(isKeyAdmin).sort(chrono),
    verify: input.verify,
  };
}
