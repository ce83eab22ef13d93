import { aad, open, seal } from "./aead";
import { sodium } from "./sodium";

/** A root key as a provider hands it over. Never stored in the database. */
export interface RootKey {
  readonly id: string;
  readonly key: Uint8Array;
}

/** A stable, non-secret id for a root key: a keyed-hash prefix, so it says nothing of the key. */
export function rootKeyId(key: Uint8Array): string {
  const h = sodium.crypto_generichash(8, sodium.from_string("fieldvault root key id"), key);
  return "rk_" + sodium.to_hex(h);
}

/** Wraps a KEK version: AAD = category ‖ version ‖ root key id. */
export function wrapKek(root: RootKey, category: string, version: number, kek: Uint8Array): Uint8Array {
  return seal(root.key, kek, aad("kek", category, version, root.id));
}

export function unwrapKek(root: RootKey, category: string, version: number, wrapped: Uint8Array): Uint8Array {
  return open(root.key, wrapped, aad("kek", category, version, root.id));
}

/** Wraps a deployment secret (e.g. the fingerprint master key): AAD = name ‖ root key id. */
export function wrapSecret(root: RootKey, name: string, secret: Uint8Array): Uint8Array {
  return seal(root.key, secret, aad("secret", name, root.id));
}

export function unwrapSecret(root: RootKey, name: string, wrapped: Uint8Array): Uint8Array {
  return open(root.key, wrapped, aad("secret", name, root.id));
}
