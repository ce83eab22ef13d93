/**
 * Array parameters for the multi-row `unnest($n::type[])` statements of the commit path.
 *
 * `pg` turns a JS array parameter into a literal itself, but per element it runs two regular
 * expressions, formats every Date in local time field by field and copies every Buffer to hex:
 * about 13% of a 100-field Tokenize's CPU in the profile (docs/performance.md).
 *
 * text[], jsonb[] and bytea[] go in PostgreSQL's binary array format (what `array_recv` reads):
 * `pg` and PGlite send a Buffer parameter in binary, so each element travels once, length-prefixed,
 * with nothing to quote or escape here and nothing to unquote or un-hex in the server, and bytes are
 * not doubled into hex text. Layout, integers big-endian int32: number of dimensions (0 for an
 * empty array, else 1), has-NULL flag, element type oid, then for one dimension its length and lower
 * bound (1), then per element its length (-1 for NULL) and bytes. The element type oid must be the
 * cast's exactly (`$1::text[]` takes only oid 25), so each builder names its type.
 *
 * timestamptz[], int[] and bool[] stay literals (`array_in` input form): short, with no escaping,
 * and the integer width would otherwise have to match the cast. Only `null` is NULL.
 */

const OID = { bytea: 17, text: 25, jsonb: 3802 } as const;
const JSONB_VERSION = 1; // jsonb's binary form: a version byte, then the JSON text

function binaryArray(oid: number, n: number, isNull: (i: number) => boolean, size: (i: number) => number, write: (i: number, out: Buffer, at: number) => void): Buffer {
  const sizes = new Int32Array(n);
  let len = n ? 20 : 12;
  let hasNull = 0;
  for (let i = 0; i < n; i++) {
    if (isNull(i)) {
      sizes[i] = -1;
      hasNull = 1;
    } else len += sizes[i] = size(i);
    len += 4;
  }
  const out = Buffer.allocUnsafe(len);
  out.writeInt32BE(n ? 1 : 0, 0);
  out.writeInt32BE(hasNull, 4);
  out.writeInt32BE(oid, 8);
  if (n === 0) return out;
  out.writeInt32BE(n, 12);
  out.writeInt32BE(1, 16);
  let at = 20;
  for (let i = 0; i < n; i++) {
    out.writeInt32BE(sizes[i]!, at);
    at += 4;
    if (sizes[i]! < 0) continue;
    write(i, out, at);
    at += sizes[i]!;
  }
  return out;
}

/** text[] (binary). */
export function textArray(values: readonly (string | null)[]): Buffer {
  return asciiTextArray(values) ?? binaryArray(
    OID.text,
    values.length,
    (i) => values[i] === null || values[i] === undefined,
    (i) => Buffer.byteLength(values[i]!, "utf8"),
    (i, out, at) => void out.write(values[i]!, at, "utf8"),
  );
}

/**
 * The same bytes for a column whose elements are all ASCII (ids, names, outcomes: nearly every
 * column of the commit path), built as one string of byte-valued characters and written with one
 * `latin1` encode instead of a length and a write per element (half the time, measured). Returns
 * undefined when any element is not ASCII.
 */
function asciiTextArray(values: readonly (string | null)[]): Buffer | undefined {
  const n = values.length;
  let joined = "";
  for (let i = 0; i < n; i++) joined += values[i] ?? "";
  if (Buffer.byteLength(joined, "utf8") !== joined.length) return undefined;
  let hasNull = 0;
  let body = "";
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (v === null || v === undefined) {
      hasNull = 1;
      body += int32(-1);
    } else body += int32(v.length) + v;
  }
  const head = int32(n ? 1 : 0) + int32(hasNull) + int32(OID.text) + (n ? int32(n) + int32(1) : "");
  return Buffer.from(head + body, "latin1");
}

/** A big-endian int32 as four characters of one byte each (for a `latin1` encode). */
function int32(x: number): string {
  return String.fromCharCode((x >>> 24) & 255, (x >>> 16) & 255, (x >>> 8) & 255, x & 255);
}

/** jsonb[] (binary) from JSON texts; the server parses and checks each as it would a literal. */
export function jsonbArray(values: readonly (string | null)[]): Buffer {
  return binaryArray(
    OID.jsonb,
    values.length,
    (i) => values[i] === null || values[i] === undefined,
    (i) => 1 + Buffer.byteLength(values[i]!, "utf8"),
    (i, out, at) => {
      out[at] = JSONB_VERSION;
      out.write(values[i]!, at + 1, "utf8");
    },
  );
}

/** bytea[] (binary). */
export function byteaArray(values: readonly (Uint8Array | null)[]): Buffer {
  return binaryArray(
    OID.bytea,
    values.length,
    (i) => values[i] === null || values[i] === undefined,
    (i) => values[i]!.length,
    (i, out, at) => out.set(values[i]!, at),
  );
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
