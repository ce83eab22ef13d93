import { execFile } from "node:child_process";
import { Server, ServerCredentials, status, type ServiceError } from "@grpc/grpc-js";
import { fromRoot } from "../../src/config/paths";
import { TokenServiceService, type TokenServiceServer } from "../../src/gen/fieldvault/v1/token_service";
import { FieldVaultClient, FieldVaultError } from "../../src/sdk";
import { startTestVault, type TestVault } from "../helpers/vault";

const keys = (f: string) => fromRoot("keys-dev", f);
const TLS_ENV = { FIELDVAULT_TLS_CERT_FILE: keys("server.pem"), FIELDVAULT_TLS_KEY_FILE: keys("server.key"), FIELDVAULT_TLS_CA_FILE: keys("ca.pem") };

function runExample(file: string, env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", fromRoot("examples", file)],
      { cwd: fromRoot(), env: { ...process.env, NODE_OPTIONS: "", ...env }, timeout: 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe("examples against a development vault", () => {
  let t: TestVault;
  beforeAll(async () => {
    t = await startTestVault("embedded");
  });
  afterAll(async () => {
    await t?.stop();
  });

  it.each(["payment-checkout.ts", "booking-manifest.ts"])("%s runs and exits 0", async (file) => {
    const r = await runExample(file, { FIELDVAULT_ADDRESS: t.vault.address });
    expect(r.stderr).not.toContain("FAILED");
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/: OK$/m);
    // The examples print masked views only.
    expect(r.stdout).not.toContain("4242424242424242");
    expect(r.stdout).not.toContain("C1234567");
  });

  it("exits non-zero when the vault is unreachable", async () => {
    const r = await runExample("payment-checkout.ts", { FIELDVAULT_ADDRESS: "127.0.0.1:1" });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/payment-checkout: FAILED: UNAVAILABLE/);
  });
});

describe("SDK over mutual TLS", () => {
  let t: TestVault;
  beforeAll(async () => {
    t = await startTestVault("postgres", TLS_ENV);
  });
  afterAll(async () => {
    await t?.stop();
  });
  const address = () => `localhost:${t.vault.port}`;

  it("tokenizes and reveals with a client certificate; the log names the certificate's identity", async () => {
    const vault = new FieldVaultClient({ address: address(), tls: { ca: keys("ca.pem"), cert: keys("booking-service.pem"), key: keys("booking-service.key") } });
    try {
      const [p] = await vault.tokenize([{ category: "passport_number", value: "XY1234567" }]);
      expect(await vault.reveal([p!.token], { purpose: "customs_declaration", justification: "SDK-TLS" })).toEqual(["XY1234567"]);
      const { rows } = await t.vault.db.query<{ caller: string; auth: string }>("SELECT caller, auth FROM access_log WHERE token = $1 AND action = 'detokenize'", [p!.token]);
      expect(rows).toEqual([{ caller: "spiffe://ego/booking-service", auth: "mtls" }]);
    } finally {
      vault.close();
    }
  });

  it("runs the payment example over mutual TLS", async () => {
    const r = await runExample("payment-checkout.ts", {
      FIELDVAULT_ADDRESS: address(),
      FIELDVAULT_CLIENT_CERT: keys("payment-service.pem"),
      FIELDVAULT_CLIENT_KEY: keys("payment-service.key"),
      FIELDVAULT_CLIENT_CA: keys("ca.pem"),
    });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
  });

  it("is refused with a certificate from another CA", async () => {
    const vault = new FieldVaultClient({ address: address(), tls: { ca: keys("ca.pem"), cert: keys("other-client.pem"), key: keys("other-client.key") }, deadlineMs: 3000, retry: { attempts: 1 } });
    try {
      const err = await vault.inspect(["tok_0000000000000000000000"]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FieldVaultError);
      expect((err as FieldVaultError).code).toBe(status.UNAVAILABLE);
    } finally {
      vault.close();
    }
  });
});

/** A real gRPC server that answers UNAVAILABLE a set number of times, counting attempts per method. */
async function flakyServer(failures: number, hang = false) {
  const attempts: Record<string, number> = {};
  const handler = (name: string, ok: unknown) => (_call: unknown, cb: (err: Partial<ServiceError> | null, res?: unknown) => void) => {
    attempts[name] = (attempts[name] ?? 0) + 1;
    if (hang) return; // never answers: the client's deadline must end the call
    if (attempts[name]! <= failures) cb({ code: status.UNAVAILABLE, details: "try again" });
    else cb(null, ok);
  };
  const impl: TokenServiceServer = {
    tokenize: handler("Tokenize", { tokens: [] }) as never,
    detokenize: handler("Detokenize", { results: [] }) as never,
    inspectTokens: handler("InspectTokens", { tokens: [] }) as never,
    deleteTokens: handler("DeleteTokens", { deleted: 0 }) as never,
    deleteSubject: handler("DeleteSubject", { erased: 0, unlinked: 0 }) as never,
    requestBreakGlass: handler("RequestBreakGlass", { requestId: "", status: "" }) as never,
    approveBreakGlass: handler("ApproveBreakGlass", { requestId: "", status: "" }) as never,
  };
  const server = new Server();
  server.addService(TokenServiceService, impl);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  const client = new FieldVaultClient({ address: `127.0.0.1:${port}`, caller: "payment-service", retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 5 }, deadlineMs: 5000 });
  return {
    attempts,
    client,
    stop: () => {
      client.close();
      server.forceShutdown();
    },
  };
}

describe("SDK retries and deadlines", () => {
  it("retries UNAVAILABLE for idempotent calls: InspectTokens and Tokenize of deterministic categories", async () => {
    const s = await flakyServer(2);
    try {
      await s.client.inspect(["tok_a"]);
      await s.client.tokenize([{ category: "card_number", value: "4242424242424242" }, { category: "passport_number", value: "AB12345" }]);
      expect(s.attempts).toEqual({ InspectTokens: 3, Tokenize: 3 });
    } finally {
      s.stop();
    }
  });

  it("never retries Detokenize (CVVs are single-use) or Tokenize of a random category", async () => {
    const s = await flakyServer(1);
    try {
      await expect(s.client.detokenize(["tok_a"], { purpose: "payment_authorization" })).rejects.toMatchObject({ code: status.UNAVAILABLE, codeName: "UNAVAILABLE" });
      await expect(s.client.tokenize([{ category: "card_number", value: "4242424242424242" }, { category: "card_cvv", value: "123" }])).rejects.toMatchObject({ code: status.UNAVAILABLE });
      await expect(s.client.deleteTokens(["tok_a"])).rejects.toMatchObject({ code: status.UNAVAILABLE });
      expect(s.attempts).toEqual({ Detokenize: 1, Tokenize: 1, DeleteTokens: 1 });
    } finally {
      s.stop();
    }
  });

  it("gives up after the configured attempts", async () => {
    const s = await flakyServer(10);
    try {
      await expect(s.client.inspect(["tok_a"])).rejects.toMatchObject({ code: status.UNAVAILABLE });
      expect(s.attempts.InspectTokens).toBe(3);
    } finally {
      s.stop();
    }
  });

  it("puts a deadline on every call", async () => {
    const s = await flakyServer(0, true);
    try {
      await expect(s.client.inspect(["tok_a"], { deadlineMs: 300 })).rejects.toMatchObject({ code: status.DEADLINE_EXCEEDED });
      await expect(s.client.detokenize(["tok_a"], { purpose: "refund", deadlineMs: 300 })).rejects.toMatchObject({ code: status.DEADLINE_EXCEEDED });
    } finally {
      s.stop();
    }
  });
});
