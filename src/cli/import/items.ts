/** What the readers hand the pipeline, one per input record, in input order. */

/** One value to tokenize: the mapped column it came from. */
export interface FieldToTokenize {
  column: string;
  category: string;
  value: string;
  preserving: boolean;
}

export interface RowItem {
  kind: "row";
  /** 1-based line where the record starts. */
  line: number;
  /** Non-empty mapped values; empty cells are left empty and not sent. */
  fields: FieldToTokenize[];
  /** The data subject's reference ("" when none). */
  subject: string;
  /** The output record with each field's token in place of its value (same order as `fields`). */
  render(tokens: readonly string[]): string;
}

export interface RejectItem {
  kind: "reject";
  line: number;
  /** The column at fault, or "" when the record itself is malformed. */
  column: string;
  /** Why, never the value. */
  reason: string;
}

export type Item = RowItem | RejectItem;

/** A reader: the verbatim preamble (CSV header) and the records. */
export interface Source {
  /** Written once at the start of a fresh output (the CSV header line); "" for JSONL. */
  preamble(): Promise<string>;
  items: AsyncIterable<Item>;
}

/** The longest record a reader holds in memory; a longer one is rejected (memory stays flat). */
export const MAX_RECORD_BYTES = 1024 * 1024;
