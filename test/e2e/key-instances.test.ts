import { randomBytes } from "node:crypto";
import { rootKeyId } from "../../src/crypto/root-key";
import { readySodium, sodium } from "../../src/crypto/sodium";
import { AUTO_ROTATE_IDENTITY } from "../../src/services/key-lifecycle";
import { createTestDatabase, dropRedisPrefix, newRedisPrefix } from "../helpers/backends";
import { tokenApi } from "../helpers/client";
import { eventually, keyApi } from "../helpers/key-admin";
import { startTestVault, type TestVault } from "../helpers/vault";

/** Key changes seen across instances on one PostgreSQL database: propagation, auto-rotation, root rotation. */
describe("key lifecycle across instances (PostgreSQL)", () => {
  jest.setTimeout(90_000);
  const admin = (t: TestVault, who = "sec-admin-1") => keyApi(t.clients, who);
  const pay = (t: TestVault) => tokenApi(t.clients, "payment-service");
  const book = (t: TestVault) => tokenApi(t.clients, "booking-service");

  describe("propagation", () => {
    let a: TestVault;
    let b: TestVault;
    beforeAll(async () => {
      a = await startTestVault("postgres");
      b = await startTestVault("postgres", {}, { db: a.db, redisPrefix: a.redisPrefix });
    });
    afterAll(async () => {
      await b?.stop();
      await a?.stop();
    });

    it("a second instance encrypts with the new version within 2 seconds of a rotation", async () => {
      expect(b.vault.keyring.active("card_number").version).toBe(1);
      await admin(a).rotate("card_number");
      const rotatedAt = Date.now();
      expect(await eventually(() => b.vault.keyring.active("card_number").version === 2, 2_000, 10)).toBe(true);
      expect(Date.now() - rotatedAt).toBeLessThan(2_000);
      const { tokens } = await pay(b).tokenize({ fields: [{ category: "card_number", value: "5555 5555 5555 4444" }], ttlSeconds: 0, subjectRef: "" });
      const seen = await pay(a).inspect({ tokens: [tokens[0]!.token] });
      expect(seen.tokens[0]!.keyVersion).toBe(2);
    });

    it("a second instance refuses a version disabled on the first within 2 seconds, and serves it again once re-enabled", async () => {
      const { tokens } = await pay(a).tokenize({ fields: [{ category: "cardholder_name", value: "Propagation Check" }], ttlSeconds: 0, subjectRef: "" });
      await admin(a).rotate("cardholder_name");
      await admin(a).setState("cardholder_name", 1, 3 /* KEY_STATE_DISABLED */);
      const refusedOnB = async () => {
        const { results } = await pay(b).detokenize({ tokens: [tokens[0]!.token], purpose: "refund", justification: "" });
        return results[0]!.outcome?.$case === "error" && results[0]!.outcome.value.code === "FAILED_PRECONDITION";
      };
      expect(await eventually(refusedOnB, 2_000, 50)).toBe(true);
      await admin(a, "sec-admin-2").setState("cardholder_name", 1, 2 /* KEY_STATE_DECRYPT_ONLY */);
      expect(await eventually(async () => !(await refusedOnB()), 2_000, 50)).toBe(true);
    });
  });

  describe("automatic rotation", () => {
    let a: TestVault;
    let b: TestVault;
    afterAll(async () => {
      await b?.stop();
      await a?.stop();
    });

    it("two instances rotate an overdue category exactly once between them", async () => {
      const env = { FIELDVAULT_AUTO_ROTATE: "true", FIELDVAULT_AUTO_ROTATE_CHECK_MS: "100", FIELDVAULT_CRYPTOPERIODS: "phone=30" };
      a = await startTestVault("postgres", env);
      b = await startTestVault("postgres", env, { db: a.db, redisPrefix: a.redisPrefix });
      const listed = (await admin(a).list("phone")).categories[0]!;
      expect(listed.cryptoperiodSeconds).toBe(30 * 86400);
      // Make phone's active version 31 days old: past its 30-day cryptoperiod; email (365 days) is not.
      await a.vault.db.query("UPDATE kek_versions SET created_at = now() - interval '31 days' WHERE category IN ('phone', 'email')", []);
      const rotated = async () =>
        (await a.vault.db.query<{ v: number }>("SELECT max(version)::int AS v FROM kek_versions WHERE category = 'phone'", [])).rows[0]!.v >= 2;
      expect(await eventually(rotated, 10_000, 50)).toBe(true);
      // Both timers keep checking; wait until each instance has seen v2, then for several more checks.
      expect(await eventually(() => a.vault.keyring.active("phone").version === 2 && b.vault.keyring.active("phone").version === 2, 5_000)).toBe(true);
      await new Promise((r) => setTimeout(r, 1_000));
      const versions = await a.vault.db.query<{ version: number; state: string }>("SELECT version, state FROM kek_versions WHERE category = 'phone' ORDER BY version", []);
      expect(versions.rows).toEqual([
        { version: 1, state: "decrypt_only" },
        { version: 2, state: "active" },
      ]);
      const email = await a.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM kek_versions WHERE category = 'email'", []);
      expect(email.rows[0]!.n).toBe(1);
      const log = await a.vault.db.query<{ caller: string; auth: string; detail: string }>(
        "SELECT caller, auth, detail FROM access_log WHERE action = 'key_rotate' AND category = 'phone'",
        [],
      );
      expect(log.rows).toEqual([{ caller: AUTO_ROTATE_IDENTITY, auth: "internal", detail: expect.stringContaining("cryptoperiod passed; active=v2") }]);
    });
  });

  describe("root key rotation", () => {
    it("re-wraps every KEK and secret under the new root key; a restart with only the new key opens every token", async () => {
      await readySodium();
      const oldKey = randomBytes(32);
      const newKey = randomBytes(32);
      const newId = rootKeyId(new Uint8Array(newKey));
      const oldId = rootKeyId(new Uint8Array(oldKey));
      const b64 = (k: Buffer) => sodium.to_base64(new Uint8Array(k), sodium.base64_variants.ORIGINAL);
      const db = await createTestDatabase();
      const redisPrefix = newRedisPrefix();
      const reuse = { db, redisPrefix };
      let v: TestVault | undefined;
      try {
        v = await startTestVault("postgres", { FIELDVAULT_ROOT_KEY: `${b64(oldKey)},${b64(newKey)}` }, reuse);
        const cards = ["4111 1111 1111 1111", "5555 5555 5555 4444"];
        const first = await pay(v).tokenize({ fields: cards.map((value) => ({ category: "card_number", value })), ttlSeconds: 0, subjectRef: "" });
        await admin(v).rotate("card_number");
        const second = await pay(v).tokenize({ fields: [{ category: "card_number", value: "3782 822463 10005" }], ttlSeconds: 0, subjectRef: "" });
        const passports = await book(v).tokenize({ fields: [{ category: "passport_number", value: "XK1234567" }], ttlSeconds: 0, subjectRef: "" });
        // A destroyed version has no key material left to re-wrap.
        await admin(v).rotate("email");
        const req = await admin(v).destroy({ category: "email", version: 1 });
        await admin(v, "sec-admin-2").destroy({ category: "email", version: 1, approvalId: req.approvalId });
        const before = await v.vault.db.query<{ r: string }>("SELECT DISTINCT root_key_id AS r FROM kek_versions WHERE root_key_id IS NOT NULL", []);
        expect(before.rows).toEqual([{ r: oldId }]);

        const live = (await v.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM kek_versions WHERE state <> 'destroyed'", [])).rows[0]!.n;
        const res = await admin(v).rotateRoot(newId);
        expect(res).toEqual({ rootKeyId: newId, keksRewrapped: live });
        const keks = await v.vault.db.query<{ r: string | null; n: number }>("SELECT root_key_id AS r, count(*)::int AS n FROM kek_versions GROUP BY 1 ORDER BY 1", []);
        expect(keks.rows).toEqual([
          { r: newId, n: live },
          { r: null, n: 1 },
        ]);
        const secrets = await v.vault.db.query<{ r: string }>("SELECT DISTINCT root_key_id AS r FROM vault_secrets", []);
        expect(secrets.rows).toEqual([{ r: newId }]);
        // A rotation after the root rotation wraps its new version under the new root key as well.
        await admin(v).rotate("card_number");
        const v3 = await v.vault.db.query<{ r: string }>("SELECT root_key_id AS r FROM kek_versions WHERE category = 'card_number' AND version = 3", []);
        expect(v3.rows[0]!.r).toBe(newId);
        const log = await v.vault.db.query<{ caller: string; detail: string }>("SELECT caller, detail FROM access_log WHERE action = 'root_rotate'", []);
        expect(log.rows).toEqual([{ caller: "sec-admin-1", detail: `root=${newId} previous=${oldId} keks_rewrapped=${live} secrets_rewrapped=2` }]);
        await v.stop();

        // The old root key alone no longer opens this vault.
        await expect(startTestVault("postgres", { FIELDVAULT_ROOT_KEY: b64(oldKey) }, reuse)).rejects.toThrow();

        v = await startTestVault("postgres", { FIELDVAULT_ROOT_KEY: b64(newKey) }, reuse);
        const cardTokens = [...first.tokens, ...second.tokens].map((x) => x.token);
        const { results } = await pay(v).detokenize({ tokens: cardTokens, purpose: "payment_authorization", justification: "ROOT-ROTATION" });
        expect(results.map((r) => r.outcome)).toEqual([
          { $case: "value", value: "4111111111111111" },
          { $case: "value", value: "5555555555554444" },
          { $case: "value", value: "378282246310005" },
        ]);
        const pp = await book(v).detokenize({ tokens: [passports.tokens[0]!.token], purpose: "airline_manifest", justification: "" });
        expect(pp.results[0]!.outcome).toEqual({ $case: "value", value: "XK1234567" });
        // Fingerprints still work under the re-wrapped master key: the same PAN finds its token.
        const again = await pay(v).tokenize({ fields: [{ category: "card_number", value: "4111-1111-1111-1111" }], ttlSeconds: 0, subjectRef: "" });
        expect(again.tokens[0]!.token).toBe(first.tokens[0]!.token);
        const after = await pay(v).tokenize({ fields: [{ category: "card_number", value: "4000 0566 5566 5556" }], ttlSeconds: 0, subjectRef: "" });
        expect((await pay(v).inspect({ tokens: [after.tokens[0]!.token] })).tokens[0]!.keyVersion).toBe(3);
      } finally {
        await v?.stop();
        await db.drop();
        await dropRedisPrefix(redisPrefix);
      }
    });
  });
});
