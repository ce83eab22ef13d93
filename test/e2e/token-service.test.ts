import { status } from "@grpc/grpc-js";
import { dumpDatabase, containsCanary, containsDigitsCanary } from "../helpers/leaks";
import { redisKeys } from "../helpers/backends";
import { codeOf, tokenApi } from "../helpers/client";
import { BACKENDS, startTestVault, type TestVault } from "../helpers/vault";
import { Redis } from "ioredis";
import { REDIS_URL } from "../helpers/backends";
import { SAMPLES } from "../helpers/samples";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const nextYear = new Date().getUTCFullYear() + 1;

describe.each(BACKENDS)("TokenService on %s", (backend) => {
  let t: TestVault;
  const pay = () => tokenApi(t.clients, "payment-service");
  const book = () => tokenApi(t.clients, "booking-service");
  const countTokens = async () => (await t.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM tokens", [])).rows[0]!.n;
  const logRows = async (where: string, params: unknown[]) =>
    (await t.vault.db.query<Record<string, string>>(`SELECT * FROM access_log WHERE ${where} ORDER BY seq`, params)).rows;

  beforeAll(async () => {
    t = await startTestVault(backend);
  });
  afterAll(async () => {
    await t?.stop();
  });

  describe("happy", () => {
    it.each(SAMPLES)("round-trips $category", async (s) => {
      const api = tokenApi(t.clients, s.caller);
      const { tokens } = await api.tokenize({ fields: [{ category: s.category, value: s.value }], ttlSeconds: 0, subjectRef: "" });
      expect(tokens).toHaveLength(1);
      expect(tokens[0]!.token).toMatch(/^tok_[0-9A-Za-z]{22}$/);
      expect(tokens[0]!.category).toBe(s.category);
      expect(JSON.stringify(tokens[0]!.masked)).not.toContain(s.normal);
      const { results } = await api.detokenize({ tokens: [tokens[0]!.token], purpose: s.purpose, justification: "TICKET-1" });
      expect(results[0]!.outcome).toEqual({ $case: "value", value: s.normal });
    });

    it("gives one token for a PAN written two ways, and two tokens for a random category", async () => {
      const a = await pay().tokenize({ fields: [{ category: "card_number", value: "4111 1111 1111 1111" }], ttlSeconds: 0, subjectRef: "" });
      const b = await pay().tokenize({ fields: [{ category: "card_number", value: "4111-1111-1111-1111" }], ttlSeconds: 0, subjectRef: "" });
      expect(a.tokens[0]!.token).toBe(b.tokens[0]!.token);
      expect(a.tokens[0]!.masked).toMatchObject({ brand: "visa", last: "1111" });
      const both = await pay().tokenize({
        fields: [
          { category: "cardholder_name", value: "Same Name" },
          { category: "cardholder_name", value: "Same Name" },
        ],
        ttlSeconds: 0,
        subjectRef: "",
      });
      expect(both.tokens[0]!.token).not.toBe(both.tokens[1]!.token);
    });

    it("answers in request order, with one deterministic token for duplicates inside one call", async () => {
      const { tokens } = await pay().tokenize({
        fields: [
          { category: "card_number", value: "5555555555554444" },
          { category: "cardholder_name", value: "Order Check" },
          { category: "card_number", value: "5555 5555 5555 4444" },
        ],
        ttlSeconds: 0,
        subjectRef: "",
      });
      expect(tokens.map((x) => x.category)).toEqual(["card_number", "cardholder_name", "card_number"]);
      expect(tokens[0]!.token).toBe(tokens[2]!.token);
      const { results } = await pay().detokenize({ tokens: tokens.map((x) => x.token), purpose: "refund", justification: "" });
      expect(results.map((r) => r.outcome)).toEqual([
        { $case: "value", value: "5555555555554444" },
        { $case: "value", value: "Order Check" },
        { $case: "value", value: "5555555555554444" },
      ]);
    });

    it("reveals a CVV once, then NOT_FOUND; and a CVV is gone after its TTL", async () => {
      const { tokens } = await pay().tokenize({ fields: [{ category: "card_cvv", value: "4821" }], ttlSeconds: 0, subjectRef: "" });
      const first = await pay().detokenize({ tokens: [tokens[0]!.token], purpose: "payment_authorization", justification: "" });
      expect(first.results[0]!.outcome).toEqual({ $case: "value", value: "4821" });
      const second = await pay().detokenize({ tokens: [tokens[0]!.token], purpose: "payment_authorization", justification: "" });
      expect(second.results[0]!.outcome).toMatchObject({ $case: "error", value: { code: "NOT_FOUND" } });

      const short = await pay().tokenize({ fields: [{ category: "card_cvv", value: "592" }], ttlSeconds: 1, subjectRef: "" });
      await sleep(1300);
      const late = await pay().detokenize({ tokens: [short.tokens[0]!.token], purpose: "payment_authorization", justification: "" });
      expect(late.results[0]!.outcome).toMatchObject({ $case: "error", value: { code: "NOT_FOUND" } });
    });

    it("inspects masked views without plaintext", async () => {
      const { tokens } = await pay().tokenize({
        fields: [
          { category: "card_number", value: "378282246310005" },
          { category: "card_expiry", value: `12/${nextYear}` },
        ],
        ttlSeconds: 0,
        subjectRef: "",
      });
      const out = await pay().inspect({ tokens: tokens.map((x) => x.token) });
      expect(out.tokens[0]).toMatchObject({ category: "card_number", keyVersion: 1, masked: { brand: "amex", last: "0005" } });
      expect(out.tokens[1]).toMatchObject({ category: "card_expiry", masked: { expired: false } });
      expect(JSON.stringify(out)).not.toContain("378282246310005");
      expect(JSON.stringify(out)).not.toContain(`12/${nextYear}`);
    });

    it("keeps the latest expiry asked for on a shared deterministic token", async () => {
      const pan = "6011111111111117";
      const a = await pay().tokenize({ fields: [{ category: "card_number", value: pan }], ttlSeconds: 60, subjectRef: "s-exp" });
      const b = await pay().tokenize({ fields: [{ category: "card_number", value: pan }], ttlSeconds: 3600, subjectRef: "s-exp2" });
      expect(a.tokens[0]!.token).toBe(b.tokens[0]!.token);
      const info = await pay().inspect({ tokens: [a.tokens[0]!.token] });
      const expires = info.tokens[0]!.expiresAt!.getTime();
      expect(expires).toBeGreaterThan(Date.now() + 3000 * 1000);
    });
  });

  describe("error", () => {
    const cases: [string, { category: string; value: string }][] = [
      ["a Luhn failure", { category: "card_number", value: "4111111111111112" }],
      ["a bad expiry", { category: "card_expiry", value: "13/29" }],
      ["an expired expiry", { category: "card_expiry", value: "01/20" }],
      ["an over-long value", { category: "cardholder_name", value: "N".repeat(5000) }],
      ["an unknown category", { category: "shoe_size", value: "44" }],
    ];
    it.each(cases)("rejects %s with INVALID_ARGUMENT naming the field, stores nothing", async (_name, bad) => {
      const before = await countTokens();
      const err = await codeOf(
        pay().tokenize({ fields: [{ category: "cardholder_name", value: "Good Value" }, bad], ttlSeconds: 0, subjectRef: "" }),
      );
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.details).toContain("fields[1]");
      expect(err.details).not.toContain(bad.value);
      expect(await countTokens()).toBe(before);
    });

    it("rejects 1,001 items with INVALID_ARGUMENT and stores nothing", async () => {
      const before = await countTokens();
      const fields = Array.from({ length: 1001 }, (_, i) => ({ category: "cardholder_name", value: `Name ${i}` }));
      const err = await codeOf(pay().tokenize({ fields, ttlSeconds: 0, subjectRef: "" }));
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.details).toContain("1000");
      expect(await countTokens()).toBe(before);
      const det = await codeOf(pay().detokenize({ tokens: Array(1001).fill("tok_x"), purpose: "refund", justification: "" }));
      expect(det.code).toBe(status.INVALID_ARGUMENT);
    });

    it("stores no CVV when another field of the call is bad", async () => {
      const keysBefore = t.redisPrefix ? (await redisKeys(t.redisPrefix)).length : 0;
      const err = await codeOf(
        pay().tokenize({ fields: [{ category: "card_cvv", value: "123" }, { category: "card_number", value: "1234" }], ttlSeconds: 0, subjectRef: "" }),
      );
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      if (t.redisPrefix) expect((await redisKeys(t.redisPrefix)).length).toBe(keysBefore);
    });

    it("requires a purpose", async () => {
      const err = await codeOf(pay().detokenize({ tokens: ["tok_abc"], purpose: "", justification: "" }));
      expect(err.code).toBe(status.INVALID_ARGUMENT);
      expect(err.details).toContain("purpose");
    });

    it("answers unknown, malformed and erased tokens per item with NOT_FOUND", async () => {
      const { tokens } = await pay().tokenize({ fields: [{ category: "cardholder_name", value: "Erase Me" }, { category: "cardholder_name", value: "Keep Me" }], ttlSeconds: 0, subjectRef: "" });
      expect((await pay().deleteTokens({ tokens: [tokens[0]!.token] })).deleted).toBe(1);
      const { results } = await pay().detokenize({
        tokens: [tokens[0]!.token, "tok_0000000000000000000000", "not-a-token", tokens[1]!.token],
        purpose: "refund",
        justification: "",
      });
      expect(results.map((r) => (r.outcome?.$case === "error" ? r.outcome.value.code : r.outcome?.value))).toEqual([
        "NOT_FOUND",
        "NOT_FOUND",
        "NOT_FOUND",
        "Keep Me",
      ]);
    });

    it("echoes a malformed token only by its first characters, and refuses a purpose of only spaces as required", async () => {
      const pasted = "4111 1111 1111 1111";
      const { results } = await pay().detokenize({ tokens: [pasted], purpose: "refund", justification: "" });
      expect(results[0]!.token).toBe("4111…(malformed)");
      const inspected = await pay().inspect({ tokens: [pasted] });
      expect(inspected.tokens[0]!.token).toBe("4111…(malformed)");
      const spaces = await codeOf(pay().detokenize({ tokens: [pasted], purpose: "   ", justification: "" }));
      expect(spaces.code).toBe(status.INVALID_ARGUMENT);
      expect(spaces.details).toBe("purpose: required");
    });

    it("fails to open a ciphertext copied onto another token's row", async () => {
      const { tokens } = await pay().tokenize({
        fields: [
          { category: "cardholder_name", value: "Alice Source" },
          { category: "cardholder_name", value: "Bob Target" },
        ],
        ttlSeconds: 0,
        subjectRef: "",
      });
      const [a, b] = tokens.map((x) => x.token);
      await t.vault.db.query(
        "UPDATE tokens SET ciphertext = (SELECT ciphertext FROM tokens WHERE id = $1), wrapped_dek = (SELECT wrapped_dek FROM tokens WHERE id = $1) WHERE id = $2",
        [a, b],
      );
      const { results } = await pay().detokenize({ tokens: [b!, a!], purpose: "refund", justification: "" });
      expect(results[0]!.outcome).toMatchObject({ $case: "error", value: { code: "INTERNAL" } });
      expect(JSON.stringify(results[0])).not.toContain("Alice");
      expect(results[1]!.outcome).toEqual({ $case: "value", value: "Alice Source" });
    });
  });

  describe("security", () => {
    it("refuses a purpose outside the policy per item with PERMISSION_DENIED, and logs it", async () => {
      const { tokens } = await pay().tokenize({ fields: [{ category: "card_number", value: "4242424242424242" }], ttlSeconds: 0, subjectRef: "" });
      const tok = tokens[0]!.token;
      const { results } = await pay().detokenize({ tokens: [tok], purpose: "marketing", justification: "campaign" });
      expect(results[0]!.outcome).toMatchObject({ $case: "error", value: { code: "PERMISSION_DENIED" } });
      const rows = await logRows("token = $1 AND action = 'detokenize'", [tok]);
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ caller: "payment-service", auth: "self_asserted", purpose: "marketing", outcome: "denied", justification: "campaign", category: "card_number" });
    });

    it("refuses a category the caller may not reveal, and one it may not tokenize", async () => {
      const { tokens } = await book().tokenize({ fields: [{ category: "passport_number", value: "P1234567" }], ttlSeconds: 0, subjectRef: "" });
      const { results } = await pay().detokenize({ tokens: [tokens[0]!.token], purpose: "payment_authorization", justification: "" });
      expect(results[0]!.outcome).toMatchObject({ $case: "error", value: { code: "PERMISSION_DENIED" } });
      const err = await codeOf(pay().tokenize({ fields: [{ category: "passport_number", value: "P1234567" }], ttlSeconds: 0, subjectRef: "" }));
      expect(err.code).toBe(status.PERMISSION_DENIED);
    });

    it("refuses an unknown caller with PERMISSION_DENIED and logs it; no caller at all is UNAUTHENTICATED", async () => {
      const stranger = tokenApi(t.clients, "stranger-service");
      const err = await codeOf(stranger.detokenize({ tokens: ["tok_0000000000000000000000"], purpose: "refund", justification: "" }));
      expect(err.code).toBe(status.PERMISSION_DENIED);
      const rows = await logRows("caller = $1", ["stranger-service"]);
      expect(rows.length).toBeGreaterThanOrEqual(1);
      expect(rows[0]!.outcome).toBe("denied");
      const anon = await codeOf(tokenApi(t.clients, undefined).tokenize({ fields: [{ category: "email", value: "a@b.co" }], ttlSeconds: 0, subjectRef: "" }));
      expect(anon.code).toBe(status.UNAUTHENTICATED);
    });

    it("logs every detokenize item before answering", async () => {
      const { tokens } = await pay().tokenize({ fields: [{ category: "cardholder_name", value: "Logged Person" }], ttlSeconds: 0, subjectRef: "" });
      await pay().detokenize({ tokens: [tokens[0]!.token, "tok_1111111111111111111111"], purpose: "refund", justification: "T-9" });
      const rows = await logRows("action = 'detokenize' AND justification = 'T-9'", []);
      expect(rows.map((r) => r.outcome)).toEqual(["allowed", "not_found"]);
    });
  });

  describe("erasure", () => {
    it("DeleteSubject erases a subject's tokens and keeps a deterministic token another subject holds", async () => {
      const shared = "4000056655665556";
      const a = await pay().tokenize({
        fields: [
          { category: "card_number", value: shared },
          { category: "cardholder_name", value: "Subject A" },
        ],
        ttlSeconds: 0,
        subjectRef: "subject-a",
      });
      const b = await pay().tokenize({ fields: [{ category: "card_number", value: shared }], ttlSeconds: 0, subjectRef: "subject-b" });
      expect(b.tokens[0]!.token).toBe(a.tokens[0]!.token);
      const res = await pay().deleteSubject({ subjectRef: "subject-a" });
      expect(res).toMatchObject({ erased: 1, unlinked: 1 });
      const { results } = await pay().detokenize({ tokens: a.tokens.map((x) => x.token), purpose: "refund", justification: "" });
      expect(results[0]!.outcome).toEqual({ $case: "value", value: shared });
      expect(results[1]!.outcome).toMatchObject({ $case: "error", value: { code: "NOT_FOUND" } });
      expect(await pay().deleteSubject({ subjectRef: "subject-b" })).toMatchObject({ erased: 1, unlinked: 0 });
      const after = await pay().detokenize({ tokens: [a.tokens[0]!.token], purpose: "refund", justification: "" });
      expect(after.results[0]!.outcome).toMatchObject({ $case: "error", value: { code: "NOT_FOUND" } });
    });

    it("keeps a deterministic token that a caller without a subject also holds", async () => {
      const pan = "3530111333300000";
      const a = await pay().tokenize({ fields: [{ category: "card_number", value: pan }], ttlSeconds: 0, subjectRef: "subject-c" });
      await pay().tokenize({ fields: [{ category: "card_number", value: pan }], ttlSeconds: 0, subjectRef: "" });
      expect(await pay().deleteSubject({ subjectRef: "subject-c" })).toMatchObject({ erased: 0, unlinked: 1 });
      const { results } = await pay().detokenize({ tokens: [a.tokens[0]!.token], purpose: "refund", justification: "" });
      expect(results[0]!.outcome).toEqual({ $case: "value", value: pan });
    });
  });

  describe("no plaintext at rest", () => {
    it("keeps planted values out of PostgreSQL and Redis after a mixed workload; never a CVV in PostgreSQL", async () => {
      const cvv = "8093";
      const canaries = SAMPLES.filter((s) => s.category !== "card_cvv");
      const tokenized: { token: string; caller: string; purpose: string }[] = [];
      for (const s of canaries) {
        const { tokens } = await tokenApi(t.clients, s.caller).tokenize({ fields: [{ category: s.category, value: s.value }], ttlSeconds: 0, subjectRef: "leak-subject" });
        tokenized.push({ token: tokens[0]!.token, caller: s.caller, purpose: s.purpose });
      }
      const { tokens: cvvTokens } = await pay().tokenize({ fields: [{ category: "card_cvv", value: cvv }, { category: "card_cvv", value: "6152" }], ttlSeconds: 0, subjectRef: "" });
      for (const x of tokenized) await tokenApi(t.clients, x.caller).detokenize({ tokens: [x.token], purpose: x.purpose, justification: "leak-check" });
      await pay().detokenize({ tokens: [cvvTokens[0]!.token], purpose: "payment_authorization", justification: "" });

      const dump = await dumpDatabase(t.vault.db);
      for (const s of canaries) expect({ canary: s.normal, found: containsCanary(dump, s.normal) }).toEqual({ canary: s.normal, found: false });
      // The detector finds a CVV where a leak would put it (a JSON value, hex of its bytes in a bytea).
      expect([containsDigitsCanary(`{"v":"${cvv}"}`, cvv), containsDigitsCanary(`\\\\x00${Buffer.from(cvv).toString("hex")}`, cvv)]).toEqual([true, true]);
      for (const v of [cvv, "6152"]) expect({ cvv: v, found: containsDigitsCanary(dump.replace(/"(seq|chain_seq|version|kek_version)":\d+/g, ""), v) }).toEqual({ cvv: v, found: false });
      // No CVV envelope, in any form: no row for either CVV token outside the access log.
      for (const c of cvvTokens) {
        const { rows } = await t.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM tokens WHERE id = $1", [c.token]);
        expect(rows[0]!.n).toBe(0);
      }
      const { rows: cvvRows } = await t.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM tokens WHERE category = 'card_cvv'", []);
      expect(cvvRows[0]!.n).toBe(0);

      if (t.redisPrefix) {
        const r = new Redis(REDIS_URL);
        try {
          const keys = await r.keys(`${t.redisPrefix}*`);
          // The unused CVV is there (encrypted); the used one is gone.
          expect(keys).toContain(`${t.redisPrefix}cvv:${cvvTokens[1]!.token}`);
          expect(keys).not.toContain(`${t.redisPrefix}cvv:${cvvTokens[0]!.token}`);
          for (const k of keys) {
            const v = (await r.type(k)) === "string" ? await r.getBuffer(k) : Buffer.alloc(0);
            const blob = Buffer.concat([Buffer.from(k), v ?? Buffer.alloc(0)]);
            for (const s of [...canaries.map((c) => c.normal), cvv, "6152"]) expect(blob.includes(Buffer.from(s))).toBe(false);
          }
        } finally {
          r.disconnect();
        }
      }
      // Nor in the service's own log output.
      const logText = t.logs.join("\n");
      for (const s of [...canaries.map((c) => c.normal), cvv, "6152"]) expect(logText.includes(s)).toBe(false);
    });
  });
});
