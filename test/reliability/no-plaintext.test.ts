import { execFileSync } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { Redis } from "ioredis";
import { REDIS_URL } from "../helpers/backends";
import { startTestVault, type TestVault } from "../helpers/vault";
import { withLuhn } from "../helpers/luhn";
import { pgBin } from "./helpers/own-postgres";
import { codeName, tokens, unaryCall, valuesOf } from "./helpers/rpc";
import { TokenServiceService } from "../../src/gen/fieldvault/v1/token_service";

const letters = (n: number) => Array.from(randomBytes(n), (b) => "BCDFGHJKLMNPQRSTVWXZ"[b % 20]).join("");
const digits = (n: number) => Array.from({ length: n }, () => String(randomInt(10))).join("");
const nextYear = new Date().getUTCFullYear() + 2;

/** Fresh, long, distinctive canaries every run, so a stale match from another run cannot hide or fake a leak. */
function canaries() {
  const pan = withLuhn(`4${digits(17)}`);
  const tag = letters(8);
  return {
    pan: { category: "card_number", value: `${pan.slice(0, 4)} ${pan.slice(4, 8)} ${pan.slice(8)}`, normal: pan, caller: "payment-service", purpose: "payment_authorization" },
    expiry: { category: "card_expiry", value: `0${randomInt(1, 10)}/${nextYear}`, caller: "payment-service", purpose: "refund" },
    name: { category: "cardholder_name", value: `Canaryname ${tag} Quillfeather`, caller: "payment-service", purpose: "payment_authorization" },
    passport: { category: "passport_number", value: `Q${letters(2)}${digits(6)}`, caller: "booking-service", purpose: "airline_manifest" },
    iddoc: { category: "identity_document", value: `IDCANARY-${tag}-${digits(6)}`, caller: "booking-service", purpose: "customs_declaration" },
    dob: { category: "date_of_birth", value: `19${randomInt(10, 90)}-0${randomInt(1, 10)}-1${randomInt(0, 10)}`, caller: "booking-service", purpose: "airline_manifest" },
    phone: { category: "phone", value: `+4420${digits(8)}`, caller: "booking-service", purpose: "booking_fulfillment" },
    email: { category: "email", value: `canary.${tag.toLowerCase()}@example-canary.org`, caller: "booking-service", purpose: "customer_support" },
    address: { category: "address", value: `${randomInt(100, 999)} Canaryplume ${tag} Road, Leeds`, caller: "booking-service", purpose: "booking_fulfillment" },
  };
}

/** Where a canary could hide in text: as itself, as the hex of its UTF-8 bytes (bytea), as base64. */
function leakForms(canary: string): string[] {
  const bytes = Buffer.from(canary, "utf8");
  const forms: string[] = [];
  // base64 at each of the three alignments a value can have inside a longer blob (the stable middle part).
  for (let pad = 0; pad < 3; pad++) {
    const b64 = Buffer.concat([Buffer.alloc(pad), bytes]).toString("base64");
    forms.push(b64.slice(4, b64.length - 4));
  }
  return [canary, bytes.toString("hex"), ...forms.filter((f) => f.length >= 8)];
}

const found = (haystack: string, canary: string) => {
  const h = haystack.toLowerCase();
  return leakForms(canary).filter((f) => h.includes(f.toLowerCase()));
};

/** A short CVV only counts as found as a standalone number in text (hex blobs removed), never inside other digits or words. */
const cvvFound = (haystack: string, cvv: string) =>
  new RegExp(`(?<![0-9A-Za-z])${cvv}(?![0-9A-Za-z])`).test(haystack.replace(/\\\\?x[0-9a-fA-F]+/g, ""));

describe("no plaintext anywhere", () => {
  let t: TestVault;
  beforeAll(async () => {
    t = await startTestVault("postgres", { FIELDVAULT_METRICS_LISTEN: "127.0.0.1:0", FIELDVAULT_LOG_LEVEL: "trace" });
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
  }, 60_000);

  it("finds no canary in pg_dump, Redis, logs, /metrics or error messages after a mixed workload; a used CVV is nowhere", async () => {
    const c = canaries();
    const all = Object.values(c);
    const cvv = String(randomInt(1000, 10_000));
    const details: string[] = []; // every error message and item message the vault sent back
    const note = (o: { details?: string }) => o.details && details.push(o.details);

    const pay = tokens(t.clients, "payment-service");
    const book = tokens(t.clients, "booking-service");
    const made = new Map<string, string>();
    // Single and batched tokenize, twice for the deterministic ones, with and without a subject.
    for (const s of all) {
      const api = tokens(t.clients, s.caller);
      const one = await api.tokenize([{ category: s.category, value: s.value }], 0, `subj-${s.category}`);
      expect(codeName(one.code)).toBe("OK");
      made.set(s.category, one.value!.tokens[0]!.token);
      await api.tokenize([{ category: s.category, value: s.value }]);
    }
    const cvvTok = await pay.tokenize([{ category: "card_cvv", value: cvv }, { category: "card_number", value: c.pan.value }]);
    expect(codeName(cvvTok.code)).toBe("OK");
    const cvvToken = cvvTok.value!.tokens[0]!.token;
    const unusedCvv = String(randomInt(1000, 10_000));
    await pay.tokenize([{ category: "card_cvv", value: unusedCvv }]);

    // Reveals, refusals, inspections, rejected inputs that carry a canary, deletions.
    for (const s of all) {
      const api = tokens(t.clients, s.caller);
      const read = await api.detokenize([made.get(s.category)!], s.purpose);
      expect(valuesOf(read.value)[0]).toBeDefined();
      const wrongPurpose = await api.detokenize([made.get(s.category)!], "marketing");
      wrongPurpose.value?.results.forEach((r) => r.outcome?.$case === "error" && details.push(r.outcome.value.message));
      const insp = await unaryCall(t.clients.tokens, TokenServiceService.inspectTokens, s.caller, { tokens: [made.get(s.category)!] });
      expect(codeName(insp.code)).toBe("OK");
      // Rejected: the canary inside an invalid value (control character / not a card number / wrong category).
      note(await api.tokenize([{ category: s.category, value: `${s.value}\u0007` }]));
      note(await api.tokenize([{ category: "card_number", value: `${s.value}x` }]));
      note(await api.tokenize([{ category: "no_such_category", value: s.value }]));
    }
    note(await pay.tokenize([{ category: "card_cvv", value: `${cvv}5` }]));
    const usedCvv = await pay.detokenize([cvvToken], "payment_authorization");
    expect(valuesOf(usedCvv.value)).toEqual([cvv]);
    const again = await pay.detokenize([cvvToken], "payment_authorization");
    expect(again.value!.results[0]!.outcome?.$case).toBe("error");
    await unaryCall(t.clients.tokens, TokenServiceService.deleteTokens, "booking-service", { tokens: [made.get("address")!] });
    await unaryCall(t.clients.tokens, TokenServiceService.deleteSubject, "booking-service", { subjectRef: "subj-email" });
    await t.vault.commits.checkpoint();

    // Everything the vault wrote or holds.
    const dump = execFileSync(pgBin("pg_dump"), ["--no-owner", "--data-only", t.db!.url], { maxBuffer: 256 * 1024 * 1024 }).toString();
    expect(dump).toContain("COPY public.access_log");
    const r = new Redis(REDIS_URL);
    let redisText = "";
    try {
      const keys = await r.keys(`${t.redisPrefix}*`);
      for (const k of keys) {
        const type = await r.type(k);
        const v = type === "string" ? await r.getBuffer(k) : Buffer.from(JSON.stringify(type === "hash" ? await r.hgetall(k) : await r.dump(k)));
        redisText += `${k}\n${v?.toString("latin1") ?? ""}\n${v?.toString("hex") ?? ""}\n`;
      }
      // The used CVV's envelope is gone from Redis; the unused one is still there, encrypted.
      expect(keys.filter((k) => k.includes(cvvToken))).toEqual([]);
      expect(keys.filter((k) => k.startsWith(`${t.redisPrefix}cvv:`))).toHaveLength(1);
    } finally {
      r.disconnect();
    }
    const logs = t.logs.join("\n");
    expect(logs).toContain("fieldvault listening");
    const metricsAddress = (t.vault as { metricsAddress?: string }).metricsAddress;
    expect(metricsAddress).toBeDefined();
    const metrics = await (await fetch(`http://${metricsAddress}/metrics`)).text();
    expect(metrics).toContain("# TYPE");

    // The detectors do find a canary in each form it could take (so an empty result means something).
    for (const s of all) {
      expect(found(`\\x00${Buffer.from(`ab${s.value}`).toString("hex")}ff`, s.value).length).toBeGreaterThan(0);
      if (s.value.length >= 12) {
        for (const pad of ["", "z", "zz"]) expect(found(Buffer.from(`${pad}${s.value}q`).toString("base64"), s.value).length).toBeGreaterThan(0);
      }
    }
    expect(cvvFound(`{"cvv":"${cvv}"}`, cvv)).toBe(true);

    const places = { pg_dump: dump, redis: redisText, logs, metrics, errors: details.join("\n") };
    const leaks: string[] = [];
    for (const [place, text] of Object.entries(places)) {
      for (const s of all) {
        for (const canary of new Set([s.value, (s as { normal?: string }).normal ?? s.value])) {
          const hits = found(text, canary);
          if (hits.length) leaks.push(`${s.category} in ${place} as ${hits.join(", ")}`);
        }
      }
      if (cvvFound(text, cvv)) leaks.push(`used CVV in ${place}`);
      if (cvvFound(text, unusedCvv) && place !== "redis") leaks.push(`unused CVV in ${place}`);
    }
    expect(leaks).toEqual([]);
    // The CVV never reached PostgreSQL at all: no token row for it.
    const { rows } = await t.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM tokens WHERE id = $1 OR category = 'card_cvv'", [cvvToken]);
    expect(rows[0]!.n).toBe(0);
    expect(details.length).toBeGreaterThanOrEqual(all.length * 3);
  }, 60_000);
});
