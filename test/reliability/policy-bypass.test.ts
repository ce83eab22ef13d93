import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ChannelCredentials } from "@grpc/grpc-js";
import { parse } from "yaml";
import { fromRoot } from "../../src/config/paths";
import { clients, type Clients } from "../helpers/client";
import { tempDir } from "../helpers/temp";
import { startTestVault, type TestVault } from "../helpers/vault";
import { codeName, tokens, valuesOf } from "./helpers/rpc";
import { SAMPLES } from "../helpers/samples";

const policyDoc = parse(readFileSync(fromRoot("policy", "default.yaml"), "utf8")) as {
  purposes: Record<string, string>;
  never_reveal_for: string[];
  callers: Record<string, { detokenize?: Record<string, string[]> }>;
};
const PURPOSES = [...Object.keys(policyDoc.purposes), "no_such_purpose"];
const CALLERS = Object.keys(policyDoc.callers);
/** Read straight from the policy file, not from the service: may `caller` see `category` for `purpose`? */
const granted = (caller: string, category: string, purpose: string) =>
  purpose in policyDoc.purposes && !policyDoc.never_reveal_for.includes(purpose) && !!policyDoc.callers[caller]?.detokenize?.[category]?.includes(purpose);

describe("policy bypass", () => {
  describe("category × purpose × caller", () => {
    let t: TestVault;
    beforeAll(async () => {
      t = await startTestVault("postgres");
    }, 60_000);
    afterAll(async () => {
      await t?.stop();
    }, 60_000);

    it("reveals a token only through a purpose granted to that caller for that token's category", async () => {
      const made = new Map<string, string>(); // category → token (CVVs are made fresh for each call: single use)
      for (const s of SAMPLES.filter((x) => x.category !== "card_cvv")) {
        const out = await tokens(t.clients, s.caller).tokenize([{ category: s.category, value: s.value }]);
        made.set(s.category, out.value!.tokens[0]!.token);
      }
      const normal = new Map<string, string>(SAMPLES.map((s) => [s.category, s.normal]));
      let allowed = 0;
      let refused = 0;
      for (const caller of CALLERS) {
        for (const purpose of PURPOSES) {
          const cvv = await tokens(t.clients, "payment-service").tokenize([{ category: "card_cvv", value: "737" }]);
          const batch = new Map(made).set("card_cvv", cvv.value!.tokens[0]!.token);
          const cats = [...batch.keys()];
          const out = await tokens(t.clients, caller).detokenize(cats.map((c) => batch.get(c)!), purpose);
          expect(codeName(out.code)).toBe("OK");
          out.value!.results.forEach((r, i) => {
            const category = cats[i]!;
            const want = granted(caller, category, purpose);
            const got = r.outcome?.$case === "value" ? r.outcome.value : `error:${r.outcome?.value.code}`;
            expect({ caller, purpose, category, got }).toEqual({ caller, purpose, category, got: want ? normal.get(category) : "error:PERMISSION_DENIED" });
            if (want) allowed++;
            else refused++;
          });
          // A refused CVV is not consumed: its owner can still use it once, for the granted purpose.
          if (!granted(caller, "card_cvv", purpose)) {
            const again = await tokens(t.clients, "payment-service").detokenize([batch.get("card_cvv")!], "payment_authorization");
            expect(valuesOf(again.value)).toEqual(["737"]);
          }
        }
      }
      expect(allowed).toBeGreaterThan(0);
      expect(refused).toBeGreaterThan(allowed);
      // Every refusal is in the access log as denied.
      const { rows } = await t.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM access_log WHERE action = 'detokenize' AND outcome = 'denied'", []);
      expect(rows[0]!.n).toBe(refused);
    }, 60_000);
  });

  describe("production mode: identity comes only from the client certificate", () => {
    let t: TestVault;
    const key = (name: string) => readFileSync(fromRoot("keys-dev", name));
    const tls = (client?: string, ca = "ca.pem") =>
      client ? ChannelCredentials.createSsl(key(ca), key(`${client}.key`), key(`${client}.pem`)) : ChannelCredentials.createSsl(key(ca));
    let opened: Clients[] = [];
    const connect = (creds: ChannelCredentials) => {
      const c = clients(`localhost:${t.vault.port}`, creds);
      opened.push(c);
      return c;
    };
    const countTokens = async () => (await t.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM tokens", [])).rows[0]!.n;

    beforeAll(async () => {
      const dir = tempDir("fv-prod-"); // holds a signing key: removed when the file ends
      const signing = join(dir, "signing.key");
      writeFileSync(signing, randomBytes(32).toString("base64"));
      t = await startTestVault("postgres", {
        FIELDVAULT_MODE: "production",
        FIELDVAULT_ROOT_KEY: randomBytes(32).toString("base64"),
        FIELDVAULT_SIGNING_KEY_FILE: signing,
        FIELDVAULT_TLS_CERT_FILE: fromRoot("keys-dev", "server.pem"),
        FIELDVAULT_TLS_KEY_FILE: fromRoot("keys-dev", "server.key"),
        FIELDVAULT_TLS_CA_FILE: fromRoot("keys-dev", "ca.pem"),
        FIELDVAULT_ALLOW_DEV_MATERIAL: "true", // keys-dev certificates: the explicit opt-in
      });
    }, 60_000);
    afterAll(async () => {
      for (const c of opened) c.close();
      opened = [];
      await t?.stop();
    }, 60_000);

    it("serves a caller with a valid client certificate (control)", async () => {
      const c = connect(tls("payment-service"));
      const out = await tokens(c, "booking-service").tokenize([{ category: "card_number", value: "4111111111111111" }]);
      expect(codeName(out.code)).toBe("OK");
      const { rows } = await t.vault.db.query<{ caller: string; auth: string }>("SELECT caller, auth FROM access_log WHERE action = 'tokenize'", []);
      expect(rows).toEqual([{ caller: "spiffe://ego/payment-service", auth: "mtls" }]);
    });

    it("refuses a self-asserted identity: plaintext with the header, TLS without a certificate, a foreign CA", async () => {
      const before = await countTokens();
      const attempts = [
        connect(ChannelCredentials.createInsecure()),
        connect(tls()),
        connect(tls("other-client", "ca.pem")),
      ];
      for (const c of attempts) {
        const out = await tokens(c, "payment-service", 5000).tokenize([{ category: "card_number", value: "5555555555554444" }]);
        expect(out.ok).toBe(false);
        expect(["UNAVAILABLE", "UNAUTHENTICATED"]).toContain(codeName(out.code));
      }
      expect(await countTokens()).toBe(before);
    });

    it("ignores the caller header when a certificate names someone else", async () => {
      const c = connect(tls("booking-service"));
      const out = await tokens(c, "payment-service").tokenize([{ category: "card_number", value: "378282246310005" }]);
      expect(codeName(out.code)).toBe("PERMISSION_DENIED");
      const { rows } = await t.vault.db.query<{ caller: string; auth: string }>(
        "SELECT caller, auth FROM access_log WHERE action = 'tokenize' AND outcome = 'denied'",
        [],
      );
      expect(rows).toEqual([{ caller: "spiffe://ego/booking-service", auth: "mtls" }]);
    });
  });

  describe("a token from another deployment", () => {
    let home: TestVault;
    let other: TestVault;
    beforeAll(async () => {
      home = await startTestVault("postgres");
      other = await startTestVault("postgres", { FIELDVAULT_ROOT_KEY: randomBytes(32).toString("base64") });
    }, 60_000);
    afterAll(async () => {
      await other?.stop();
      await home?.stop();
    }, 60_000);

    it("reveals nothing when its row is copied into another deployment's database", async () => {
      const pan = "4000056655665556";
      const made = await tokens(home.clients, "payment-service").tokenize([
        { category: "card_number", value: pan },
        { category: "cardholder_name", value: "Foreign Deployment Person" },
      ]);
      const ids = made.value!.tokens.map((x) => x.token);
      const { rows } = await home.vault.db.query<Record<string, unknown>>("SELECT * FROM tokens WHERE id = ANY($1)", [ids]);
      expect(rows).toHaveLength(2);
      for (const r of rows) {
        const cols = Object.keys(r);
        await other.vault.db.query(
          `INSERT INTO tokens (${cols.join(", ")}) VALUES (${cols.map((_, i) => `$${i + 1}`).join(", ")})`,
          cols.map((c) => (c === "masked" ? JSON.stringify(r[c]) : r[c])),
        );
      }
      const out = await tokens(other.clients, "payment-service").detokenize(ids, "payment_authorization");
      expect(codeName(out.code)).toBe("OK");
      for (const r of out.value!.results) {
        expect(r.outcome?.$case).toBe("error");
        const text = JSON.stringify(r);
        expect(text).not.toContain(pan);
        expect(text).not.toContain("Foreign Deployment");
      }
      // One opaque failure for both: the same code and message, whatever the cause.
      expect(new Set(out.value!.results.map((r) => JSON.stringify(r.outcome?.value)))).toHaveProperty("size", 1);
      expect(other.logs.join("\n")).not.toContain(pan);
      // And the other deployment's deterministic token for the same PAN is unrelated (its own fingerprint key).
      const theirs = await tokens(other.clients, "payment-service").tokenize([{ category: "card_number", value: pan }]);
      expect(theirs.value!.tokens[0]!.token).not.toBe(ids[0]);
    });
  });
});
