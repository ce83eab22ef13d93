import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { readFileSync } from "node:fs";
import { connect as connectTls, createServer as createTlsServer, TLSSocket } from "node:tls";
import { fromRoot } from "../../src/config/paths";
import { ChannelCredentials, status } from "@grpc/grpc-js";
import { ConfigError, loadConfig } from "../../src/config/config";
import { clients, type Clients, codeOf, tokenApi } from "../helpers/client";
import { clientCredentials, issueClientCertificate, noClientCertificate, TLS_ENV } from "../helpers/tls";
import { startTestVault, type TestVault } from "../helpers/vault";

const nextYear = new Date().getUTCFullYear() + 1;

/** Identity over mutual TLS (DESIGN §6): the URI SAN, else the CN; the log says how the caller was authenticated. */
describe("mutual TLS identity (postgres + redis)", () => {
  let t: TestVault;
  const open: Clients[] = [];
  const over = (credentials: ChannelCredentials) => {
    const c = clients(t.vault.address, credentials);
    open.push(c);
    return c;
  };
  const logRows = async (where: string, params: unknown[]) =>
    (await t.vault.db.query<Record<string, string>>(`SELECT * FROM access_log WHERE ${where} ORDER BY seq`, params)).rows;
  const logCount = async () => (await t.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM access_log", [])).rows[0]!.n;

  beforeAll(async () => {
    t = await startTestVault("postgres", TLS_ENV);
  });
  afterAll(async () => {
    for (const c of open) c.close();
    await t?.stop();
  });

  describe("handshake", () => {
    it("refuses a connection without a client certificate, and nothing reaches the service", async () => {
      const before = await logCount();
      const api = tokenApi(over(noClientCertificate()), "payment-service");
      const { code } = await codeOf(api.tokenize({ fields: [{ category: "cardholder_name", value: "No Cert" }], ttlSeconds: 0, subjectRef: "" }));
      expect(code).toBe(status.UNAVAILABLE);
      expect(await logCount()).toBe(before);
    });

    it("refuses a client certificate signed by another CA", async () => {
      const before = await logCount();
      const api = tokenApi(over(clientCredentials("other-client")), undefined);
      const { code } = await codeOf(api.tokenize({ fields: [{ category: "cardholder_name", value: "Other CA" }], ttlSeconds: 0, subjectRef: "" }));
      expect(code).toBe(status.UNAVAILABLE);
      expect(await logCount()).toBe(before);
    });

    it("refuses plaintext on the TLS port, even with a self-asserted caller header", async () => {
      const api = tokenApi(over(ChannelCredentials.createInsecure()), "payment-service");
      const { code } = await codeOf(api.tokenize({ fields: [{ category: "cardholder_name", value: "Plain" }], ttlSeconds: 0, subjectRef: "" }));
      expect(code).toBe(status.UNAVAILABLE);
    });
  });

  describe("identity", () => {
    it("takes the identity from the URI SAN and logs auth=mtls with the peer address", async () => {
      const api = tokenApi(over(clientCredentials("payment-service")), undefined);
      const { tokens } = await api.tokenize({ fields: [{ category: "card_number", value: "4000 0566 5566 5556" }], ttlSeconds: 0, subjectRef: "" });
      const { results } = await api.detokenize({ tokens: [tokens[0]!.token], purpose: "refund", justification: "RF-1" });
      expect(results[0]!.outcome).toEqual({ $case: "value", value: "4000056655665556" });
      const rows = await logRows("token = $1 AND action = 'detokenize'", [tokens[0]!.token]);
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ caller: "spiffe://ego/payment-service", auth: "mtls", action: "detokenize", outcome: "allowed", purpose: "refund" });
      expect(rows[0]!.peer).toMatch(/127\.0\.0\.1:\d+/);
    });

    it("takes the identity from the CN when the certificate has no SAN", async () => {
      const api = tokenApi(over(clientCredentials("cn-only")), undefined);
      const { tokens } = await api.tokenize({ fields: [{ category: "passport_number", value: "CN1234567" }], ttlSeconds: 0, subjectRef: "" });
      const { results } = await api.detokenize({ tokens: [tokens[0]!.token], purpose: "airline_manifest", justification: "" });
      expect(results[0]!.outcome).toEqual({ $case: "value", value: "CN1234567" });
      const [row] = await logRows("token = $1 AND action = 'detokenize'", [tokens[0]!.token]);
      expect(row).toMatchObject({ caller: "booking-service", auth: "mtls", outcome: "allowed" });
    });

    it("ignores a caller header when a certificate proves who is calling", async () => {
      const pay = tokenApi(over(clientCredentials("payment-service")), undefined);
      const { tokens } = await pay.tokenize({ fields: [{ category: "card_expiry", value: `09/${nextYear}` }], ttlSeconds: 0, subjectRef: "" });
      // support-desk claims to be payment-service in the header; the certificate wins.
      const desk = tokenApi(over(clientCredentials("support-desk")), "payment-service");
      const { results } = await desk.detokenize({ tokens: [tokens[0]!.token], purpose: "payment_authorization", justification: "" });
      expect(results[0]!.outcome).toMatchObject({ $case: "error", value: { code: "PERMISSION_DENIED" } });
      const [row] = await logRows("token = $1 AND action = 'detokenize'", [tokens[0]!.token]);
      expect(row).toMatchObject({ caller: "spiffe://ego/support-desk", auth: "mtls", outcome: "denied" });
    });

    it("reads each connection's certificate once, and interleaved calls on two connections keep their own identities", async () => {
      // Count the server's certificate reads (the vault runs in this process, over real TLS).
      const real = TLSSocket.prototype.getPeerCertificate;
      let reads = 0;
      TLSSocket.prototype.getPeerCertificate = function (this: TLSSocket, ...args: [boolean?]) {
        if ((this as { server?: unknown }).server) reads++; // server side only, not the client's view of the server
        return real.apply(this, args as [true]);
      } as typeof real;
      try {
        const pay = tokenApi(over(clientCredentials("payment-service")), undefined);
        const book = tokenApi(over(clientCredentials("booking-service")), undefined);
        const outs = await Promise.all(
          Array.from({ length: 40 }, (_, i) =>
            (i % 2 ? book : pay).tokenize({ fields: [{ category: "cardholder_name", value: `Interleaved ${i}` }], ttlSeconds: 0, subjectRef: "" }),
          ),
        );
        const toks = outs.map((o) => o.tokens[0]!.token);
        const rows = await logRows("action = 'tokenize' AND token = ANY($1::text[])", [toks]);
        expect(rows).toHaveLength(40);
        const byToken = new Map(rows.map((r) => [r.token, r.caller] as const));
        toks.forEach((tk, i) => expect(byToken.get(tk)).toBe(i % 2 ? "spiffe://ego/booking-service" : "spiffe://ego/payment-service"));
        // And its own peer address: one per connection, two connections, two ports.
        const peers = (caller: string) => new Set(rows.filter((r) => r.caller === caller).map((r) => r.peer));
        const [payPeers, bookPeers] = [peers("spiffe://ego/payment-service"), peers("spiffe://ego/booking-service")];
        expect([payPeers.size, bookPeers.size]).toEqual([1, 1]);
        expect([...payPeers][0]).toMatch(/127\.0\.0\.1:\d+/);
        expect([...payPeers][0]).not.toBe([...bookPeers][0]);
        // Two connections, 40 calls: one read each (were the cache gone, 40).
        expect(reads).toBe(2);
      } finally {
        TLSSocket.prototype.getPeerCertificate = real;
      }
    });

    it("refuses TLS renegotiation, so a connection's certificate (read once per connection) cannot change", async () => {
      // TLS 1.3 has no renegotiation; force 1.2 and try it, as a client holding one certificate that
      // wants to present another on the same connection would.
      const key = (f: string) => readFileSync(path.join(fromRoot("keys-dev"), f));
      const tryRenegotiate = async (port: number, http2Preface: boolean) => {
        const sock = connectTls({ host: "127.0.0.1", port, maxVersion: "TLSv1.2", ALPNProtocols: ["h2"], ca: key("ca.pem"), cert: key("booking-service.pem"), key: key("booking-service.key"), servername: "localhost" });
        sock.on("error", () => undefined);
        await new Promise((r) => sock.once("secureConnect", r));
        expect(sock.getProtocol()).toBe("TLSv1.2");
        // The HTTP/2 preface and an empty SETTINGS frame: the server's HTTP/2 session owns the socket.
        if (http2Preface) sock.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
        await new Promise((r) => setTimeout(r, 200));
        // Done when the renegotiation completes or fails, or the server closes the connection; at most 5 s.
        const renegotiated = await new Promise<boolean>((r) => {
          const timer = setTimeout(() => r(false), 5_000);
          sock.once("close", () => (clearTimeout(timer), r(false)));
          sock.renegotiate({ rejectUnauthorized: true }, (err) => (clearTimeout(timer), r(!err)));
        });
        sock.destroy();
        return renegotiated;
      };
      // Control: a TLS server that allows renegotiation lets this probe renegotiate.
      const lax = createTlsServer({ key: key("server.key"), cert: key("server.pem"), ca: key("ca.pem"), requestCert: true, rejectUnauthorized: true }, (s) => s.on("error", () => undefined));
      await new Promise<void>((r) => lax.listen(0, "127.0.0.1", r));
      try {
        expect(await tryRenegotiate((lax.address() as { port: number }).port, false)).toBe(true);
      } finally {
        lax.close();
      }
      expect(await tryRenegotiate(Number(t.vault.address.split(":")[1]), true)).toBe(false);
    }, 30_000);

    it("refuses a certificate from the right CA whose identity is not in the policy, and logs it", async () => {
      const stranger = issueClientCertificate("stranger-service");
      try {
        const api = tokenApi(over(stranger.credentials), undefined);
        const { code } = await codeOf(api.tokenize({ fields: [{ category: "email", value: "x@example.com" }], ttlSeconds: 0, subjectRef: "" }));
        expect(code).toBe(status.PERMISSION_DENIED);
        const rows = await logRows("caller = $1", ["spiffe://ego/stranger-service"]);
        expect(rows).toHaveLength(1);
        expect(rows[0]).toMatchObject({ auth: "mtls", action: "tokenize", outcome: "denied" });
      } finally {
        stranger.cleanup();
      }
    });
  });
});

describe("development mode without TLS", () => {
  let t: TestVault;
  beforeAll(async () => {
    t = await startTestVault("postgres");
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("accepts a self-asserted caller and marks its log entries self_asserted", async () => {
    const api = tokenApi(t.clients, "payment-service");
    await api.tokenize({ fields: [{ category: "cardholder_name", value: "Self Asserted" }], ttlSeconds: 0, subjectRef: "" });
    const { rows } = await t.vault.db.query<Record<string, string>>("SELECT caller, auth FROM access_log WHERE action = 'tokenize'", []);
    expect(rows).toEqual([{ caller: "payment-service", auth: "self_asserted" }]);
  });

  it("answers UNAUTHENTICATED when a plaintext call names nobody", async () => {
    const { code } = await codeOf(tokenApi(t.clients, undefined).tokenize({ fields: [{ category: "email", value: "a@b.c" }], ttlSeconds: 0, subjectRef: "" }));
    expect(code).toBe(status.UNAUTHENTICATED);
  });
});

describe("production mode", () => {
  let t: TestVault;
  let dir: string;
  const open: Clients[] = [];
  const productionEnv = () => {
    dir = mkdtempSync(path.join(tmpdir(), "fv-prod-"));
    const signingKeyFile = path.join(dir, "signing.key");
    writeFileSync(signingKeyFile, randomBytes(32).toString("base64") + "\n", { mode: 0o600 });
    return {
      FIELDVAULT_MODE: "production",
      FIELDVAULT_ROOT_KEY: randomBytes(32).toString("base64"),
      FIELDVAULT_SIGNING_KEY_FILE: signingKeyFile,
      ...TLS_ENV,
      // keys-dev certificates in production: the explicit, loudly logged opt-in (test/security/dev-material.test.ts).
      FIELDVAULT_ALLOW_DEV_MATERIAL: "true",
    };
  };

  beforeAll(async () => {
    t = await startTestVault("postgres", productionEnv());
  });
  afterAll(async () => {
    for (const c of open) c.close();
    await t?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("will not start without mutual TLS", () => {
    const env = { ...productionEnv(), FIELDVAULT_DATABASE_URL: "postgres://x@127.0.0.1/x", FIELDVAULT_REDIS_URL: "redis://127.0.0.1:6379" };
    delete (env as Partial<typeof env>).FIELDVAULT_TLS_CA_FILE;
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(/FIELDVAULT_TLS/);
  });

  it("refuses a plaintext, self-asserted caller", async () => {
    const c = clients(t.vault.address, ChannelCredentials.createInsecure());
    open.push(c);
    const { code } = await codeOf(tokenApi(c, "payment-service").tokenize({ fields: [{ category: "cardholder_name", value: "Plain Prod" }], ttlSeconds: 0, subjectRef: "" }));
    expect(code).toBe(status.UNAVAILABLE);
    const { rows } = await t.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM access_log WHERE auth = 'self_asserted'", []);
    expect(rows[0]!.n).toBe(0);
  });

  it("serves a caller with a client certificate and logs auth=mtls", async () => {
    const c = clients(t.vault.address, clientCredentials("payment-service"));
    open.push(c);
    const { tokens } = await tokenApi(c, "booking-service").tokenize({ fields: [{ category: "cardholder_name", value: "Prod Person" }], ttlSeconds: 0, subjectRef: "" });
    expect(tokens).toHaveLength(1);
    const { rows } = await t.vault.db.query<Record<string, string>>("SELECT caller, auth FROM access_log WHERE action = 'tokenize'", []);
    expect(rows).toEqual([{ caller: "spiffe://ego/payment-service", auth: "mtls" }]);
  });
});
