import type { Queryable } from "../../src/storage/db";

/**
 * Everything PostgreSQL holds in the public schema, as text: every row of every table as JSON.
 * bytea columns appear as \x-hex; `contains` looks for a canary both as text (outside hex blobs)
 * and as the hex of its UTF-8 bytes (inside them).
 */
export async function dumpDatabase(db: Queryable): Promise<string> {
  const { rows: tables } = await db.query<{ table_name: string }>(
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
  );
  const parts: string[] = [];
  for (const { table_name } of tables) {
    const { rows } = await db.query<{ j: string }>(`SELECT row_to_json(t)::text AS j FROM "${table_name}" t`, []);
    parts.push(`== ${table_name}`, ...rows.map((r) => r.j));
  }
  return parts.join("\n");
}

const HEX_BLOB = /\\\\x[0-9a-f]*/g;

/** The canary's UTF-8 bytes inside any bytea value of the dump. */
function inHexBlobs(dump: string, canary: string): boolean {
  const hex = Buffer.from(canary, "utf8").toString("hex");
  return (dump.match(HEX_BLOB) ?? []).some((blob) => blob.includes(hex));
}

export function containsCanary(dump: string, canary: string): boolean {
  return dump.replace(HEX_BLOB, "").includes(canary) || inHexBlobs(dump, canary);
}

/**
 * For short digit canaries (a CVV): four digits turn up by chance inside hex hashes, base64
 * signatures, random token ids and timestamps, so a bare substring test is flaky. A CVV that leaked
 * would stand on its own (a JSON value, a word in a text column), so look for it bounded by
 * non-alphanumerics outside hex blobs, and as the hex of its UTF-8 bytes inside them.
 */
export function containsDigitsCanary(dump: string, digits: string): boolean {
  const standalone = new RegExp(`(?<![0-9A-Za-z+/])${digits}(?![0-9A-Za-z+/])`);
  return standalone.test(dump.replace(HEX_BLOB, "")) || inHexBlobs(dump, digits);
}
