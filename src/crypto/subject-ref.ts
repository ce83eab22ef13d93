import type { SigningKey } from "./signing";
import { sodium } from "./sodium";

const CONTEXT = "fvsubjct"; // crypto_kdf context: exactly 8 bytes

/**
 * The key for hashing data-subject references in the access log, derived from the log's signing
 * key seed (domain-separated by the KDF context). Without it a logged hash cannot be tested
 * against guessed references offline.
 */
export function subjectRefKey(signingKey: SigningKey): Uint8Array {
  return sodium.crypto_kdf_derive_from_key(32, 1, CONTEXT, signingKey.secretKey.subarray(0, 32));
}

/** Keyed BLAKE2b-128 of a subject reference, as written to the access log: `sh_` + hex. */
export function subjectRefHash(key: Uint8Array, subjectRef: string): string {
  return "sh_" + sodium.to_hex(sodium.crypto_generichash(16, sodium.from_string(subjectRef), key));
}
