import { sodium } from "./sodium";

export interface SigningKey {
  readonly keyId: string;
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
}

/** Ed25519 key pair from a 32-byte seed. The key id is a hash prefix of the public key. */
export function signingKeyFromSeed(seed: Uint8Array): SigningKey {
  const kp = sodium.crypto_sign_seed_keypair(seed);
  const keyId = "sk_" + sodium.to_hex(sodium.crypto_generichash(8, kp.publicKey, null));
  return { keyId, publicKey: kp.publicKey, secretKey: kp.privateKey };
}

export function sign(key: SigningKey, message: Uint8Array): Uint8Array {
  return sodium.crypto_sign_detached(message, key.secretKey);
}

export function verifySignature(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  try {
    return sodium.crypto_sign_verify_detached(signature, message, publicKey);
  } catch {
    return false;
  }
}

/** BLAKE2b-256, for hash chains. */
export function hash256(...parts: Uint8Array[]): Uint8Array {
  const state = sodium.crypto_generichash_init(null, 32);
  for (const p of parts) sodium.crypto_generichash_update(state, p);
  return sodium.crypto_generichash_final(state, 32);
}

/** The key id of an Ed25519 public key, as `signingKeyFromSeed` names it. */
export function keyIdOf(publicKey: Uint8Array): string {
  return "sk_" + sodium.to_hex(sodium.crypto_generichash(8, publicKey, null));
}
