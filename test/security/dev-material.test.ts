import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ChannelCredentials } from "@grpc/grpc-js";
import { fromRoot } from "../../src/config/paths";
import { createTestDatabase, type TestDatabase } from "../helpers/backends";
import { clients, tokenApi } from "../helpers/client";
import { TLS_ENV } from "../helpers/tls";
import { startTestVault } from "../helpers/vault";

/**
 * keys-dev/ is in git: its CA lets anyone mint `spiffe://ego/sec-admin-1`, its signing key forges
 * checkpoints. Production mode refuses each piece by fingerprint (naming the variable), unless the
 * explicit FIELDVAULT_ALLOW_DEV_MATERIAL opt-in is set, which is logged loudly; a deployment with
 * its own CA, certificate and signing key starts.
 */
describe("production refuses development material", () => {
  let db: TestDatabase;
  let dir: string;
  const own: Record<string, string> = {};
  const ROOT = randomBytes(32).toString("base64"); // one database for the whole suite, so one root key
  const base = () => ({
    FIELDVAULT_MODE: "production",
    FIELDVAULT_ROOT_KEY: ROOT,
    FIELDVAULT_SIGNING_KEY_FILE: own.signing!,
  });
  /** Starting must fail; returns the error text. */
  const refusal = async (env: Record<string, string>) => {
    try {
      const t = await startTestVault("postgres", env, { db });
      await t.stop();
    } catch (err) {
      return (err as Error).message;
    }
    throw new Error("expected the vault to refuse to start");
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    dir = mkdtempSync(path.join(tmpdir(), "fv-own-pki-"));
    const f = (n: string) => path.join(dir, n);
    own.signing = f("signing.key");
    writeFileSync(own.signing, randomBytes(32).toString("base64"));
    const ssl = (...args: string[]) => execFileSync("openssl", args, { stdio: "ignore" });
    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "2", "-subj", "/CN=own test CA");
    ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=localhost");
    writeFileSync(f("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    ssl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f("server.pem"), "-days", "2", "-extfile", f("server.ext"));
    own.ca = f("ca.pem");
    own.cert = f("server.pem");
    own.key = f("server.key");
  }, 60_000);
  afterAll(async () => {
    await db?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("refuses the keys-dev CA and server certificate", async () => {
    const msg = await refusal({ ...base(), ...TLS_ENV });
    expect(msg).toContain("FIELDVAULT_TLS_CA_FILE: a development CA");
    expect(msg).toContain("FIELDVAULT_TLS_CERT_FILE: a development certificate");
  });

  it("refuses the keys-dev CA inside a bundle with a CA of one's own", async () => {
    const bundle = path.join(dir, "bundle.pem");
    writeFileSync(bundle, readFileSync(own.ca!, "utf8") + readFileSync(fromRoot("keys-dev", "ca.pem"), "utf8"));
    const msg = await refusal({ ...base(), FIELDVAULT_TLS_CA_FILE: bundle, FIELDVAULT_TLS_CERT_FILE: own.cert!, FIELDVAULT_TLS_KEY_FILE: own.key! });
    expect(msg).toContain("FIELDVAULT_TLS_CA_FILE");
    expect(msg).not.toContain("FIELDVAULT_TLS_CERT_FILE");
  });

  it("refuses the keys-dev signing key, and its public key among the trusted keys", async () => {
    const tls = { FIELDVAULT_TLS_CA_FILE: own.ca!, FIELDVAULT_TLS_CERT_FILE: own.cert!, FIELDVAULT_TLS_KEY_FILE: own.key! };
    expect(await refusal({ ...base(), ...tls, FIELDVAULT_SIGNING_KEY_FILE: fromRoot("keys-dev", "audit-signing.key") })).toContain(
      "FIELDVAULT_SIGNING_KEY_FILE: the development checkpoint signing key",
    );
    expect(await refusal({ ...base(), ...tls, FIELDVAULT_AUDIT_TRUSTED_KEYS: "IlJrrm303Z1WmtaB2S2vsfxTE2uWYrWz7TCItMDgfWA=" })).toContain(
      "FIELDVAULT_AUDIT_TRUSTED_KEYS: the development checkpoint signing key",
    );
  });

  it("starts with material of its own, and serves over it", async () => {
    const t = await startTestVault("postgres", { ...base(), FIELDVAULT_TLS_CA_FILE: own.ca!, FIELDVAULT_TLS_CERT_FILE: own.cert!, FIELDVAULT_TLS_KEY_FILE: own.key! }, { db });
    try {
      expect(t.logs.some((l) => l.includes("INSECURE"))).toBe(false);
      // A keys-dev client certificate is not accepted by a vault that trusts only its own CA.
      const dev = clients(
        t.vault.address,
        ChannelCredentials.createSsl(readFileSync(own.ca!), readFileSync(fromRoot("keys-dev", "sec-admin-1.key")), readFileSync(fromRoot("keys-dev", "sec-admin-1.pem"))),
      );
      await expect(tokenApi(dev, undefined).tokenize({ fields: [{ category: "email", value: "a@b.co" }], ttlSeconds: 0, subjectRef: "" })).rejects.toBeTruthy();
      dev.close();
    } finally {
      await t.stop();
    }
  });

  it("accepts development material only behind FIELDVAULT_ALLOW_DEV_MATERIAL, with an INSECURE warning per item", async () => {
    const t = await startTestVault("postgres", { ...base(), ...TLS_ENV, FIELDVAULT_ALLOW_DEV_MATERIAL: "true" }, { db });
    try {
      const warnings = t.logs.map((l) => JSON.parse(l) as { level: string; msg: string; material?: string }).filter((l) => l.msg.startsWith("INSECURE"));
      expect(warnings.map((w) => w.material)).toEqual([
        "FIELDVAULT_TLS_CA_FILE: a development CA (anyone can mint client certificates under it)",
        "FIELDVAULT_TLS_CERT_FILE: a development certificate (its private key is public)",
      ]);
      expect(warnings.every((w) => w.level === "warn")).toBe(true);
    } finally {
      await t.stop();
    }
  });

  it("warns loudly when FIELDVAULT_MODE is unset but real backends and TLS are configured", async () => {
    const t = await startTestVault("postgres", { ...TLS_ENV, FIELDVAULT_ROOT_KEY: ROOT }, { db });
    try {
      expect(t.logs.some((l) => l.includes("FIELDVAULT_MODE is not set: running in DEVELOPMENT mode"))).toBe(true);
    } finally {
      await t.stop();
    }
  });
});
