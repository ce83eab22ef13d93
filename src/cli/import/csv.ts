import type { Readable } from "node:stream";
import { type CsvError, parse } from "csv-parse";
import { stringify } from "csv-stringify/sync";
import type { ImportPlan } from "./plan";
import { type Item, MAX_RECORD_BYTES, type RowItem, type Source } from "./items";
import { UsageError } from "./plan";

/** Reasons for a malformed CSV record, from csv-parse's error code (its messages quote input). */
const PARSE_REASONS: Record<string, string> = {
  CSV_QUOTE_NOT_CLOSED: "quote not closed before the end of the file (the rest of the file is one unterminated field)",
  CSV_MAX_RECORD_SIZE: `record longer than ${MAX_RECORD_BYTES} bytes (an unclosed quote?)`,
};

const newlines = (cells: readonly string[]) => cells.reduce((n, c) => n + (c.includes("\n") ? c.split("\n").length - 1 : 0), 0);

/**
 * CSV with a header row, parsed by csv-parse (RFC 4180: quoted fields, embedded delimiters,
 * quotes and newlines; comma-delimited). Output records are written by csv-stringify with the
 * input's line ending, quoting only where needed: every cell's value comes out exactly as it went in.
 */
export function csvSource(input: Readable, plan: ImportPlan): Source {
  const parser = input.pipe(
    parse({
      bom: true,
      info: true,
      relax_column_count: true, // a short or long record is rejected here, not a parser failure
      relax_quotes: true, // a stray quote inside an unquoted field is kept as a character
      skip_empty_lines: true,
      max_record_size: MAX_RECORD_BYTES,
    }),
  );
  input.on("error", (err) => parser.destroy(err));
  let eol = "\n";
  // The input's line ending (that of its first line) is kept for every output record.
  input.once("data", (chunk: Buffer | string) => {
    const text = typeof chunk === "string" ? chunk : chunk.toString("latin1", 0, Math.min(chunk.length, MAX_RECORD_BYTES));
    const nl = text.indexOf("\n");
    if (nl > 0 && text[nl - 1] === "\r") eol = "\r\n";
  });
  const iterator = parser[Symbol.asyncIterator]() as AsyncIterator<{ record: string[]; info: { lines: number } }>;
  let header: string[] | undefined;
  let indexes: number[] = [];
  let subjectIndex = -1;

  const render = (cells: string[]) => stringify([cells], { record_delimiter: eol, eof: true });

  async function readHeader(): Promise<string[]> {
    if (header) return header;
    const first = await iterator.next();
    if (first.done) throw new UsageError("the CSV input is empty (no header row)");
    header = first.value.record;
    indexes = plan.columns.map((c) => {
      const i = header!.indexOf(c.column);
      if (i < 0) throw new UsageError(`--map ${c.column}=${c.category}: no column ${c.column} in the header`);
      // Else the second copy would be written out in plaintext.
      if (header!.lastIndexOf(c.column) !== i) throw new UsageError(`--map ${c.column}=${c.category}: the header names ${c.column} more than once`);
      return i;
    });
    if (plan.subjectColumn !== undefined) {
      subjectIndex = header.indexOf(plan.subjectColumn);
      if (subjectIndex < 0) throw new UsageError(`--subject-column ${plan.subjectColumn}: no such column in the header`);
    }
    return header;
  }

  async function* items(): AsyncGenerator<Item> {
    await readHeader();
    const width = header!.length;
    for (;;) {
      let next: IteratorResult<{ record: string[]; info: { lines: number } }>;
      try {
        next = await iterator.next();
      } catch (err) {
        const e = err as CsvError;
        if (typeof e.code !== "string" || !e.code.startsWith("CSV_")) throw err;
        yield { kind: "reject", line: (e as { lines?: number }).lines ?? 0, column: "", reason: PARSE_REASONS[e.code] ?? `malformed CSV (${e.code})` };
        return;
      }
      if (next.done) return;
      const { record, info } = next.value;
      const line = info.lines - newlines(record);
      if (record.length !== width) {
        yield { kind: "reject", line, column: "", reason: `${record.length} fields where the header has ${width}` };
        continue;
      }
      const fields: RowItem["fields"] = [];
      const at: number[] = [];
      plan.columns.forEach((c, k) => {
        const value = record[indexes[k]!]!;
        if (value === "") return;
        fields.push({ column: c.column, category: c.category, value, preserving: c.preserving });
        at.push(indexes[k]!);
      });
      yield {
        kind: "row",
        line,
        fields,
        subject: subjectIndex >= 0 ? record[subjectIndex]! : "",
        render(tokens) {
          const cells = record.slice();
          at.forEach((i, k) => (cells[i] = tokens[k]!));
          return render(cells);
        },
      };
    }
  }

  return {
    async preamble() {
      return render(await readHeader());
    },
    items: items(),
  };
}
