/**
 * What one `fieldvault import` run does, decided once from the command line: which columns go to
 * which category, in which token format, and how the rows are read and batched. Pure: no I/O.
 */
export type Format = "csv" | "jsonl";

export interface MappedColumn {
  column: string;
  category: string;
  /** `--token-format COLUMN=preserving` (DESIGN §13): a card token shaped like a card number. */
  preserving: boolean;
}

export interface ImportPlan {
  format: Format;
  columns: MappedColumn[];
  subjectColumn?: string;
  /** Input rows per Tokenize call. */
  batchRows: number;
  /** Tokenize calls in flight. */
  concurrency: number;
}

/** The vault's default FIELDVAULT_MAX_BATCH: fields per Tokenize call. */
export const DEFAULT_MAX_FIELDS = 1000;
export const DEFAULT_BATCH_ROWS = 500;
export const DEFAULT_CONCURRENCY = 4;
/**
 * With a subject column most calls carry one row (Tokenize takes one subject_ref), so they are
 * small and latency-bound: more of them in flight (measured: 16 doubles the rate of 4).
 */
export const DEFAULT_SUBJECT_CONCURRENCY = 16;

export class UsageError extends Error {}

function pairs(option: string, items: readonly string[]): [string, string][] {
  return items.map((item) => {
    const at = item.lastIndexOf("=");
    if (at <= 0 || at === item.length - 1) throw new UsageError(`${option} ${item}: expected COLUMN=VALUE`);
    return [item.slice(0, at), item.slice(at + 1)];
  });
}

/** `--format` when given, else from the file name (`.csv`, `.jsonl`/`.ndjson`). */
export function guessFormat(given: string | undefined, input: string): Format {
  if (given !== undefined) {
    if (given !== "csv" && given !== "jsonl") throw new UsageError(`--format ${given}: expected csv or jsonl`);
    return given;
  }
  const lower = input.toLowerCase();
  if (lower.endsWith(".csv")) return "csv";
  if (lower.endsWith(".jsonl") || lower.endsWith(".ndjson")) return "jsonl";
  throw new UsageError(input === "-" ? "reading stdin: say --format csv or --format jsonl" : `${input}: cannot tell the format from the name; say --format csv or --format jsonl`);
}

function positive(option: string, v: string | undefined, fallback: number, max: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new UsageError(`${option} ${v}: expected a whole number from 1 to ${max}`);
  return n;
}

export function makePlan(o: {
  map: readonly string[];
  tokenFormat?: readonly string[];
  subjectColumn?: string;
  format?: string;
  batch?: string;
  concurrency?: string;
  input: string;
}): ImportPlan {
  if (!o.map.length) throw new UsageError("--map COLUMN=CATEGORY: at least one column to tokenize");
  const columns: MappedColumn[] = [];
  for (const [column, category] of pairs("--map", o.map)) {
    if (columns.some((c) => c.column === column)) throw new UsageError(`--map ${column}: column mapped twice`);
    columns.push({ column, category, preserving: false });
  }
  for (const [column, shape] of pairs("--token-format", o.tokenFormat ?? [])) {
    const c = columns.find((m) => m.column === column);
    if (!c) throw new UsageError(`--token-format ${column}: not a --map column`);
    if (shape !== "preserving" && shape !== "opaque") throw new UsageError(`--token-format ${column}=${shape}: expected preserving or opaque`);
    c.preserving = shape === "preserving";
  }
  if (o.subjectColumn !== undefined && columns.some((c) => c.column === o.subjectColumn)) {
    throw new UsageError(`--subject-column ${o.subjectColumn}: the subject reference is sent as is, it cannot also be tokenized`);
  }
  const fallbackRows = Math.max(1, Math.min(DEFAULT_BATCH_ROWS, Math.floor(DEFAULT_MAX_FIELDS / columns.length)));
  return {
    format: guessFormat(o.format, o.input),
    columns,
    subjectColumn: o.subjectColumn,
    batchRows: positive("--batch", o.batch, fallbackRows, 100_000),
    concurrency: positive("--concurrency", o.concurrency, o.subjectColumn === undefined ? DEFAULT_CONCURRENCY : DEFAULT_SUBJECT_CONCURRENCY, 64),
  };
}
