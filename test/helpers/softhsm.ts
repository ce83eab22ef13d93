import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fromRoot } from "../../src/config/paths";

/** Debian's softhsm2 package. */
export const SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so";
export const USER_PIN = "5678";
const SO_PIN = "1234";

export interface SoftHsm {
  /** The temporary folder: softhsm2.conf and tokens/. Removed by cleanup(). */
  dir: string;
  tokenDir: string;
  conf: string;
  tokenLabel: string;
  /** The vault's settings for this token (PIN in the environment unless pinFile is given). */
  env(keyLabels: string, extra?: Record<string, string>): Record<string, string>;
  /** An AES-256 root key made by the real CLI (`fieldvault hsm create-key --label`); returns its id. */
  createKey(label: string): string;
  /** Runs the real CLI (`fieldvault …`) with this token's settings; never throws, returns what it said. */
  cli(args: string[], env?: Record<string, string>): { code: number; stdout: string; stderr: string };
  /** Runs pkcs11-tool (OpenSC) against this token, logged in. */
  pkcs11Tool(...args: string[]): string;
  cleanup(): void;
}

/**
 * A SoftHSM2 token in its own folder, as DESIGN §12 asks: a temporary softhsm2.conf whose
 * directories.tokendir is a fresh folder, and `softhsm2-util --init-token`. SoftHSM reads
 * SOFTHSM2_CONF from the real process environment when the module initialises (Jest hands tests a
 * copy), so everything that loads the module runs as a child process with SOFTHSM2_CONF set.
 */
export function createSoftHsm(tokenLabel = "fieldvault-test"): SoftHsm {
  const dir = mkdtempSync(path.join(tmpdir(), "fv-softhsm-"));
  const tokenDir = path.join(dir, "tokens");
  mkdirSync(tokenDir);
  const conf = path.join(dir, "softhsm2.conf");
  writeFileSync(conf, `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { env: { ...process.env, SOFTHSM2_CONF: conf }, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  const settings = {
    SOFTHSM2_CONF: conf,
    FIELDVAULT_PKCS11_LIBRARY: SOFTHSM_MODULE,
    FIELDVAULT_PKCS11_TOKEN_LABEL: tokenLabel,
    FIELDVAULT_PKCS11_PIN: USER_PIN,
  };
  const cli = (args: string[], env: Record<string, string> = {}) => {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("FIELDVAULT_") && k !== "NODE_OPTIONS"));
    const r = spawnSync(process.execPath, ["--import", "tsx", fromRoot("src", "cli", "main.ts"), ...args], {
      cwd: fromRoot(),
      env: { ...clean, ...settings, ...env },
      encoding: "utf8",
      timeout: 60_000,
    });
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  run("softhsm2-util", ["--init-token", "--free", "--label", tokenLabel, "--so-pin", SO_PIN, "--pin", USER_PIN]);
  return {
    dir,
    tokenDir,
    conf,
    tokenLabel,
    env: (keyLabels, extra = {}) => ({ ...settings, FIELDVAULT_ROOT_KEY_PROVIDER: "pkcs11", FIELDVAULT_PKCS11_KEY_LABEL: keyLabels, ...extra }),
    cli,
    createKey(label) {
      const r = cli(["hsm", "create-key", "--label", label]);
      const id = /root key id (pkcs11:[0-9a-f]{16})/.exec(r.stdout)?.[1];
      if (r.code !== 0 || !id) throw new Error(`hsm create-key failed (${r.code}): ${r.stderr}`);
      return id;
    },
    pkcs11Tool: (...args) => run("pkcs11-tool", ["--module", SOFTHSM_MODULE, "--token-label", tokenLabel, "--login", "--pin", USER_PIN, ...args]),
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs the real entry point (src/main.ts) expecting it to refuse to start: its exit code and what
 * it wrote to stderr. Fails fast (startChildVault waits for a listening line instead).
 */
export function refusedStart(env: Record<string, string>): { code: number; stderr: string; stdout: string } {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("FIELDVAULT_") && k !== "NODE_OPTIONS"));
  const r = spawnSync(process.execPath, ["--import", "tsx", fromRoot("src", "main.ts")], {
    cwd: fromRoot(),
    env: { ...clean, FIELDVAULT_LISTEN: "127.0.0.1:0", FIELDVAULT_METRICS_LISTEN: "off", FIELDVAULT_DATA_DIR: "memory://", ...env },
    encoding: "utf8",
    timeout: 60_000,
  });
  return { code: r.status ?? -1, stderr: r.stderr, stdout: r.stdout };
}
