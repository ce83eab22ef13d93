import { status } from "@grpc/grpc-js";
import pg from "pg";
import { aad, newKey, seal } from "../../src/crypto/aead";
import { fingerprint } from "../../src/crypto/fingerprint";
import { newToken } from "../../src/crypto/tokens";
import { codeOf, tokenApi } from "../helpers/client";
import { keyApi } from "../helpers/key-admin";
import { startTestVault, type TestVault } from "../helpers/vault";

/**
 * A database writer (superuser SQL) edits the metadata the vault acts on without decrypting:
 * fingerprints, masked views, expiry. Each edit is refused with an opaque error and counted; legacy
 * (v1, MAC-less) rows still open and are upgraded by rewrap — unless their fingerprint was moved.
 */
describe("token metadata integrity against a database writer", () => {
  let t: TestVault;
  let sql: pg.Client;
  const pay = () => tokenApi(t.clients, "payment-service");
  const tokenize = async (category: string, value: string, ttlSeconds = 0) =>
    (await pay().tokenize({ fields: [{ category, value }], ttlSeconds, subjectRef: "" })).tokens[0]!.token;
  const reveal = async (token: string) =>
    (await pay().detokenize({ tokens: [token], purpose: "refund", justification: "" })).results[0]!;
  const failures = async () => {
    const m = await t.vault.metrics.registry.getSingleMetric("fieldvault_integrity_failures_total")!.get();
    return m.values.find((v) => v.labels.kind === "token")?.value ?? 0;
  };

  beforeAll(async () => {
    t = await startTestVault("postgres");
    sql = new pg.Client({ connectionString: t.db!.url });
    await sql.connect();
  }, 60_000);
  afterAll(async () => {
    await sql?.end();
    await t?.stop();
  }, 60_000);

  it("a fingerprint moved onto another card's row does not make tokenize return that row's token", async () => {
    const victim = await tokenize("card_number", "4000056655665556");
    const attacker = await tokenize("card_number", "5200828282828210");
    const before = await failures();
    // Move the attacker's card fingerprint onto the victim's row: a refund for the attacker's card
    // token would then be paid to the victim's card... if tokenize returned the victim's token.
    const fp = (await sql.query<{ fingerprint: Buffer }>("SELECT fingerprint FROM tokens WHERE id = $1", [attacker])).rows[0]!.fingerprint;
    await sql.query("UPDATE tokens SET fingerprint = NULL WHERE id = $1", [attacker]);
    await sql.query("UPDATE tokens SET fingerprint = $2 WHERE id = $1", [victim, fp]);
    const err = await codeOf(pay().tokenize({ fields: [{ category: "card_number", value: "5200828282828210" }], ttlSeconds: 0, subjectRef: "" }));
    expect(err.code).toBe(status.INTERNAL);
    expect(err.details).toMatch(/^internal error \(request [A-Za-z0-9_-]+\)$/);
    expect(await failures()).toBeGreaterThan(before);
    // The victim's row itself no longer opens (its value is bound to its own fingerprint).
    const r = await reveal(victim);
    expect(r.outcome).toMatchObject({ $case: "error", value: { code: "INTERNAL" } });
    expect(JSON.stringify(r)).not.toContain("4000056655665556");
  });

  it("an edited masked view is refused by detokenize and inspect, opaquely", async () => {
    const token = await tokenize("card_number", "4242424242424242");
    await sql.query(`UPDATE tokens SET masked = jsonb_set(masked, '{last}', '"0000"') WHERE id = $1`, [token]);
    const r = await reveal(token);
    expect(r.outcome).toEqual({ $case: "error", value: { code: "INTERNAL", message: "value could not be decrypted", retryAfterMs: 0 } });
    expect(r.category).toBe("");
    const i = await pay().inspect({ tokens: [token] });
    expect(i.tokens[0]!.error).toEqual({ code: "INTERNAL", message: "token could not be read", retryAfterMs: 0 });
    expect(i.tokens[0]!.masked).toBeUndefined();
  });

  it("an expired token whose expires_at was pushed to 2099 stays refused", async () => {
    const token = await tokenize("cardholder_name", "Late Payer", 1);
    await new Promise((r) => setTimeout(r, 1200));
    await sql.query("UPDATE tokens SET expires_at = '2099-01-01' WHERE id = $1", [token]);
    const r = await reveal(token);
    expect(r.outcome).toMatchObject({ $case: "error", value: { code: "INTERNAL" } });
    expect(JSON.stringify(r)).not.toContain("Late Payer");
    // Nulling the MAC does not help: a v2 row must carry one.
    await sql.query("UPDATE tokens SET meta_mac = NULL WHERE id = $1", [token]);
    expect((await reveal(token)).outcome).toMatchObject({ $case: "error", value: { code: "INTERNAL" } });
  });

  it("deleting refuses a row whose category was relabelled", async () => {
    const token = await tokenize("cardholder_name", "Rel Abel");
    await sql.query("UPDATE tokens SET category = 'passport_number' WHERE id = $1", [token]);
    const err = await codeOf(tokenApi(t.clients, "booking-service").deleteTokens({ tokens: [token] }));
    expect(err.code).toBe(status.INTERNAL);
    expect((await sql.query("SELECT 1 FROM tokens WHERE id = $1", [token])).rowCount).toBe(1);
  });

  /** A row as a vault before this version wrote it: v1 value AAD, no MAC. */
  async function insertLegacy(category: string, value: string, fpOf?: string): Promise<string> {
    const id = newToken();
    const kek = t.vault.keyring.active(category);
    const dek = newKey();
    const plain = new TextEncoder().encode(value);
    const ciphertext = seal(dek, plain, aad("value", id, category));
    const wrappedDek = seal(kek.key, dek, aad("dek", id, category, kek.version));
    const fp = fpOf === undefined ? null : Buffer.from(fingerprint(t.vault.keyring.fingerprintKey(category), new TextEncoder().encode(fpOf)));
    await sql.query(
      `INSERT INTO tokens (id, category, kek_version, wrapped_dek, ciphertext, fingerprint, masked, held_without_subject, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, true, now())`,
      [id, category, kek.version, Buffer.from(wrappedDek), Buffer.from(ciphertext), fp, JSON.stringify({ display: "x", brand: "", last: "", expired: false })],
    );
    return id;
  }

  it("legacy v1 rows still open, and rewrap upgrades them to v2 with a MAC, refusing one whose fingerprint was moved", async () => {
    const good = await insertLegacy("card_number", "6011000990139424", "6011000990139424");
    const moved = await insertLegacy("card_number", "3566002020360505", "4111111111111111"); // fingerprint of another card
    const name = await insertLegacy("cardholder_name", "Old Row");
    expect((await reveal(good)).outcome).toEqual({ $case: "value", value: "6011000990139424" });
    expect((await reveal(name)).outcome).toEqual({ $case: "value", value: "Old Row" });

    const admin = keyApi(t.clients, "sec-admin-1");
    await admin.rotate("card_number");
    await admin.rotate("cardholder_name");
    await admin.rewrap({ category: "card_number", batchSize: 100 });
    await admin.rewrap({ category: "cardholder_name", batchSize: 100 });

    const rows = (await sql.query<{ id: string; fmt: number; mac: boolean; masked: { last: string } }>(
      "SELECT id, get_byte(ciphertext, 0) AS fmt, meta_mac IS NOT NULL AS mac, masked FROM tokens WHERE id = ANY($1)",
      [[good, moved, name]],
    )).rows;
    const by = new Map(rows.map((r) => [r.id, r]));
    expect(by.get(good)).toMatchObject({ fmt: 2, mac: true, masked: { last: "9424" } });
    expect(by.get(name)).toMatchObject({ fmt: 2, mac: true });
    expect(by.get(moved)).toMatchObject({ fmt: 1, mac: false });
    expect((await reveal(good)).outcome).toEqual({ $case: "value", value: "6011000990139424" });
    expect((await reveal(name)).outcome).toEqual({ $case: "value", value: "Old Row" });
    // And the upgraded row now resists the masked-view edit.
    await sql.query(`UPDATE tokens SET masked = jsonb_set(masked, '{last}', '"1111"') WHERE id = $1`, [good]);
    expect((await reveal(good)).outcome).toMatchObject({ $case: "error", value: { code: "INTERNAL" } });
  }, 30_000);

  it("a KEK state edited in the database (disabled → decrypt_only) is not believed", async () => {
    const admin = keyApi(t.clients, "sec-admin-1");
    const token = await tokenize("cardholder_name", "Kek State");
    const { version: old } = (await admin.list("cardholder_name")).categories[0]!.versions.find((v) => v.state === 1)!;
    await admin.rotate("cardholder_name");
    await admin.setState("cardholder_name", old, 3); // disabled
    expect((await reveal(token)).outcome).toMatchObject({ $case: "error", value: { code: "FAILED_PRECONDITION" } });
    const kekFailures = async () =>
      (await t.vault.metrics.registry.getSingleMetric("fieldvault_integrity_failures_total")!.get()).values.find((v) => v.labels.kind === "kek_state")?.value ?? 0;
    const before = await kekFailures();
    await sql.query("UPDATE kek_versions SET state = 'decrypt_only' WHERE category = 'cardholder_name' AND version = $1", [old]);
    await t.vault.keyring.reload();
    const r = await reveal(token);
    expect(r.outcome).toMatchObject({ $case: "error", value: { code: "INTERNAL" } });
    expect(JSON.stringify(r)).not.toContain("Kek State");
    expect(await kekFailures()).toBe(before + 1);
    // The administrators' own change is believed again.
    await admin.setState("cardholder_name", old, 3); // disabled, then decrypt_only: each with a fresh MAC
    await admin.setState("cardholder_name", old, 2);
    await t.vault.keyring.reload();
    expect((await reveal(token)).outcome).toEqual({ $case: "value", value: "Kek State" });
  }, 30_000);
});
