/**
 * PostgreSQL array literals for the multi-row `unnest($n::type[])` statements of the commit path.
 *
 * `pg` turns a JS array parameter into a literal itself, but per element it runs two regular
 * expressions, formats every Date in local time field by field and copies every Buffer to hex:
 * about 13% of a 100-field Tokenize's CPU in the profile (docs/performance.md). These builders
 * write the same literal PostgreSQL's `array_in` parses, in one pass, and skip escaping where an
 * element cannot hold a quote or a backslash. Both `pg` and PGlite accept the literal as a string
 * parameter. Elements are always quoted (so "NULL", "" and spaces round-trip), and only `null` is NULL.
 */

const NEEDS_ESCAPE = /["\\]/;

function quoted(s: string): string {
  return NEEDS_ESCAPE.test(s) ? `"${s.replace(/[\\"]/g, "\\$&")}"` : `"${s}"`;
}

/** text[] (or any text-input type such as jsonb[] from JSON strings). */
export function textArray(values: readonly (string | null)[]): string {
  let out = "{";
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i) out += ",";
    out += v === null || v === undefined ? "NULL" : quoted(v);
  }
  return out + "}";
}

/** bytea[] in hex input form; the backslash of `\x` is escaped for the array parser. */
export function byteaArray(values: readonly (Uint8Array | null)[]): string {
  let out = "{";
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i) out += ",";
    out += v === null || v === undefined ? "NULL" : `"\\\\x${hex(v)}"`;
  }
  return out + "}";
}

/** timestamptz[] as ISO 8601 UTC with milliseconds (what a JS Date holds). */
export function timestampArray(values: readonly (Date | null)[]): string {
  let out = "{";
  // The rows of one call share their times: format each distinct instant once.
  let lastMs = NaN;
  let last = "";
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i) out += ",";
    if (v === null || v === undefined) {
      out += "NULL";
      continue;
    }
    const ms = v.getTime();
    if (ms !== lastMs) {
      lastMs = ms;
      last = `"${v.toISOString()}"`;
    }
    out += last;
  }
  return out + "}";
}

/** int[] / int8[] from safe integers. */
export function intArray(values: readonly number[]): string {
  for (const v of values) if (!Number.isSafeInteger(v)) throw new TypeError("intArray: not a safe integer");
  return `{${values.join(",")}}`;
}

export function boolArray(values: readonly boolean[]): string {
  return `{${values.map((v) => (v ? "t" : "f")).join(",")}}`;
}

function hex(u: Uint8Array): string {
  return (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength)).toString("hex");
}
