import { sodium } from "./sodium";

const CONTEXT = "fvfprint"; // crypto_kdf context: exactly 8 bytes

/** 31-bit subkey id (libsodium-wrappers takes a signed-int-safe number) for a category name, so new categories need no numbering. */
function subkeyId(category: string): number {
  const h = sodium.crypto_generichash(8, sodium.from_string(category), null);
  return Buffer.from(h).readUInt32BE(0) >>> 1;
}

/** Per-category fingerprint key derived from the deployment's fingerprint master key. */
export function fingerprintKey(master: Uint8Array, category: string): Uint8Array {
  return sodium.crypto_kdf_derive_from_key(32, subkeyId(category), CONTEXT, master);
}

/** Keyed BLAKE2b-256 of a normalised value. Without the key it cannot be tested offline. */
export function fingerprint(key: Uint8Array, normalised: Uint8Array): Uint8Array {
  return sodium.crypto_generichash(32, normalised, key);
}
