import fc from "fast-check";
import pg from "pg";
import { PGlite } from "@electric-sql/pglite";
import { PG_ADMIN_URL } from "../helpers/backends";
import { boolArray, byteaArray, intArray, jsonbArray, textArray, timestampArray } from "../../src/storage/postgres/array-literal";

/**
 * The commit path hands PostgreSQL array literals it builds itself (array-literal.ts). Whatever a
 * caller puts in a log field or a masked view must come back from PostgreSQL exactly: checked on
 * the real server and on PGlite (the embedded default) with arbitrary strings, bytes and times.
 */
type Run = (sql: string, params: unknown[]) => Promise<Record<string, unknown>[]>;

const SQL = `SELECT t, b, ts, i, f, j FROM unnest($1::text[], $2::bytea[], $3::timestamptz[], $4::int8[], $5::bool[], $6::jsonb[])
               WITH ORDINALITY AS u(t, b, ts, i, f, j, n) ORDER BY n`;

// Any string PostgreSQL text can hold (no NUL), with the characters that matter to array syntax made likely.
const awkward = fc.oneof(
  fc.string({ unit: "binary" }).map((s) => s.replace(/\u0000/g, "")),
  fc.constantFrom("", "NULL", "null", " ", "\\", '"', "{}", "a,b", "\\x00", '{"a":"b\\"c"}', "é🙂", "\n\t"),
  fc.array(fc.constantFrom('"', "\\", ",", "{", "}", " ", "N", "x", "é"), { maxLength: 12 }).map((a) => a.join("")),
);
const row = fc.record({
  t: fc.option(awkward, { nil: null }),
  b: fc.option(fc.uint8Array({ maxLength: 40 }), { nil: null }),
  ts: fc.option(fc.date({ min: new Date("1970-01-01T00:00:00Z"), max: new Date("2200-01-01T00:00:00Z"), noInvalidDate: true }), { nil: null }),
  i: fc.maxSafeInteger().filter((n) => n >= -(2 ** 53) + 1),
  f: fc.boolean(),
  j: fc.option(fc.oneof(fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)), awkward.map((t) => JSON.stringify({ t }))), { nil: null }),
});

async function roundTrips(run: Run, runs: number): Promise<void> {
  await fc.assert(
    fc.asyncProperty(fc.array(row, { minLength: 1, maxLength: 20 }), fc.boolean(), async (given, shareTimes) => {
      // The commit path's rows usually share one instant (the builder formats it once).
      const rows = shareTimes ? given.map((r, i) => (i % 3 ? { ...r, ts: given[0]!.ts } : r)) : given;
      const got = await run(SQL, [
        textArray(rows.map((r) => r.t)),
        byteaArray(rows.map((r) => r.b)),
        timestampArray(rows.map((r) => r.ts)),
        intArray(rows.map((r) => r.i)),
        boolArray(rows.map((r) => r.f)),
        jsonbArray(rows.map((r) => r.j)),
      ]);
      expect(got).toHaveLength(rows.length);
      got.forEach((g, k) => {
        const want = rows[k]!;
        expect(g.t).toBe(want.t);
        expect(g.b === null ? null : Buffer.from(g.b as Uint8Array).toString("hex")).toBe(want.b === null ? null : Buffer.from(want.b).toString("hex"));
        expect(g.ts === null ? null : (g.ts as Date).toISOString()).toBe(want.ts === null ? null : want.ts.toISOString());
        expect(Number(g.i)).toBe(want.i);
        expect(g.f).toBe(want.f);
        expect(g.j).toEqual(want.j === null ? null : JSON.parse(want.j));
      });
    }),
    { numRuns: runs },
  );
}

describe("array literals round-trip through PostgreSQL", () => {
  test("real PostgreSQL", async () => {
    const c = new pg.Client({ connectionString: PG_ADMIN_URL });
    await c.connect();
    try {
      await roundTrips(async (sql, params) => (await c.query(sql, params)).rows, 300);
    } finally {
      await c.end();
    }
  });

  test("PGlite", async () => {
    const db = await PGlite.create();
    try {
      await roundTrips(async (sql, params) => (await db.query<Record<string, unknown>>(sql, params)).rows, 150);
    } finally {
      await db.close();
    }
  }, 60_000);

  test("empty arrays and a bytea[] of only NULLs and empty values (binary format edge cases)", async () => {
    const c = new pg.Client({ connectionString: PG_ADMIN_URL });
    await c.connect();
    const lite = await PGlite.create();
    try {
      for (const q of [(sql: string, p: unknown[]) => c.query(sql, p), (sql: string, p: unknown[]) => lite.query(sql, p)]) {
        const empty = await q("SELECT cardinality($1::bytea[]) AS n, $1::bytea[] = '{}'::bytea[] AS same, cardinality($2::text[]) AS t, cardinality($3::jsonb[]) AS j", [
          byteaArray([]),
          textArray([]),
          jsonbArray([]),
        ]);
        expect(empty.rows).toEqual([{ n: 0, same: true, t: 0, j: 0 }]);
        const odd = await q("SELECT b IS NULL AS isnull, length(b) AS len FROM unnest($1::bytea[]) WITH ORDINALITY AS u(b, n) ORDER BY n", [
          byteaArray([null, new Uint8Array(0), null]),
        ]);
        expect(odd.rows).toEqual([
          { isnull: true, len: null },
          { isnull: false, len: 0 },
          { isnull: true, len: null },
        ]);
      }
    } finally {
      await c.end();
      await lite.close();
    }
  }, 60_000);

  test("all-ASCII text[] (the one-encode path) round-trips, including elements over 255 and 65,535 bytes", async () => {
    const c = new pg.Client({ connectionString: PG_ADMIN_URL });
    await c.connect();
    try {
      const ascii = fc.string({ unit: fc.constantFrom("a", "Z", "0", " ", '"', "\\", ",", "{", "}", "\x7f", "\x01"), maxLength: 300 });
      await fc.assert(
        fc.asyncProperty(fc.array(fc.option(ascii, { nil: null }), { maxLength: 30 }), async (values) => {
          const r = await c.query<{ v: string[] | null }>("SELECT $1::text[] AS v", [textArray(values)]);
          expect(r.rows[0]!.v).toEqual(values);
        }),
        { numRuns: 200 },
      );
      const big = ["x".repeat(70_000), "", null, "y".repeat(256)];
      const r = await c.query<{ v: string[] }>("SELECT $1::text[] AS v", [textArray(big)]);
      expect(r.rows[0]!.v).toEqual(big);
      // One non-ASCII element sends the whole column the general way; both agree with PostgreSQL.
      const mixed = ["plain", "é🙂", null];
      expect((await c.query<{ v: string[] }>("SELECT $1::text[] AS v", [textArray(mixed)])).rows[0]!.v).toEqual(mixed);
    } finally {
      await c.end();
    }
  });

  test("a text element is never read as array syntax, and a bad JSON text is refused by the server", async () => {
    const c = new pg.Client({ connectionString: PG_ADMIN_URL });
    await c.connect();
    try {
      const r = await c.query("SELECT cardinality($1::text[]) AS n, ($1::text[])[1] AS first", [textArray(['a","b', "{c}"])]);
      expect(r.rows).toEqual([{ n: 2, first: 'a","b' }]);
      await expect(c.query("SELECT $1::jsonb[]", [jsonbArray(["{not json"])])).rejects.toThrow(/invalid input syntax for type json/);
    } finally {
      await c.end();
    }
  });

  test("an integer that is not safe is refused, not rounded", () => {
    expect(() => intArray([2 ** 60])).toThrow(/safe integer/);
  });
});
