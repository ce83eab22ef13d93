import type { Readable } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import { type Item, MAX_RECORD_BYTES, type RowItem, type Source } from "./items";
import type { ImportPlan } from "./plan";

/** Splits a stream into lines (without their "\n"); a line longer than `max` is reported, not held. */
export async function* lines(input: Readable, max = MAX_RECORD_BYTES): AsyncGenerator<string | { tooLong: true }> {
  const decoder = new StringDecoder("utf8");
  let pending = "";
  let skipping = false;
  for await (const chunk of input) {
    let text = pending + (typeof chunk === "string" ? chunk : decoder.write(chunk as Buffer));
    pending = "";
    let start = 0;
    for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", start)) {
      if (skipping) skipping = false;
      else yield nl - start > max ? { tooLong: true } : text.slice(start, nl);
      start = nl + 1;
    }
    text = text.slice(start);
    if (skipping) continue;
    if (text.length > max) {
      yield { tooLong: true };
      skipping = true;
    } else pending = text;
  }
  const rest = pending + decoder.end();
  if (!skipping && rest !== "") yield rest;
}

const WS = new Set([" ", "\t", "\n", "\r"]);

/** End (exclusive) of the JSON string literal starting at `i`. */
function stringEnd(s: string, i: number): number {
  for (let j = i + 1; ; j++) {
    const c = s[j];
    if (c === "\\") j++;
    else if (c === '"') return j + 1;
  }
}

/** End (exclusive) of the JSON value starting at `i` (the text is already known to be valid JSON). */
function valueEnd(s: string, i: number): number {
  const c = s[i];
  if (c === '"') return stringEnd(s, i);
  if (c === "{" || c === "[") {
    let depth = 0;
    for (let j = i; ; j++) {
      const d = s[j];
      if (d === '"') j = stringEnd(s, j) - 1;
      else if (d === "{" || d === "[") depth++;
      else if ((d === "}" || d === "]") && --depth === 0) return j + 1;
    }
  }
  let j = i;
  while (j < s.length && !WS.has(s[j]!) && s[j] !== "," && s[j] !== "}" && s[j] !== "]") j++;
  return j;
}

const skipWs = (s: string, i: number) => {
  while (WS.has(s[i]!)) i++;
  return i;
};

/**
 * Where each top-level member's value sits in a line that JSON.parse accepted as an object:
 * key → [start, end) of every occurrence. Lets the importer replace a value in place and leave
 * every other byte of the line as it was (numbers too large for a double, escapes, spacing).
 */
export function memberSpans(s: string): Map<string, [number, number][]> {
  const spans = new Map<string, [number, number][]>();
  let i = skipWs(s, 0) + 1; // past "{"
  for (;;) {
    i = skipWs(s, i);
    if (s[i] === "}") return spans;
    const keyEnd = stringEnd(s, i);
    const key = JSON.parse(s.slice(i, keyEnd)) as string;
    i = skipWs(s, skipWs(s, keyEnd) + 1); // past ":"
    const end = valueEnd(s, i);
    spans.set(key, [...(spans.get(key) ?? []), [i, end]]);
    i = skipWs(s, end);
    if (s[i] === ",") i++;
  }
}

/**
 * JSON Lines: one object per line. Mapped members must be strings (null or "" are left as they
 * are); each token replaces the value's text in place, so the rest of the line is byte for byte
 * what it was.
 */
export function jsonlSource(input: Readable, plan: ImportPlan): Source {
  async function* items(): AsyncGenerator<Item> {
    let line = 0;
    for await (const text of lines(input)) {
      line++;
      if (typeof text !== "string") {
        yield { kind: "reject", line, column: "", reason: `line longer than ${MAX_RECORD_BYTES} characters` };
        continue;
      }
      if (text.trim() === "") continue;
      let obj: unknown;
      try {
        obj = JSON.parse(text);
      } catch {
        yield { kind: "reject", line, column: "", reason: "not valid JSON" };
        continue;
      }
      if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
        yield { kind: "reject", line, column: "", reason: "not a JSON object" };
        continue;
      }
      const record = obj as Record<string, unknown>;
      const spans = memberSpans(text);
      const fields: RowItem["fields"] = [];
      const at: [number, number][] = [];
      let reject: Item | undefined;
      for (const c of plan.columns) {
        const where = spans.get(c.column);
        const value = record[c.column];
        if (!where) reject ??= { kind: "reject", line, column: c.column, reason: "missing column" };
        else if (where.length > 1) reject ??= { kind: "reject", line, column: c.column, reason: "member appears more than once" };
        else if (value === null || value === "") continue;
        else if (typeof value !== "string") reject ??= { kind: "reject", line, column: c.column, reason: `not a string (${typeof value})` };
        else {
          fields.push({ column: c.column, category: c.category, value, preserving: c.preserving });
          at.push(where[0]!);
        }
      }
      let subject = "";
      if (!reject && plan.subjectColumn !== undefined) {
        const s = record[plan.subjectColumn];
        if (typeof s === "string" || typeof s === "number") subject = String(s);
        else if (s !== undefined && s !== null) reject = { kind: "reject", line, column: plan.subjectColumn, reason: "subject reference is not a string or number" };
      }
      if (reject) {
        yield reject;
        continue;
      }
      const order = at.map((span, k) => ({ span, k })).sort((a, b) => a.span[0] - b.span[0]);
      yield {
        kind: "row",
        line,
        fields,
        subject,
        render(tokens) {
          let out = "";
          let from = 0;
          for (const { span, k } of order) {
            out += text.slice(from, span[0]) + JSON.stringify(tokens[k]);
            from = span[1];
          }
          return out + text.slice(from) + "\n";
        },
      };
    }
  }
  return { preamble: async () => "", items: items() };
}
