import { existsSync, readFileSync } from "node:fs";
import { openPkcs11RootKeys, Pkcs11SetupError } from "../crypto/pkcs11-root-key";
import { localRootKey, type RootKey, rootKeyId } from "../crypto/root-key";
import { sodium } from "../crypto/sodium";
import { ConfigError, type Config, DEV_ROOT_KEY_FILE } from "./config";
import { type Pkcs11Config, PKCS11_SETTING_VARIABLE, readPin } from "./root-key-settings";

/** rootKeyId of keys-dev/root.key, the published development key that production refuses. */
export const DEV_ROOT_KEY_ID = "rk_21c6418a9598d389";

/** The root keys a provider hands over: the active one wraps new KEKs; the others only unwrap. */
export interface RootKeyring {
  readonly active: RootKey;
  readonly byId: ReadonlyMap<string, RootKey>;
  /** Closes what the provider opened (the PKCS#11 session); a no-op for file and env keys. */
  close(): Promise<void>;
}

/** The one line production logs, once, when the root key is not in an HSM. */
export const NOT_IN_HSM_WARNING =
  "root key: not in an HSM (file/env provider). PCI DSS 3.6.1.2 wants key-encrypting keys in a secure cryptographic device; set FIELDVAULT_ROOT_KEY_PROVIDER=pkcs11 (DESIGN §12, docs/key-rotation.md)";

function decodeKey(b64: string, source: string): Uint8Array {
  let key: Uint8Array;
  try {
    key = sodium.from_base64(b64.trim(), sodium.base64_variants.ORIGINAL);
  } catch {
    throw new ConfigError([`${source}: not base64`]);
  }
  if (key.length !== 32) throw new ConfigError([`${source}: a root key must be 32 bytes`]);
  return key;
}

/** File and env keys: one key per file (base64; several files comma-separated) or FIELDVAULT_ROOT_KEY (several comma-separated). */
function softwareKeys(config: Config): Uint8Array[] {
  if (config.rootKey.env) return config.rootKey.env.split(",").map((b64, i) => decodeKey(b64, `FIELDVAULT_ROOT_KEY[${i}]`));
  return (config.rootKey.files ?? []).map((file) => {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      throw new ConfigError([`FIELDVAULT_ROOT_KEY_FILE: cannot read ${file}`]);
    }
    return decodeKey(text, `FIELDVAULT_ROOT_KEY_FILE (${file})`);
  });
}

async function hsmKeys(p: Pkcs11Config): Promise<{ keys: readonly RootKey[]; close(): Promise<void> }> {
  let pin: string;
  try {
    pin = readPin(p.pin);
  } catch (err) {
    throw new ConfigError([(err as Error).message]);
  }
  try {
    return await openPkcs11RootKeys({ library: p.library, tokenLabel: p.tokenLabel, pin, keyLabels: p.keyLabels });
  } catch (err) {
    if (!(err instanceof Pkcs11SetupError)) throw err;
    const variable = err.setting === "pin" ? ("file" in p.pin ? "FIELDVAULT_PKCS11_PIN_FILE" : "FIELDVAULT_PKCS11_PIN") : PKCS11_SETTING_VARIABLE[err.setting];
    throw new ConfigError([`${variable}: ${err.message}`]);
  }
}

/**
 * Loads the root keys. The provider (FIELDVAULT_ROOT_KEY_PROVIDER) supplies the active key: the
 * first file/env key, or the first PKCS#11 key label. Any other source that is configured too is
 * loaded unwrap-only, which is how a deployment moves between providers (docs/key-rotation.md):
 * with `pkcs11`, FIELDVAULT_ROOT_KEY_FILE / FIELDVAULT_ROOT_KEY add the old keys; with `file` or
 * `env`, the FIELDVAULT_PKCS11_* settings add the HSM's. FIELDVAULT_ACTIVE_ROOT_KEY_ID may name any
 * loaded key. Production refuses the development key and warns once when the key is not in an HSM.
 */
export async function loadRootKeys(config: Config, opts: { warn?: (message: string) => void } = {}): Promise<RootKeyring> {
  const local = softwareKeys(config).map(localRootKey);
  if (config.mode === "production") {
    // The id is pinned here too: a production image ships without keys-dev/.
    const devIds = new Set([DEV_ROOT_KEY_ID]);
    if (existsSync(DEV_ROOT_KEY_FILE)) devIds.add(rootKeyId(decodeKey(readFileSync(DEV_ROOT_KEY_FILE, "utf8"), "development key")));
    if (local.some((k) => devIds.has(k.id))) {
      throw new ConfigError(["FIELDVAULT_ROOT_KEY*: the development root key is refused in production mode"]);
    }
  }
  const inHsm = config.rootKey.provider === "pkcs11";
  if (!inHsm && local.length === 0) throw new ConfigError(["FIELDVAULT_ROOT_KEY_FILE / FIELDVAULT_ROOT_KEY: no root key"]);
  const hsm = config.rootKey.pkcs11 ? await hsmKeys(config.rootKey.pkcs11) : undefined;
  try {
    const keys = inHsm ? [...hsm!.keys, ...local] : [...local, ...(hsm?.keys ?? [])];
    const byId = new Map<string, RootKey>();
    for (const k of keys) if (!byId.has(k.id)) byId.set(k.id, k);
    const active = config.rootKey.activeId ? byId.get(config.rootKey.activeId) : keys[0];
    if (!active) throw new ConfigError([`FIELDVAULT_ACTIVE_ROOT_KEY_ID: no provided root key has id ${config.rootKey.activeId}`]);
    if (config.mode === "production" && !inHsm) opts.warn?.(NOT_IN_HSM_WARNING);
    return { active, byId, close: async () => hsm?.close() };
  } catch (err) {
    await hsm?.close();
    throw err;
  }
}
