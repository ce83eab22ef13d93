import { KeyAdminService } from "../../src/gen/fieldvault/v1/key_admin";
import { TokenServiceService } from "../../src/gen/fieldvault/v1/token_service";
import { startTestVault, type TestVault } from "../helpers/vault";
import { verifyChains } from "./helpers/chain";
import { withLuhn } from "../helpers/luhn";
import { waitFor } from "./helpers/ports";
import { codeName, tokens, unaryCall, valuesOf } from "./helpers/rpc";
import { SAMPLES } from "../helpers/samples";

/** Two vault instances share one PostgreSQL database and one Redis prefix: they behave as one vault. */
describe("two instances on one PostgreSQL and Redis", () => {
  let a: TestVault;
  let b: TestVault;

  beforeAll(async () => {
    a = await startTestVault("postgres");
    b = await startTestVault("postgres", {}, { db: a.db, redisPrefix: a.redisPrefix });
  }, 60_000);
  afterAll(async () => {
    await b?.stop();
    await a?.stop();
  }, 60_000);

  it("detokenizes on one what the other tokenized, in every category (CVVs through the shared Redis)", async () => {
    for (const [from, to] of [[a, b], [b, a]] as const) {
      for (const s of SAMPLES) {
        const tok = await tokens(from.clients, s.caller).tokenize([{ category: s.category, value: s.value }]);
        expect(codeName(tok.code)).toBe("OK");
        const read = await tokens(to.clients, s.caller).detokenize([tok.value!.tokens[0]!.token], s.purpose);
        expect({ category: s.category, value: valuesOf(read.value)[0] }).toEqual({ category: s.category, value: s.normal });
      }
    }
  });

  it("gives one token for the same PAN tokenized concurrently on both", async () => {
    const pans = Array.from({ length: 25 }, (_, i) => withLuhn(`4000${String(Date.now() % 1e6).padStart(6, "0")}${String(i).padStart(5, "0")}`));
    const calls = pans.flatMap((pan) =>
      [a, b, a, b].map((v) => tokens(v.clients, "payment-service", 20_000).tokenize([{ category: "card_number", value: pan }])),
    );
    const outs = await Promise.all(calls);
    expect(outs.map((o) => codeName(o.code)).filter((c) => c !== "OK")).toEqual([]);
    pans.forEach((pan, i) => {
      const toks = new Set(outs.slice(i * 4, i * 4 + 4).map((o) => o.value!.tokens[0]!.token));
      expect({ pan, distinct: toks.size }).toEqual({ pan, distinct: 1 });
    });
    const ids = pans.map((_, i) => outs[i * 4]!.value!.tokens[0]!.token);
    const { rows } = await a.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM tokens WHERE id = ANY($1)", [ids]);
    expect(rows[0]!.n).toBe(pans.length);
    const read = await tokens(b.clients, "payment-service").detokenize(ids, "payment_authorization");
    expect(valuesOf(read.value)).toEqual(pans);
  });

  it("uses a key rotated on one instance on the other, and still opens older tokens", async () => {
    const old = await tokens(b.clients, "payment-service").tokenize([{ category: "cardholder_name", value: "Before Rotation" }]);
    const rotated = await unaryCall(a.clients.keys, KeyAdminService.rotateKey, "sec-admin-1", { category: "cardholder_name" });
    expect(codeName(rotated.code)).toBe("OK");
    const version = rotated.value!.activeVersion;
    expect(version).toBeGreaterThanOrEqual(2);

    // Instance b encrypts new values under the new version within seconds (NOTIFY, else its refresh timer).
    const made = await waitFor(
      "instance b to use the rotated key",
      async () => {
        const tok = await tokens(b.clients, "payment-service").tokenize([{ category: "cardholder_name", value: "After Rotation" }]);
        const token = tok.value!.tokens[0]!.token;
        const seen = await unaryCall(b.clients.tokens, TokenServiceService.inspectTokens, "payment-service", { tokens: [token] });
        return seen.value!.tokens[0]!.keyVersion === version ? token : undefined;
      },
      10_000,
      100,
    );
    const read = await tokens(a.clients, "payment-service").detokenize([made, old.value!.tokens[0]!.token], "payment_authorization");
    expect(valuesOf(read.value)).toEqual(["After Rotation", "Before Rotation"]);
  });

  it("keeps one verifiable hash chain per instance in the shared log", async () => {
    const report = await verifyChains(a.vault.db);
    expect(report).toMatchObject({ ok: true });
    expect(report.chains).toBeGreaterThanOrEqual(2);
  });
});
