import { status } from "@grpc/grpc-js";
import { clients, type Clients, codeOf, tokenApi } from "../helpers/client";
import { clientCredentials, issueClientCertificate, TLS_ENV } from "../helpers/tls";
import { startTestVault, type TestVault } from "../helpers/vault";

/**
 * The whole development default policy (DESIGN §6, policy/default.yaml) as a matrix, over mutual
 * TLS: every (caller, category, purpose) is asserted revealed where the table allows it and
 * PERMISSION_DENIED where it does not. The expectations are this file's own table, written from
 * DESIGN §6 — deliberately not derived from the Policy class under test.
 */

const CATEGORIES = [
  "card_number", "card_expiry", "card_cvv", "cardholder_name", "passport_number",
  "identity_document", "date_of_birth", "phone", "email", "address",
] as const;
type Category = (typeof CATEGORIES)[number];

const PURPOSES = [
  "payment_authorization", "refund", "booking_fulfillment", "airline_manifest",
  "customs_declaration", "customer_support", "fraud_investigation", "marketing",
] as const;
type Purpose = (typeof PURPOSES)[number];

const CALLERS = ["payment-service", "booking-service", "support-desk", "sec-admin-1", "sec-admin-2", "ir-analyst"] as const;
type Caller = (typeof CALLERS)[number];

const PAY: Purpose[] = ["payment_authorization", "refund"];
const TRAVEL: Purpose[] = ["airline_manifest", "customs_declaration"];
const CONTACT: Purpose[] = ["booking_fulfillment", "customer_support"];

/** Detokenize: caller → category → purposes. Anything absent is refused. */
const REVEAL: Record<Caller, Partial<Record<Category, Purpose[]>>> = {
  "payment-service": { card_number: PAY, card_expiry: PAY, cardholder_name: PAY, card_cvv: ["payment_authorization"] },
  "booking-service": { passport_number: TRAVEL, identity_document: TRAVEL, date_of_birth: TRAVEL, phone: CONTACT, email: CONTACT, address: CONTACT },
  "support-desk": { phone: ["customer_support"], email: ["customer_support"] },
  "sec-admin-1": {},
  "sec-admin-2": {},
  "ir-analyst": {},
};

/** Tokenize: caller → categories. */
const TOKENIZE: Record<Caller, Category[]> = {
  "payment-service": ["card_number", "card_expiry", "card_cvv", "cardholder_name"],
  "booking-service": ["passport_number", "identity_document", "date_of_birth", "cardholder_name", "phone", "email", "address"],
  "support-desk": [],
  "sec-admin-1": [],
  "sec-admin-2": [],
  "ir-analyst": [],
};

const nextYear = new Date().getUTCFullYear() + 1;
/** A value per category and its normalised form (what a reveal returns). */
const VALUES: Record<Category, { value: string; normal: string }> = {
  card_number: { value: "4111 1111 1111 1111", normal: "4111111111111111" },
  card_expiry: { value: `07/${String(nextYear).slice(2)}`, normal: `07/${nextYear}` },
  card_cvv: { value: "737", normal: "737" },
  cardholder_name: { value: "Matrix Person", normal: "Matrix Person" },
  passport_number: { value: "XK7654321", normal: "XK7654321" },
  identity_document: { value: "ID-MATRIX-1", normal: "ID-MATRIX-1" },
  date_of_birth: { value: "1990-01-31", normal: "1990-01-31" },
  phone: { value: "+44 20 7946 0777", normal: "+442079460777" },
  email: { value: "matrix@example.com", normal: "matrix@example.com" },
  address: { value: "1 Matrix Road, Leeds", normal: "1 Matrix Road, Leeds" },
};

const expected = (caller: Caller | "unknown", category: Category, purpose: Purpose): "revealed" | "PERMISSION_DENIED" =>
  caller !== "unknown" && (REVEAL[caller][category] ?? []).includes(purpose) ? "revealed" : "PERMISSION_DENIED";

describe("default policy matrix over mutual TLS (postgres + redis)", () => {
  let t: TestVault;
  const open: Clients[] = [];
  const api: Partial<Record<Caller, ReturnType<typeof tokenApi>>> = {};
  const tokens = {} as Record<Exclude<Category, "card_cvv">, string>;
  let stranger: ReturnType<typeof issueClientCertificate>;
  let strangerApi: ReturnType<typeof tokenApi>;

  beforeAll(async () => {
    t = await startTestVault("postgres", TLS_ENV);
    for (const name of CALLERS) {
      const c = clients(t.vault.address, clientCredentials(name));
      open.push(c);
      api[name] = tokenApi(c, undefined);
    }
    stranger = issueClientCertificate("matrix-stranger");
    const c = clients(t.vault.address, stranger.credentials);
    open.push(c);
    strangerApi = tokenApi(c, undefined);
    // One long-lived token per category (CVVs are single-use: each call gets a fresh one).
    for (const category of CATEGORIES) {
      if (category === "card_cvv") continue;
      const owner = TOKENIZE["payment-service"].includes(category) ? "payment-service" : "booking-service";
      const res = await api[owner]!.tokenize({ fields: [{ category, value: VALUES[category].value }], ttlSeconds: 0, subjectRef: "" });
      tokens[category] = res.tokens[0]!.token;
    }
  });
  afterAll(async () => {
    for (const c of open) c.close();
    stranger?.cleanup();
    await t?.stop();
  });

  const freshCvv = async () =>
    (await api["payment-service"]!.tokenize({ fields: [{ category: "card_cvv", value: "737" }], ttlSeconds: 0, subjectRef: "" })).tokens[0]!.token;

  describe("detokenize", () => {
    const cases = CALLERS.flatMap((caller) => PURPOSES.map((purpose) => ({ caller, purpose })));
    it.each(cases)("$caller for $purpose: each category revealed or refused as the policy table says", async ({ caller, purpose }) => {
      const cvv = await freshCvv();
      const order = CATEGORIES.map((c) => (c === "card_cvv" ? cvv : tokens[c]));
      const { results } = await api[caller]!.detokenize({ tokens: order, purpose, justification: "matrix" });
      const actual = Object.fromEntries(
        results.map((r, i) => {
          const category = CATEGORIES[i]!;
          expect(r.category).toBe(category);
          if (r.outcome?.$case === "value") {
            expect(r.outcome.value).toBe(VALUES[category].normal);
            return [category, "revealed"];
          }
          return [category, r.outcome?.value.code];
        }),
      );
      const want = Object.fromEntries(CATEGORIES.map((c) => [c, expected(caller, c, purpose)]));
      expect(actual).toEqual(want);
      // Every item was logged with its outcome.
      const { rows } = await t.vault.db.query<{ outcome: string; n: number }>(
        `SELECT outcome, count(*)::int AS n FROM access_log WHERE action = 'detokenize' AND caller = $1 AND purpose = $2 AND token = ANY($3) GROUP BY outcome`,
        [`spiffe://ego/${caller}`, purpose, order],
      );
      const revealed = Object.values(want).filter((v) => v === "revealed").length;
      expect(Object.fromEntries(rows.map((r) => [r.outcome, r.n]))).toEqual({
        ...(revealed ? { allowed: revealed } : {}),
        ...(revealed < CATEGORIES.length ? { denied: CATEGORIES.length - revealed } : {}),
      });
    });

    it.each(PURPOSES)("an identity the policy does not know is refused outright for %s, and logged", async (purpose) => {
      const order = CATEGORIES.filter((c) => c !== "card_cvv").map((c) => tokens[c as Exclude<Category, "card_cvv">]);
      for (const c of CATEGORIES) expect(expected("unknown", c, purpose)).toBe("PERMISSION_DENIED");
      const { code } = await codeOf(strangerApi.detokenize({ tokens: order, purpose, justification: "matrix" }));
      expect(code).toBe(status.PERMISSION_DENIED);
      const { rows } = await t.vault.db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM access_log WHERE caller = 'spiffe://ego/matrix-stranger' AND action = 'detokenize' AND outcome = 'denied'",
        [],
      );
      // The first denial of an unknown identity is logged at once; its repeats within the window are
      // counted and written as one summary entry when the window closes (issue 10.5: a flood of
      // unknown callers costs a counter, not a write per call).
      expect(rows[0]!.n).toBe(1);
    });

    it("the table is the one DESIGN §6 describes: 21 grants, none for marketing or fraud_investigation", () => {
      const grants = CALLERS.flatMap((caller) => CATEGORIES.flatMap((c) => PURPOSES.filter((p) => expected(caller, c, p) === "revealed")));
      expect(grants).toHaveLength(21);
      expect(grants).not.toContain("marketing");
      expect(grants).not.toContain("fraud_investigation");
    });
  });

  describe("tokenize", () => {
    it.each([...CALLERS, "unknown" as const])("%s may tokenize exactly its categories", async (caller) => {
      const who = caller === "unknown" ? strangerApi : api[caller]!;
      const actual: Record<string, string> = {};
      for (const category of CATEGORIES) {
        try {
          const res = await who.tokenize({ fields: [{ category, value: VALUES[category].value }], ttlSeconds: 0, subjectRef: "" });
          expect(res.tokens[0]!.category).toBe(category);
          actual[category] = "allowed";
        } catch (err) {
          actual[category] = status[(err as { code: number }).code]!;
        }
      }
      const allowed = caller === "unknown" ? [] : TOKENIZE[caller];
      expect(actual).toEqual(Object.fromEntries(CATEGORIES.map((c) => [c, allowed.includes(c) ? "allowed" : "PERMISSION_DENIED"])));
    });
  });
});
