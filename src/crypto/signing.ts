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

/** BLAKE2b-256 of the parts' concatenation, for hash chains (one-shot: a streaming state costs 3× here). */
export function hash256(...parts: Uint8Array[]): Uint8Array {
  return sodium.crypto_generichash(32, parts.length === 1 ? parts[0]! : Buffer.concat(parts), null);
}

/** Reused for every chain entry: hashing is synchronous, so one buffer serves the whole process. */
let scratch = Buffer.allocUnsafe(16 * 1024);

/**
 * BLAKE2b-256(prefix ‖ UTF-8(text)): the same bytes as `hash256(prefix, utf8(text))`, without a
 * TextEncoder copy or a streaming state per entry (a hash-chain entry's hash in one WASM call).
 */
export function hash256Text(prefix: Uint8Array, text: string): Uint8Array {
  const need = prefix.length + text.length * 3;
  if (need > scratch.length) scratch = Buffer.allocUnsafe(Math.max(need, scratch.length * 2));
  scratch.set(prefix, 0);
  const n = prefix.length + scratch.write(text, prefix.length, "utf8");
  return sodium.crypto_generichash(32, scratch.subarray(0, n), null);
}

/** The key id of an Ed25519 public key, as `signingKeyFromSeed` names it. */
export function keyIdOf(publicKey: Uint8Array): string {
  return "sk_" + sodium.to_hex(sodium.crypto_generichash(8, publicKey, null));
}
