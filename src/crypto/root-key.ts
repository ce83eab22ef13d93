import { aad, open, seal } from "./aead";
import { sodium } from "./sodium";

/**
 * A root key (Tink's KmsAead shape): a stable, non-secret id and two methods. The caller never sees
 * key bytes. The libsodium key below and the PKCS#11 key (pkcs11-root-key.ts) implement it; nothing
 * that holds a RootKey knows which one it has.
 *
 * `unwrap` throws OpenError when the blob does not open (wrong key, tampering, wrong AAD) and
 * RootKeyUnavailableError when the key's device cannot be used right now.
 */
export interface RootKey {
  readonly id: string;
  wrap(plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array>;
  unwrap(blob: Uint8Array, aad: Uint8Array): Promise<Uint8Array>;
}

/** The device holding a root key failed (module gone, session lost, token removed). Says nothing secret. */
export class RootKeyUnavailableError extends Error {
  constructor(readonly keyId: string, reason: string) {
    super(`root key ${keyId} unavailable: ${reason}`);
    this.name = "RootKeyUnavailableError";
  }
}

/** A stable, non-secret id for a root key: a keyed-hash prefix, so it says nothing of the key. */
export function rootKeyId(key: Uint8Array): string {
  const h = sodium.crypto_generichash(8, sodium.from_string("fieldvault root key id"), key);
  return "rk_" + sodium.to_hex(h);
}

/**
 * A 32-byte root key held in process memory (providers `file` and `env`): XChaCha20-Poly1305, the
 * blob is format byte 0x01 ‖ 24-byte nonce ‖ ciphertext+tag, exactly as before the interface existed.
 */
export function localRootKey(key: Uint8Array): RootKey {
  const id = rootKeyId(key);
  return {
    id,
    wrap: async (plaintext, ad) => seal(key, plaintext, ad),
    unwrap: async (blob, ad) => open(key, blob, ad),
  };
}

/** Wraps a KEK version: AAD = category ‖ version ‖ root key id. */
export function wrapKek(root: RootKey, category: string, version: number, kek: Uint8Array): Promise<Uint8Array> {
  return root.wrap(kek, aad("kek", category, version, root.id));
}

export function unwrapKek(root: RootKey, category: string, version: number, wrapped: Uint8Array): Promise<Uint8Array> {
  return root.unwrap(wrapped, aad("kek", category, version, root.id));
}

/**
 * Wraps a deployment secret (the fingerprint master key, and any other secret kept in
 * `vault_secrets`): AAD = name ‖ root key id. RotateRootKey re-wraps every such secret.
 */
export function wrapSecret(root: RootKey, name: string, secret: Uint8Array): Promise<Uint8Array> {
  return root.wrap(secret, aad("secret", name, root.id));
}

export function unwrapSecret(root: RootKey, name: string, wrapped: Uint8Array): Promise<Uint8Array> {
  return root.unwrap(wrapped, aad("secret", name, root.id));
}
