import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import YAML from "yaml";
import { fromRoot } from "../../src/config/paths";
import fc from "fast-check";
import { luhnValid, rangeTokens, panShape, rangeKey } from "../../src/domain/token-formats";
import { TokenFormat, type TokenizedField } from "../../src/gen/fieldvault/v1/token_service";
import { FieldVaultClient, TokenFormat as SdkTokenFormat } from "../../src/sdk";
import { codeOf, logApi, tokenApi } from "../helpers/client";
import { withLuhn } from "../helpers/luhn";
import { BACKENDS, startTestVault, type TestVault } from "../helpers/vault";

const PRESERVING = TokenFormat.TOKEN_FORMAT_PRESERVING;
const nextYear = new Date().getUTCFullYear() + 1;

/** `n` distinct Luhn-valid PANs of each length 12–19, from a fixed seed (reproducible). */
function pansOfEveryLength(n: number, seed: number): string[] {
  const out = new Set<string>();
  for (let len = 12; len <= 19; len++) {
    const arb = fc.array(fc.integer({ min: 0, max: 9 }), { minLength: len - 1, maxLength: len - 1 }).map((d) => withLuhn(d.join("")));
    const mine = new Set<string>();
    let s = seed + len;
    while (mine.size < n) for (const p of fc.sample(arb, { seed: s++, numRuns: n })) if (mine.size < n) mine.add(p);
    mine.forEach((p) => out.add(p));
  }
  return [...out];
}

/** Every real PAN of one 12-digit range (first 6 + 2 middle + last 4): ten of them, one per first middle digit. */
function wholeRange12(prefix: string, suffix: string): string[] {
  const out: string[] = [];
  for (let n = 0; n < 100; n++) {
    const p = prefix + String(n).padStart(2, "0") + suffix;
    if (luhnValid(p)) out.push(p);
  }
  return out;
}

describe.each(BACKENDS)("format-preserving card tokens on %s", (backend) => {
  let t: TestVault;
  const pay = () => tokenApi(t.clients, "payment-service");
  const count = async (sql: string, params: unknown[] = []) => (await t.vault.db.query<{ n: number }>(sql, params)).rows[0]!.n;
  const tokenize = async (values: string[], format = PRESERVING, extra: { category: string; value: string }[] = []) => {
    const out: TokenizedField[] = [];
    for (let i = 0; i < values.length; i += 1000) {
      const { tokens } = await pay().tokenize({
        fields: [...values.slice(i, i + 1000).map((value) => ({ category: "card_number", value, tokenFormat: format })), ...extra],
        ttlSeconds: 0,
        subjectRef: "",
      });
      out.push(...tokens);
    }
    return out;
  };

  let policyDir: string;
  beforeAll(async () => {
    // The round trip reveals thousands of cards: lift the per-minute budget for this vault only.
    policyDir = mkdtempSync(join(tmpdir(), "fv-cards-"));
    const doc = YAML.parse(readFileSync(fromRoot("policy", "default.yaml"), "utf8")) as { rate_limits: { detokenize_per_minute: number } };
    doc.rate_limits.detokenize_per_minute = 1_000_000;
    writeFileSync(join(policyDir, "policy.yaml"), YAML.stringify(doc));
    t = await startTestVault(backend, { FIELDVAULT_POLICY_FILE: join(policyDir, "policy.yaml") });
  });
  afterAll(async () => {
    await t?.stop();
    rmSync(policyDir, { recursive: true, force: true });
  });

  it("gives thousands of PANs of every length 12–19 tokens of their length: digits, first 6 and last 4 kept, Luhn-invalid, unique, and each reveals its PAN", async () => {
    const pans = [...pansOfEveryLength(backend === "postgres" ? 400 : 250, 13), ...wholeRange12("411111", "4242")];
    const tokens = await tokenize(pans);
    expect(tokens).toHaveLength(pans.length);
    tokens.forEach((tok, i) => {
      const p = pans[i]!;
      expect(tok.token).toHaveLength(p.length);
      expect(tok.token).toMatch(/^\d{12,19}$/);
      expect(tok.token.slice(0, 6)).toBe(p.slice(0, 6));
      expect(tok.token.slice(-4)).toBe(p.slice(-4));
      expect(luhnValid(tok.token)).toBe(false);
      expect(tok.masked?.last).toBe(p.slice(-4));
    });
    expect(new Set(tokens.map((x) => x.token)).size).toBe(pans.length);
    // Round trip through the real vault, in batches of the maximum size.
    for (let i = 0; i < tokens.length; i += 1000) {
      const batch = tokens.slice(i, i + 1000);
      const { results } = await pay().detokenize({ tokens: batch.map((x) => x.token), purpose: "payment_authorization", justification: "FPE-RT" });
      expect(results.map((r) => r.outcome)).toEqual(pans.slice(i, i + 1000).map((value) => ({ $case: "value", value })));
    }
    // The database holds no duplicate and no Luhn-valid alias.
    expect(await count("SELECT count(DISTINCT alias)::int AS n FROM token_aliases")).toBe(await count("SELECT count(*)::int AS n FROM token_aliases"));
  });

  it("is deterministic per PAN; the opaque and preserving tokens of one PAN are two names of one stored value", async () => {
    const p = "5105105105105100";
    const [a] = await tokenize([p]);
    const [b] = await tokenize(["5105 1051 0510 5100"]);
    const [o] = await tokenize([p], TokenFormat.TOKEN_FORMAT_OPAQUE);
    const [u] = await tokenize([p], TokenFormat.TOKEN_FORMAT_UNSPECIFIED);
    expect(b!.token).toBe(a!.token);
    expect(o!.token).toMatch(/^tok_[0-9A-Za-z]{22}$/);
    expect(u!.token).toBe(o!.token);
    // Two names, one row: the alias points at the opaque id.
    expect(await count("SELECT count(*)::int AS n FROM token_aliases WHERE alias = $1 AND token_id = $2", [a!.token, o!.token])).toBe(1);
    const { results } = await pay().detokenize({ tokens: [a!.token, o!.token], purpose: "refund", justification: "" });
    expect(results.map((r) => r.outcome)).toEqual([{ $case: "value", value: p }, { $case: "value", value: p }]);
    const ins = await pay().inspect({ tokens: [a!.token, o!.token] });
    expect(ins.tokens.map((x) => x.masked?.display)).toEqual(["mastercard •••• 5100", "mastercard •••• 5100"]);
    expect(ins.tokens[0]!.createdAt).toEqual(ins.tokens[1]!.createdAt);
    // Erasing by the preserving token erases the value: both names answer NOT_FOUND.
    expect((await pay().deleteTokens({ tokens: [a!.token] })).deleted).toBe(1);
    const after = await pay().detokenize({ tokens: [a!.token, o!.token], purpose: "refund", justification: "" });
    expect(after.results.map((r) => r.outcome?.$case === "error" && r.outcome.value.code)).toEqual(["NOT_FOUND", "NOT_FOUND"]);
    expect(await count("SELECT count(*)::int AS n FROM token_aliases WHERE alias = $1", [a!.token])).toBe(0);
  });

  it("works through the typed SDK (the import tool's path): tokenFormat per field, reveal by the digits", async () => {
    const sdk = new FieldVaultClient({ address: t.vault.address, caller: "payment-service" });
    try {
      const [pres, opaque] = await sdk.tokenize([
        { category: "card_number", value: "3530111333300000", tokenFormat: SdkTokenFormat.TOKEN_FORMAT_PRESERVING },
        { category: "card_number", value: "3530111333300000" },
      ]);
      expect(pres!.token).toMatch(/^353011\d{6}0000$/);
      expect(opaque!.token).toMatch(/^tok_/);
      expect(await sdk.reveal([pres!.token, opaque!.token], { purpose: "refund" })).toEqual(["3530111333300000", "3530111333300000"]);
    } finally {
      sdk.close();
    }
  });

  it("refuses PRESERVING for other categories, naming the field index and category, and stores nothing", async () => {
    const before = await count("SELECT count(*)::int AS n FROM tokens");
    const err = await codeOf(
      pay().tokenize({
        fields: [
          { category: "card_number", value: "4000056655665556", tokenFormat: PRESERVING },
          { category: "cardholder_name", value: "Refused Name", tokenFormat: PRESERVING },
        ],
        ttlSeconds: 0,
        subjectRef: "",
      }),
    );
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.details).toContain("fields[1].token_format (cardholder_name)");
    expect(err.details).not.toContain("Refused Name");
    const bad = await codeOf(pay().tokenize({ fields: [{ category: "card_number", value: "4000056655665556", tokenFormat: 7 as TokenFormat }], ttlSeconds: 0, subjectRef: "" }));
    expect(bad.code).toBe(status.INVALID_ARGUMENT);
    expect(bad.details).toContain("fields[0].token_format: unknown");
    expect(await count("SELECT count(*)::int AS n FROM tokens")).toBe(before);
  });

  it("when a BIN range has no unique token left, answers RESOURCE_EXHAUSTED, stores nothing, and fails no neighbour", async () => {
    // A 12-digit range has 90 preserving tokens and only 10 real PANs, so real PANs never fill it;
    // fill it in the database (as the rogue DBA or a bug would) and watch the vault refuse to reuse one.
    const pan = withLuhn("62345600777");
    const shape = panShape(pan);
    const all = [...rangeTokens(shape)];
    expect(all).toHaveLength(90);
    const fill = async (aliases: string[]) => {
      for (const [i, alias] of aliases.entries()) {
        const id = `tok_fill${backend}${String(i).padStart(14, "0")}`;
        await t.vault.db.query(
          "INSERT INTO tokens (id, category, kek_version, wrapped_dek, ciphertext, masked) VALUES ($1, 'card_number', 1, '\\x00', '\\x00', '{}')",
          [id],
        );
        await t.vault.db.query("INSERT INTO token_aliases (token_id, alias, range_key) VALUES ($1, $2, $3)", [id, alias, rangeKey(shape)]);
      }
    };
    await fill(all.slice(0, 89));
    // One left: the vault finds it (random draws keep colliding, so it enumerates the range).
    const sibling = wholeRange12("623456", pan.slice(-4)).find((p) => p !== pan)!;
    const [one] = await tokenize([sibling]);
    expect(one!.token).toBe(all[89]);
    // Now the range is full.
    const before = await count("SELECT count(*)::int AS n FROM tokens");
    const [full, neighbour] = await Promise.all([
      codeOf(pay().tokenize({ fields: [{ category: "card_number", value: pan, tokenFormat: PRESERVING }, { category: "cardholder_name", value: "Left Out" }], ttlSeconds: 0, subjectRef: "" })),
      pay().tokenize({ fields: [{ category: "cardholder_name", value: "Neighbour In The Same Flush" }], ttlSeconds: 0, subjectRef: "" }),
    ]);
    expect(full.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(full.details).toMatch(/no unique format-preserving token is left in this 12-digit BIN range/);
    expect(full.details).not.toContain(pan.slice(0, 6));
    expect(neighbour.tokens[0]!.token).toMatch(/^tok_/);
    expect(await count("SELECT count(*)::int AS n FROM tokens")).toBe(before + 1); // the neighbour only
    // The opaque form still works for that PAN.
    const [opaque] = await tokenize([pan], TokenFormat.TOKEN_FORMAT_OPAQUE);
    expect(opaque!.token).toMatch(/^tok_/);
  });

  it("reveals nothing when an alias is moved to another card's row in the database", async () => {
    const [x] = await tokenize(["4000000000000002"]);
    const [y] = await tokenize(["5200828282828210"], TokenFormat.TOKEN_FORMAT_OPAQUE);
    // The rogue DBA points x's preserving token at y's row.
    await t.vault.db.query("UPDATE token_aliases SET token_id = $2 WHERE alias = $1", [x!.token, y!.token]);
    const { results } = await pay().detokenize({ tokens: [x!.token, y!.token], purpose: "refund", justification: "MOVED" });
    expect(results[0]!.outcome).toEqual({ $case: "error", value: { code: "INTERNAL", message: "value could not be decrypted", retryAfterMs: 0 } });
    expect(results[1]!.outcome).toEqual({ $case: "value", value: "5200828282828210" });
  });

  it("AccessLog.Query by either form finds the entries of both; a real PAN as a token is never looked up or logged", async () => {
    const p = "4012888888881881";
    const [pres] = await tokenize([p]);
    const [opq] = await tokenize([p], TokenFormat.TOKEN_FORMAT_OPAQUE);
    await pay().detokenize({ tokens: [pres!.token], purpose: "refund", justification: "BY-PRES" });
    await pay().detokenize({ tokens: [opq!.token], purpose: "refund", justification: "BY-OPQ" });
    const ir = logApi(t.clients, "ir-analyst");
    for (const token of [pres!.token, opq!.token]) {
      const entries = await ir.query({ token, action: "detokenize" });
      expect(entries.map((e) => e.justification).sort()).toEqual(["BY-OPQ", "BY-PRES"]);
    }
    const refused = await codeOf(ir.query({ token: p }));
    expect(refused.code).toBe(status.INVALID_ARGUMENT);
    expect(refused.details).not.toContain(p);
    // Detokenize of the PAN itself: NOT_FOUND, and the log says "(malformed)", never the digits.
    const { results } = await pay().detokenize({ tokens: [p], purpose: "refund", justification: "PAN-AS-TOKEN" });
    expect(results[0]!.outcome).toMatchObject({ $case: "error", value: { code: "NOT_FOUND" } });
    const { rows } = await t.vault.db.query<{ token: string }>("SELECT token FROM access_log WHERE justification = 'PAN-AS-TOKEN'", []);
    expect(rows).toEqual([{ token: "(malformed)" }]);
    expect(await count("SELECT count(*)::int AS n FROM access_log WHERE token = $1 OR detail LIKE $2", [p, `%${p}%`])).toBe(0);
  });
});

describe.each(BACKENDS)("card lifetime from expiry on %s", (backend) => {
  let t: TestVault;
  const pay = () => tokenApi(t.clients, "payment-service");
  const storedExpiry = async (id: string) =>
    (await t.vault.db.query<{ e: Date | null }>("SELECT expires_at AS e FROM tokens WHERE id = $1", [id])).rows[0]?.e ?? null;

  beforeAll(async () => {
    t = await startTestVault(backend, { FIELDVAULT_CARD_RETENTION_DAYS: "30" });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("gives card_number and card_expiry of one call the end of the expiry month + FIELDVAULT_CARD_RETENTION_DAYS", async () => {
    const { tokens } = await pay().tokenize({
      fields: [
        { category: "card_number", value: "4111111111111111", tokenFormat: PRESERVING },
        { category: "card_expiry", value: `12/${nextYear}` },
        { category: "cardholder_name", value: "Lifetime Holder" },
      ],
      ttlSeconds: 0,
      subjectRef: "",
    });
    const want = new Date(Date.UTC(nextYear + 1, 0, 1) + 30 * 86400_000);
    expect(tokens[0]!.expiresAt).toEqual(want);
    expect(tokens[1]!.expiresAt).toEqual(want);
    expect(tokens[2]!.expiresAt).toBeUndefined();
    const ins = await pay().inspect({ tokens: [tokens[0]!.token, tokens[1]!.token] });
    expect(ins.tokens.map((x) => x.expiresAt)).toEqual([want, want]);
  });

  it("lets ttl_seconds win over the card's expiry", async () => {
    const before = Date.now();
    const { tokens } = await pay().tokenize({
      fields: [
        { category: "card_number", value: "378282246310005" },
        { category: "card_expiry", value: `01/${nextYear + 3}` },
      ],
      ttlSeconds: 3600,
      subjectRef: "",
    });
    for (const x of tokens) {
      expect(x.expiresAt!.getTime()).toBeGreaterThanOrEqual(before + 3600_000 - 1000);
      expect(x.expiresAt!.getTime()).toBeLessThanOrEqual(Date.now() + 3600_000 + 1000);
    }
  });

  it("keeps the latest expiry anyone asked for on a deterministic card token", async () => {
    const pan = "6011111111111117";
    const call = (exp: string) =>
      pay().tokenize({ fields: [{ category: "card_number", value: pan }, { category: "card_expiry", value: exp }], ttlSeconds: 0, subjectRef: "" });
    const a = await call(`06/${nextYear + 2}`);
    const late = new Date(Date.UTC(nextYear + 2, 6, 1) + 30 * 86400_000);
    expect(await storedExpiry(a.tokens[0]!.token)).toEqual(late);
    // An earlier expiry does not shorten it…
    const b = await call(`03/${nextYear}`);
    expect(b.tokens[0]!.token).toBe(a.tokens[0]!.token);
    expect(await storedExpiry(a.tokens[0]!.token)).toEqual(late);
    // …a later one extends it.
    await call(`09/${nextYear + 4}`);
    expect(await storedExpiry(a.tokens[0]!.token)).toEqual(new Date(Date.UTC(nextYear + 4, 9, 1) + 30 * 86400_000));
  });
});
