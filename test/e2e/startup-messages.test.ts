import { randomBytes } from "node:crypto";
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { startVault } from "../../src/app";
import { ConfigError, loadConfig } from "../../src/config/config";
import { fromRoot } from "../../src/config/paths";
import { loadTlsMaterial } from "../../src/config/tls-material";
import { readySodium } from "../../src/crypto/sodium";
import { createTestDatabase, dbUrl, REDIS_URL, type TestDatabase } from "../helpers/backends";
import { startTestVault } from "../helpers/vault";

const keys = (f: string) => fromRoot("keys-dev", f);
const SECRET = "Pa55wordCanary";
const base = { FIELDVAULT_LISTEN: "127.0.0.1:0", FIELDVAULT_METRICS_LISTEN: "off", FIELDVAULT_LOG_LEVEL: "info", FIELDVAULT_DATA_DIR: "memory://" };

/** Starts a vault in this process and returns why it refused (the message main.ts prints), and its log. */
async function refusal(env: Record<string, string>): Promise<{ message: string; logs: string[] }> {
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(...String(chunk).split("\n").filter(Boolean));
      cb();
    },
  });
  try {
    const v = await startVault(loadConfig({ ...base, ...env }), { logDestination: sink });
    await v.close();
  } catch (err) {
    return { message: err instanceof ConfigError ? err.problems.join("\n") : (err as Error).message, logs };
  }
  throw new Error("expected the vault to refuse to start");
}

function occupied(): Promise<{ server: Server; address: string }> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => resolve({ server, address: `127.0.0.1:${(server.address() as { port: number }).port}` }));
  });
}

/** What the vault says at start — what it runs with, and, when it cannot start, what is wrong — on real servers and ports. */
describe("start-up messages", () => {
  let dir: string;
  beforeAll(async () => {
    await readySodium();
    dir = mkdtempSync(path.join(tmpdir(), "fv-startup-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("the development default names its root key, the caller header, the policy file, and that CVVs do not survive a restart", async () => {
    const t = await startTestVault("embedded");
    try {
      const text = t.logs.join("\n");
      expect(text).toContain("root key: the DEVELOPMENT root key");
      expect(text).toContain("identity: callers name themselves with the x-fieldvault-caller header");
      expect(text).toContain(`policy: ${fromRoot("policy", "default.yaml")}`);
      expect(text).toContain("CVVs live in this process's memory and do not survive a restart");
    } finally {
      await t.stop();
    }
  });

  describe("database unavailable names host, port, database and the reason, never the password", () => {
    let db: TestDatabase;
    beforeAll(async () => {
      db = await createTestDatabase();
    });
    afterAll(async () => db?.drop());

    it("refused", async () => {
      const { server, address } = await occupied();
      const port = address.split(":")[1]!;
      server.close();
      const r = await refusal({ FIELDVAULT_DATABASE_URL: `postgres://vault:${SECRET}@127.0.0.1:${port}/fieldvault` });
      expect(r.message).toBe(`database unavailable: PostgreSQL at 127.0.0.1:${port}, database fieldvault: connection refused (is PostgreSQL running and listening there?) (FIELDVAULT_DATABASE_URL)`);
    });

    it("unknown database", async () => {
      const r = await refusal({ FIELDVAULT_DATABASE_URL: dbUrl(`fv_missing_${randomBytes(4).toString("hex")}`) });
      expect(r.message).toMatch(/^database unavailable: PostgreSQL at 127\.0\.0\.1:5432, database fv_missing_\w+: the database does not exist/);
    });

    it("authentication (a role the server does not know)", async () => {
      const u = new URL(db.url);
      u.username = `nobody_${randomBytes(3).toString("hex")}`;
      u.password = SECRET;
      const r = await refusal({ FIELDVAULT_DATABASE_URL: u.toString() });
      expect(r.message).toContain(`database ${db.name}: authentication failed`);
      expect(r.message).not.toContain(SECRET);
    });
  });

  it("EADDRINUSE names FIELDVAULT_LISTEN or FIELDVAULT_METRICS_LISTEN and suggests another vault", async () => {
    const { server, address } = await occupied();
    try {
      expect((await refusal({ FIELDVAULT_LISTEN: address })).message).toBe(
        `FIELDVAULT_LISTEN: ${address} is already in use — is another fieldvault (or another program) running there? Stop it, or set FIELDVAULT_LISTEN to another address`,
      );
      expect((await refusal({ FIELDVAULT_METRICS_LISTEN: address })).message).toMatch(/^FIELDVAULT_METRICS_LISTEN: .* is already in use — is another fieldvault/);
    } finally {
      server.close();
    }
  });

  it("unreachable Redis: a clear warning in development", async () => {
    const logs: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        logs.push(...String(chunk).split("\n").filter(Boolean));
        cb();
      },
    });
    const { server, address } = await occupied();
    server.close();
    const v = await startVault(loadConfig({ ...base, FIELDVAULT_REDIS_URL: `redis://:${SECRET}@${address}` }), { logDestination: sink });
    await v.close();
    const line = logs.find((l) => l.includes("cache: Redis at"));
    expect(line).toContain(`cache: Redis at ${address} is unreachable (connection refused)`);
    expect(logs.join("\n")).not.toContain(SECRET);
  });

  it("unreachable Redis: a refusal in production", async () => {
    const db = await createTestDatabase();
    try {
      const signing = path.join(dir, "signing.key");
      writeFileSync(signing, randomBytes(32).toString("base64"));
      const r = await refusal({
        FIELDVAULT_MODE: "production",
        FIELDVAULT_DATABASE_URL: db.url,
        FIELDVAULT_REDIS_URL: "redis://127.0.0.1:1",
        FIELDVAULT_ALLOW_DEV_MATERIAL: "true", // keys-dev/ certificates: refused in production unless allowed
        FIELDVAULT_TLS_CERT_FILE: keys("server.pem"),
        FIELDVAULT_TLS_KEY_FILE: keys("server.key"),
        FIELDVAULT_TLS_CA_FILE: keys("ca.pem"),
        FIELDVAULT_ROOT_KEY: randomBytes(32).toString("base64"),
        FIELDVAULT_SIGNING_KEY_FILE: signing,
      });
      expect(r.message).toBe("FIELDVAULT_REDIS_URL: Redis at 127.0.0.1:1 is unreachable (connection refused); production does not start without it");
    } finally {
      await db.drop();
    }
  });

  it("reachable Redis: no warning", async () => {
    const logs: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        logs.push(...String(chunk).split("\n").filter(Boolean));
        cb();
      },
    });
    const v = await startVault(loadConfig({ ...base, FIELDVAULT_REDIS_URL: REDIS_URL }), { logDestination: sink });
    await v.close();
    expect(logs.join("\n")).not.toContain("unreachable");
  });

  describe("a bad certificate or key names its variable, before any migration runs", () => {
    const tls = (over: Record<string, string> = {}) => ({ certFile: keys("server.pem"), keyFile: keys("server.key"), caFile: keys("ca.pem"), ...over });
    const problems = (files: ReturnType<typeof tls>) => {
      try {
        loadTlsMaterial(files);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as ConfigError).problems;
      }
      throw new Error("expected a ConfigError");
    };

    it("accepts the development certificates", () => {
      expect(loadTlsMaterial(tls()).cert.length).toBeGreaterThan(0);
    });
    it("a missing file", () => {
      expect(problems(tls({ caFile: path.join(dir, "nope.pem") }))).toEqual([`FIELDVAULT_TLS_CA_FILE: cannot read ${path.join(dir, "nope.pem")} (ENOENT)`]);
    });
    it("a key given as the certificate, and a certificate given as the key", () => {
      const p = problems(tls({ certFile: keys("server.key"), keyFile: keys("server.pem") }));
      expect(p).toContain(`FIELDVAULT_TLS_CERT_FILE: ${keys("server.key")} is not a PEM certificate`);
      expect(p).toContain(`FIELDVAULT_TLS_KEY_FILE: ${keys("server.pem")} is not a PEM private key (or it is encrypted)`);
    });
    it("a key that belongs to another certificate", () => {
      expect(problems(tls({ keyFile: keys("payment-service.key") }))).toEqual([
        `FIELDVAULT_TLS_KEY_FILE: ${keys("payment-service.key")} is not the key of the certificate in FIELDVAULT_TLS_CERT_FILE (${keys("server.pem")})`,
      ]);
    });
    it("the vault refuses before touching the database", async () => {
      const db = await createTestDatabase();
      try {
        const garbage = path.join(dir, "garbage.pem");
        copyFileSync(keys("ca.key"), garbage);
        const r = await refusal({ FIELDVAULT_DATABASE_URL: db.url, FIELDVAULT_TLS_CERT_FILE: garbage, FIELDVAULT_TLS_KEY_FILE: keys("server.key"), FIELDVAULT_TLS_CA_FILE: keys("ca.pem") });
        expect(r.message).toContain(`FIELDVAULT_TLS_CERT_FILE: ${garbage} is not a PEM certificate`);
        expect(r.logs.join("\n")).not.toContain("migrations applied");
      } finally {
        await db.drop();
      }
    });
  });

  it("an empty variable gets a message in words", () => {
    try {
      loadConfig({ FIELDVAULT_POLICY_FILE: "", FIELDVAULT_DATABASE_URL: " " });
      throw new Error("expected a ConfigError");
    } catch (err) {
      expect((err as ConfigError).problems.sort()).toEqual([
        "FIELDVAULT_DATABASE_URL: is set but empty; give it a value, or unset it to use the default",
        "FIELDVAULT_POLICY_FILE: is set but empty; give it a value, or unset it to use the default",
      ]);
    }
  });
});
