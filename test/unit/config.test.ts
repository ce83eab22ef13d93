import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { ConfigError, DEV_ROOT_KEY_FILE, loadConfig } from "../../src/config/config";
import { fromRoot } from "../../src/config/paths";
import { DEV_ROOT_KEY_ID, loadRootKeys, NOT_IN_HSM_WARNING } from "../../src/config/root-keys";
import { readySodium } from "../../src/crypto/sodium";

const SECRET = "Sup3rS3cretCanary";
const keys = (...p: string[]) => fromRoot("keys-dev", ...p);

/** A production environment that passes validation; each test breaks one thing. */
const PRODUCTION = {
  FIELDVAULT_MODE: "production",
  FIELDVAULT_DATABASE_URL: `postgres://vault:${SECRET}@db.internal:5432/fieldvault`,
  FIELDVAULT_REDIS_URL: `redis://:${SECRET}@cache.internal:6379`,
  FIELDVAULT_TLS_CERT_FILE: keys("server.pem"),
  FIELDVAULT_TLS_KEY_FILE: keys("server.key"),
  FIELDVAULT_TLS_CA_FILE: keys("ca.pem"),
  FIELDVAULT_ROOT_KEY: randomBytes(32).toString("base64"),
  FIELDVAULT_SIGNING_KEY_FILE: keys("audit-signing.key"),
};

function problemsOf(env: Record<string, string | undefined>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const e = err as ConfigError;
    expect(e.message).not.toContain(SECRET);
    for (const p of e.problems) expect(p).not.toContain(SECRET);
    return e.problems;
  }
  throw new Error("expected a ConfigError");
}

async function rootKeyProblems(env: Record<string, string>): Promise<string[]> {
  try {
    await loadRootKeys(loadConfig(env));
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("expected a ConfigError");
}

beforeAll(async () => {
  await readySodium();
});

describe("configuration", () => {
  describe("happy", () => {
    it("defaults to a development vault on the embedded store", () => {
      const c = loadConfig({});
      expect(c.mode).toBe("development");
      expect(c.listen).toBe("127.0.0.1:50051");
      expect(c.databaseUrl).toBeUndefined();
      expect(c.metricsListen).toBe("127.0.0.1:9464");
      expect(c.tls).toBeUndefined();
    });

    it("accepts a complete production environment", async () => {
      const c = loadConfig(PRODUCTION);
      expect(c.mode).toBe("production");
      expect(c.tls?.caFile).toBe(keys("ca.pem"));
      expect((await loadRootKeys(c)).active.id).toMatch(/^rk_[0-9a-f]{16}$/);
    });

    it("turns metrics off with FIELDVAULT_METRICS_LISTEN=off", () => {
      expect(loadConfig({ FIELDVAULT_METRICS_LISTEN: "off" }).metricsListen).toBeUndefined();
    });
  });

  describe("error: one clear message per bad variable, naming it", () => {
    it.each([
      ["FIELDVAULT_MODE", "staging"],
      ["FIELDVAULT_LISTEN", "no-port-here"],
      ["FIELDVAULT_LISTEN", "127.0.0.1:port"],
      ["FIELDVAULT_DATABASE_URL", `mysql://root:${SECRET}@db/x`],
      ["FIELDVAULT_REDIS_URL", `http://:${SECRET}@cache:6379`],
      ["FIELDVAULT_METRICS_LISTEN", "everywhere"],
      ["FIELDVAULT_LOG_LEVEL", "loud"],
      ["FIELDVAULT_MAX_BATCH", "0"],
      ["FIELDVAULT_MAX_BATCH", "100001"],
      ["FIELDVAULT_MAX_BATCH", "lots"],
      ["FIELDVAULT_HEAP_GROWING_PERCENT", "301"],
      ["FIELDVAULT_MAX_ITEMS_IN_FLIGHT", "0"],
      ["FIELDVAULT_HEAP_GROWING_PERCENT", "-5"],
      ["FIELDVAULT_CVV_TTL_SECONDS", "7200"],
      ["FIELDVAULT_DB_POOL_SIZE", "-3"],
      ["FIELDVAULT_CHECKPOINT_EVERY", "1.5"],
      ["FIELDVAULT_SHUTDOWN_GRACE_MS", "0"],
      ["FIELDVAULT_HEALTH_INTERVAL_MS", "soon"],
      ["FIELDVAULT_AUTO_ROTATE", "yes"],
      ["FIELDVAULT_INSTANCE_ID", "has spaces and / slashes"],
      ["FIELDVAULT_POLICY_FILE", ""],
    ])("%s=%s", (name, value) => {
      const problems = problemsOf({ [name]: value });
      expect(problems).toHaveLength(1);
      expect(problems[0]!.startsWith(`${name}: `)).toBe(true);
      expect(problems[0]!.length).toBeGreaterThan(name.length + 5);
    });

    it("reports every bad variable at once, each once, without echoing a secret", () => {
      const problems = problemsOf({
        FIELDVAULT_MODE: "prod",
        FIELDVAULT_DATABASE_URL: `mysql://u:${SECRET}@h/d`,
        FIELDVAULT_REDIS_URL: `memcached://${SECRET}`,
        FIELDVAULT_MAX_BATCH: "-1",
      });
      expect(problems.map((p) => p.split(":")[0]).sort()).toEqual(
        ["FIELDVAULT_DATABASE_URL", "FIELDVAULT_MAX_BATCH", "FIELDVAULT_MODE", "FIELDVAULT_REDIS_URL"].sort(),
      );
    });

    it("refuses half a TLS configuration", () => {
      const problems = problemsOf({ FIELDVAULT_TLS_CERT_FILE: keys("server.pem") });
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatch(/FIELDVAULT_TLS_CERT_FILE, FIELDVAULT_TLS_KEY_FILE and FIELDVAULT_TLS_CA_FILE/);
    });

    it("refuses two root-key providers at once", () => {
      const problems = problemsOf({ FIELDVAULT_ROOT_KEY: randomBytes(32).toString("base64"), FIELDVAULT_ROOT_KEY_FILE: DEV_ROOT_KEY_FILE });
      expect(problems).toEqual([expect.stringMatching(/^FIELDVAULT_ROOT_KEY and FIELDVAULT_ROOT_KEY_FILE/)]);
    });

    describe("root key provider (DESIGN §12)", () => {
      const HSM = {
        FIELDVAULT_ROOT_KEY_PROVIDER: "pkcs11",
        FIELDVAULT_PKCS11_LIBRARY: "/usr/lib/softhsm/libsofthsm2.so",
        FIELDVAULT_PKCS11_TOKEN_LABEL: "fieldvault",
        FIELDVAULT_PKCS11_PIN: SECRET,
        FIELDVAULT_PKCS11_KEY_LABEL: "root-2, root-1",
      };

      it("keeps the old behaviour when unset: env with FIELDVAULT_ROOT_KEY, else the file (development key by default)", () => {
        expect(loadConfig({}).rootKey).toMatchObject({ provider: "file", files: [DEV_ROOT_KEY_FILE] });
        expect(loadConfig({ FIELDVAULT_ROOT_KEY: randomBytes(32).toString("base64") }).rootKey.provider).toBe("env");
        expect(loadConfig({}).rootKey.pkcs11).toBeUndefined();
      });

      it("parses pkcs11 settings: labels in order, first active; no development-key fallback; production needs no file or env key", () => {
        const c = loadConfig(HSM);
        expect(c.rootKey).toMatchObject({ provider: "pkcs11", files: [], pkcs11: { tokenLabel: "fieldvault", keyLabels: ["root-2", "root-1"] } });
        const { FIELDVAULT_ROOT_KEY: _k, ...prodWithoutKey } = PRODUCTION;
        expect(loadConfig({ ...prodWithoutKey, ...HSM }).rootKey.provider).toBe("pkcs11");
      });

      it("names every missing or contradictory PKCS#11 setting, never the PIN", () => {
        expect(problemsOf({ FIELDVAULT_ROOT_KEY_PROVIDER: "pkcs11" }).map((p) => p.split(":")[0])).toEqual([
          "FIELDVAULT_PKCS11_LIBRARY",
          "FIELDVAULT_PKCS11_TOKEN_LABEL",
          "FIELDVAULT_PKCS11_KEY_LABEL",
          "FIELDVAULT_PKCS11_PIN_FILE or FIELDVAULT_PKCS11_PIN",
        ]);
        expect(problemsOf({ ...HSM, FIELDVAULT_PKCS11_PIN_FILE: "/run/secrets/pin" })).toEqual([expect.stringMatching(/^FIELDVAULT_PKCS11_PIN and FIELDVAULT_PKCS11_PIN_FILE are mutually exclusive/)]);
        expect(problemsOf({ ...HSM, FIELDVAULT_PKCS11_KEY_LABEL: "root-1,,root-2" })).toEqual([expect.stringMatching(/^FIELDVAULT_PKCS11_KEY_LABEL: an empty label/)]);
        expect(problemsOf({ ...HSM, FIELDVAULT_PKCS11_KEY_LABEL: "root-1,root-1" })).toEqual([expect.stringMatching(/^FIELDVAULT_PKCS11_KEY_LABEL: a label is listed twice/)]);
        expect(problemsOf({ FIELDVAULT_ROOT_KEY_PROVIDER: "env" })).toEqual([expect.stringMatching(/^FIELDVAULT_ROOT_KEY: required with FIELDVAULT_ROOT_KEY_PROVIDER=env/)]);
        expect(problemsOf({ FIELDVAULT_ROOT_KEY_PROVIDER: "hsm" })).toEqual([expect.stringMatching(/^FIELDVAULT_ROOT_KEY_PROVIDER:/)]);
        // Half the PKCS#11 settings beside a file key is a mistake too, not silently ignored.
        expect(problemsOf({ FIELDVAULT_PKCS11_LIBRARY: "/x.so" }).map((p) => p.split(":")[0])).toEqual([
          "FIELDVAULT_PKCS11_TOKEN_LABEL",
          "FIELDVAULT_PKCS11_KEY_LABEL",
          "FIELDVAULT_PKCS11_PIN_FILE or FIELDVAULT_PKCS11_PIN",
        ]);
      });

      it("warns once in production when the root key is not in an HSM, and not in development", async () => {
        const warned: string[] = [];
        await loadRootKeys(loadConfig(PRODUCTION), { warn: (m) => warned.push(m) });
        expect(warned).toEqual([NOT_IN_HSM_WARNING]);
        expect(NOT_IN_HSM_WARNING).toMatch(/PCI DSS 3\.6\.1\.2.*DESIGN §12/);
        await loadRootKeys(loadConfig({}), { warn: (m) => warned.push(m) });
        expect(warned).toHaveLength(1);
      });
    });

    it("names a root key that is not base64 or not 32 bytes, without echoing it", async () => {
      const notB64 = await rootKeyProblems({ FIELDVAULT_ROOT_KEY: `${SECRET}!!!` });
      expect(notB64).toEqual([expect.stringMatching(/^FIELDVAULT_ROOT_KEY\[0\]: not base64/)]);
      const short = randomBytes(31).toString("base64");
      const tooShort = await rootKeyProblems({ FIELDVAULT_ROOT_KEY: short });
      expect(tooShort).toEqual([expect.stringMatching(/^FIELDVAULT_ROOT_KEY\[0\]: .*32 bytes/)]);
      expect(tooShort.join()).not.toContain(short);
      expect(notB64.join()).not.toContain(SECRET);
    });

    it("names an unreadable root key file", async () => {
      expect(await rootKeyProblems({ FIELDVAULT_ROOT_KEY_FILE: "/nonexistent/root.key" })).toEqual([expect.stringMatching(/^FIELDVAULT_ROOT_KEY_FILE: cannot read/)]);
    });
  });

  describe("security: production refuses development shortcuts", () => {
    it("refuses embedded storage (no database URL)", () => {
      expect(problemsOf({ ...PRODUCTION, FIELDVAULT_DATABASE_URL: undefined })).toEqual([expect.stringMatching(/^FIELDVAULT_DATABASE_URL: required in production/)]);
    });

    it("refuses in-process stand-ins for Redis", () => {
      expect(problemsOf({ ...PRODUCTION, FIELDVAULT_REDIS_URL: undefined })).toEqual([expect.stringMatching(/^FIELDVAULT_REDIS_URL: required in production/)]);
    });

    it("refuses plaintext transport (no mutual TLS)", () => {
      const env = { ...PRODUCTION, FIELDVAULT_TLS_CERT_FILE: undefined, FIELDVAULT_TLS_KEY_FILE: undefined, FIELDVAULT_TLS_CA_FILE: undefined };
      expect(problemsOf(env)).toEqual([expect.stringMatching(/^FIELDVAULT_TLS_\*: production requires mutual TLS/)]);
    });

    it("refuses to fall back to the development root key when none is configured", () => {
      expect(problemsOf({ ...PRODUCTION, FIELDVAULT_ROOT_KEY: undefined })).toEqual([expect.stringMatching(/^FIELDVAULT_ROOT_KEY or FIELDVAULT_ROOT_KEY_FILE: required in production/)]);
    });

    it("refuses the development root key given as a file", async () => {
      const { FIELDVAULT_ROOT_KEY: _unused, ...rest } = PRODUCTION;
      const env = { ...rest, FIELDVAULT_ROOT_KEY_FILE: DEV_ROOT_KEY_FILE };
      expect(await rootKeyProblems(env)).toEqual([expect.stringMatching(/development root key is refused in production/)]);
    });

    it("refuses the development root key given in the environment, even beside another key", async () => {
      const dev = readFileSync(DEV_ROOT_KEY_FILE, "utf8").trim();
      const problems = await rootKeyProblems({ ...PRODUCTION, FIELDVAULT_ROOT_KEY: `${randomBytes(32).toString("base64")},${dev}` });
      expect(problems).toEqual([expect.stringMatching(/development root key is refused in production/)]);
      expect(problems.join()).not.toContain(dev);
    });

    it("lists every missing production requirement at once", () => {
      const problems = problemsOf({ FIELDVAULT_MODE: "production" });
      for (const name of ["FIELDVAULT_DATABASE_URL", "FIELDVAULT_REDIS_URL", "FIELDVAULT_TLS_*", "FIELDVAULT_ROOT_KEY or FIELDVAULT_ROOT_KEY_FILE", "FIELDVAULT_SIGNING_KEY_FILE"]) {
        expect(problems.filter((p) => p.startsWith(`${name}:`))).toHaveLength(1);
      }
    });

    it("pins the development key's id, so an image without keys-dev/ still refuses it", async () => {
      expect((await loadRootKeys(loadConfig({ FIELDVAULT_ROOT_KEY_FILE: DEV_ROOT_KEY_FILE }))).active.id).toBe(DEV_ROOT_KEY_ID);
    });

    it("accepts the development root key in development mode", async () => {
      expect((await loadRootKeys(loadConfig({ FIELDVAULT_ROOT_KEY_FILE: DEV_ROOT_KEY_FILE }))).active.id).toBe(DEV_ROOT_KEY_ID);
    });
  });
});
