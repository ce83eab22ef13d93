import { random } from "./random";
import { sodium } from "./sodium";

/** Every sealed blob starts with this byte, so a future format can be told apart. */
export const FORMAT_V1 = 0x01;
/** Same layout as v1; a value sealed as v2 has an AAD that also binds its row's metadata (see envelope.ts). */
export const FORMAT_V2 = 0x02;
const NONCE_BYTES = 24;
export const KEY_BYTES = 32;

/** The one error for any failure to open: wrong key, tampering, wrong AAD, bad format. */
export class OpenError extends Error {
  constructor() {
    super("ciphertext could not be opened");
    this.name = "OpenError";
  }
}

/** From v2 the blob's format byte is authenticated too (prefixed to the AAD), so it cannot be flipped. */
function boundAad(format: number, aad: Uint8Array): Uint8Array {
  if (format === FORMAT_V1) return aad;
  const out = new Uint8Array(aad.length + 1);
  out[0] = format;
  out.set(aad, 1);
  return out;
}

/** XChaCha20-Poly1305-IETF; returns format byte ‖ nonce ‖ ciphertext+tag. The nonce is made here. */
export function seal(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array, format: number = FORMAT_V1): Uint8Array {
  const nonce = random(NONCE_BYTES);
  const ct = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, boundAad(format, aad), null, nonce, key);
  const blob = new Uint8Array(1 + NONCE_BYTES + ct.length);
  blob[0] = format;
  blob.set(nonce, 1);
  blob.set(ct, 1 + NONCE_BYTES);
  return blob;
}

export function open(key: Uint8Array, blob: Uint8Array, aad: Uint8Array): Uint8Array {
  if (blob.length < 1 + NONCE_BYTES + 16 || (blob[0] !== FORMAT_V1 && blob[0] !== FORMAT_V2)) throw new OpenError();
  try {
    return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
      null,
      blob.subarray(1 + NONCE_BYTES),
      boundAad(blob[0]!, aad),
      blob.subarray(1, 1 + NONCE_BYTES),
      key,
    );
  } catch {
    throw new OpenError();
  }
}

/**
 * Unambiguous AAD: format byte, then a label and each part as u16 length ‖ UTF-8 bytes. Written
 * straight into one buffer (it runs twice per field on the hot path).
 */
export function aad(label: string, ...parts: (string | number)[]): Uint8Array {
  const strs = [label];
  let len = 1 + 2 + Buffer.byteLength(label);
  for (const p of parts) {
    const str = String(p);
    strs.push(str);
    len += 2 + Buffer.byteLength(str);
  }
  const out = Buffer.allocUnsafe(len);
  out[0] = FORMAT_V1;
  let at = 1;
  for (const str of strs) {
    const n = out.write(str, at + 2, "utf8");
    out.writeUInt16BE(n, at);
    at += 2 + n;
  }
  return out;
}

export function newKey(): Uint8Array {
  return Uint8Array.from(random(KEY_BYTES));
}

export function zero(key: Uint8Array): void {
  sodium.memzero(key);
}
