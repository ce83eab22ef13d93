import { stringify } from "csv-stringify/sync";
import type { Item, RejectItem, RowItem, Source } from "./items";
import type { ImportPlan } from "./plan";
import type { Sink } from "./sink";
import { DEFAULT_RETRY, ImportStopped, type Retry, type TokenizeCall, tokenizeRows } from "./tokenize";

export interface Counts {
  /** Input records read (this run, after any skipped on resume). */
  rowsIn: number;
  /** Rows written with tokens. */
  tokenized: number;
  rejected: number;
  /** Values tokenized (fields sent and accepted). */
  fields: number;
  calls: number;
}

/** Where the import stands after a commit: what the sidecar records. */
export interface Commit {
  records: number;
  outputBytes: number;
  rejectsBytes: number;
  tokenized: number;
  rejected: number;
}

export interface PipelineDeps {
  plan: ImportPlan;
  source: Source;
  call: TokenizeCall;
  out: Sink;
  /** Rejects: line, column and reason of each rejected record, never its value. */
  rejects: Sink;
  /** How rejects are written (default CSV records `line,column,reason`). */
  rejectText?: (rejects: readonly RejectItem[]) => string;
  /** Input records already in the output (resume): read and skipped, never sent. */
  skip: number;
  /** Totals of the earlier runs (resume), so commits carry the whole import's figures. */
  earlier: { tokenized: number; rejected: number };
  /** Whether to write the preamble (CSV header): only for a fresh output. */
  fresh: boolean;
  /** Makes the sinks durable and records the commit (the sidecar); none for stdout. */
  commit?: (c: Commit) => Promise<void>;
  /** Called after every write, for progress. */
  progress?: (c: Counts) => void;
  /** Checked before each read: true once an interrupt asked the import to stop. */
  stopping?: () => boolean;
  retry?: Retry;
}

export type Outcome = { kind: "complete"; counts: Counts } | { kind: "interrupted"; counts: Counts } | { kind: "stopped"; counts: Counts; error: Error };

interface Chunk {
  items: Item[];
  done: Promise<{ text: string; rejects: RejectItem[]; tokenized: number; fields: number; calls: number }>;
}

export const rejectsCsv = (rejects: readonly RejectItem[]) => stringify(rejects.map((x) => [x.line, x.column, x.reason]));

/** For a terminal or log: `import: line 12, column card: card_number: fails the Luhn check`. */
export const rejectsText = (rejects: readonly RejectItem[]) =>
  rejects.map((x) => `import: rejected line ${x.line}${x.column ? `, column ${x.column}` : ""}: ${x.reason}\n`).join("");

const UNICODE = /[\p{Cs}\uFFFD]/u; // lone surrogates (not encodable) or U+FFFD (the input was not valid UTF-8)

/** A counting semaphore: at most `n` Tokenize calls in flight, whatever the grouping. */
function limiter(n: number) {
  let free = n;
  const waiting: (() => void)[] = [];
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (free > 0) free--;
    else await new Promise<void>((r) => waiting.push(r));
    try {
      return await fn();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else free++;
    }
  };
}

/**
 * Reads records, tokenizes them in batches with several calls in flight, and writes them out in
 * input order. Memory stays flat: at most 2 × concurrency chunks of `batchRows` records exist at
 * once (reading waits for the oldest chunk to be written, writing waits for the sink).
 *
 * A chunk is `batchRows` consecutive records. Without a subject column it is one Tokenize call;
 * with one, its rows are grouped by subject and each group is one call (Tokenize carries one
 * subject_ref), so a file sorted by subject still batches well.
 */
export async function runPipeline(d: PipelineDeps): Promise<Outcome> {
  const { plan } = d;
  const run = limiter(plan.concurrency);
  const counts: Counts = { rowsIn: 0, tokenized: 0, rejected: 0, fields: 0, calls: 0 };
  let records = d.skip;
  const queue: Chunk[] = [];
  let failure: Error | undefined;

  const subjectColumn = plan.subjectColumn ?? "";

  function dispatch(items: Item[]): Chunk {
    const rows: RowItem[] = [];
    const early = new Map<Item, RejectItem>();
    for (const item of items) {
      if (item.kind === "reject") continue;
      const bad = item.fields.find((f) => UNICODE.test(f.value));
      if (bad) early.set(item, { kind: "reject", line: item.line, column: bad.column, reason: "not valid UTF-8 text" });
      else rows.push(item);
    }
    const groups = new Map<string, RowItem[]>();
    for (const r of rows) {
      const group = groups.get(r.subject);
      if (group) group.push(r);
      else groups.set(r.subject, [r]);
    }
    const done = Promise.all([...groups].map(([ref, group]) => run(() => tokenizeRows(d.call, group, { ref, column: subjectColumn }, d.retry ?? DEFAULT_RETRY)))).then((results) => {
      const tokens = new Map<RowItem, string[]>();
      const rejectedRows = new Map<Item, RejectItem>(early);
      let calls = 0;
      for (const r of results) {
        calls += r.calls;
        for (const [row, t] of r.tokens) tokens.set(row, t);
        for (const x of r.rejected) rejectedRows.set(x.row, { kind: "reject", line: x.row.line, column: x.column, reason: x.reason });
      }
      let text = "";
      const rejects: RejectItem[] = [];
      let tokenized = 0;
      let fields = 0;
      for (const item of items) {
        const reject = item.kind === "reject" ? item : rejectedRows.get(item);
        if (reject) rejects.push(reject);
        else {
          const row = item as RowItem;
          const t = tokens.get(row)!;
          text += row.render(t);
          tokenized++;
          fields += t.length;
        }
      }
      return { text, rejects, tokenized, fields, calls };
    });
    done.catch(() => undefined); // observed when the chunk is written
    return { items, done };
  }

  /** Writes the oldest chunk; a failed chunk stops the import after everything before it is written. */
  async function writeOldest(): Promise<void> {
    const chunk = queue.shift()!;
    let r: Awaited<Chunk["done"]>;
    try {
      r = await chunk.done;
    } catch (err) {
      failure ??= err as Error;
      return;
    }
    if (failure) return; // an earlier chunk failed: nothing after it may be written (no gap)
    await d.out.write(r.text);
    if (r.rejects.length) await d.rejects.write((d.rejectText ?? rejectsCsv)(r.rejects));
    records += chunk.items.length;
    counts.tokenized += r.tokenized;
    counts.rejected += r.rejects.length;
    counts.fields += r.fields;
    counts.calls += r.calls;
    await d.commit?.(commitOf());
    d.progress?.(counts);
  }

  const commitOf = (): Commit => ({
    records,
    outputBytes: d.out.bytes,
    rejectsBytes: d.rejects.bytes,
    tokenized: d.earlier.tokenized + counts.tokenized,
    rejected: d.earlier.rejected + counts.rejected,
  });

  try {
    if (d.fresh) {
      await d.out.write(await d.source.preamble());
      await d.commit?.(commitOf());
    } else await d.source.preamble();

    let skipped = 0;
    let pending: Item[] = [];
    let interrupted = false;
    for await (const item of d.source.items) {
      if (skipped < d.skip) {
        skipped++;
        continue;
      }
      if (failure) break;
      if (d.stopping?.()) {
        interrupted = true;
        break;
      }
      counts.rowsIn++;
      pending.push(item);
      if (pending.length < plan.batchRows) continue;
      queue.push(dispatch(pending));
      pending = [];
      while (queue.length >= 2 * plan.concurrency || (queue.length && failure)) await writeOldest();
    }
    if (skipped < d.skip) throw new ImportStopped(`the input has ${skipped} records, fewer than the ${d.skip} already imported: is it the same file?`, false);
    if (pending.length && !failure) queue.push(dispatch(pending));
    while (queue.length) await writeOldest();
    if (failure) return { kind: "stopped", counts, error: failure };
    return interrupted ? { kind: "interrupted", counts } : { kind: "complete", counts };
  } catch (err) {
    // Calls already in flight finish (nothing is abandoned mid-call); what they return is not written.
    await Promise.allSettled(queue.map((c) => c.done));
    return { kind: "stopped", counts, error: err as Error };
  }
}
