import { existsSync, readFileSync } from "node:fs";
import { type RootKey, rootKeyId } from "../crypto/root-key";
import { sodium } from "../crypto/sodium";
import { ConfigError, type Config, DEV_ROOT_KEY_FILE } from "./config";

/** rootKeyId of keys-dev/root.key, the published development key that production refuses. */
export const DEV_ROOT_KEY_ID = "rk_21c6418a9598d389";

/** The root keys a provider hands over: the active one wraps new KEKs; the others only unwrap. */
export interface RootKeyring {
  readonly active: RootKey;
  readonly byId: ReadonlyMap<string, RootKey>;
}

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

/**
 * Key providers: `file` (one key per file, base64; several files separated by commas) and
 * `env` (FIELDVAULT_ROOT_KEY, base64, several separated by commas). The first key is active
 * unless FIELDVAULT_ACTIVE_ROOT_KEY_ID names another. Production refuses the development key.
 */
export function loadRootKeys(config: Config): RootKeyring {
  const keys: RootKey[] = [];
  if (config.rootKey.env) {
    config.rootKey.env.split(",").forEach((b64, i) => {
      const key = decodeKey(b64, `FIELDVAULT_ROOT_KEY[${i}]`);
      keys.push({ id: rootKeyId(key), key });
    });
  } else {
    for (const file of config.rootKey.files ?? []) {
      let text: string;
      try {
        text = readFileSync(file, "utf8");
      } catch {
        throw new ConfigError([`FIELDVAULT_ROOT_KEY_FILE: cannot read ${file}`]);
      }
      const key = decodeKey(text, `FIELDVAULT_ROOT_KEY_FILE (${file})`);
      keys.push({ id: rootKeyId(key), key });
    }
  }
  if (keys.length === 0) throw new ConfigError(["FIELDVAULT_ROOT_KEY_FILE / FIELDVAULT_ROOT_KEY: no root key"]);
  if (config.mode === "production") {
    // The id is pinned here too: a production image ships without keys-dev/.
    const devIds = new Set([DEV_ROOT_KEY_ID]);
    if (existsSync(DEV_ROOT_KEY_FILE)) devIds.add(rootKeyId(decodeKey(readFileSync(DEV_ROOT_KEY_FILE, "utf8"), "development key")));
    if (keys.some((k) => devIds.has(k.id))) {
      throw new ConfigError(["FIELDVAULT_ROOT_KEY*: the development root key is refused in production mode"]);
    }
  }
  const byId = new Map(keys.map((k) => [k.id, k]));
  const active = config.rootKey.activeId ? byId.get(config.rootKey.activeId) : keys[0];
  if (!active) throw new ConfigError([`FIELDVAULT_ACTIVE_ROOT_KEY_ID: no provided root key has id ${config.rootKey.activeId}`]);
  return { active, byId };
}
