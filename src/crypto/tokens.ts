import { random } from "./random";

const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const TOKEN_CHARS = 22; // 62^22 > 2^128
export const TOKEN_PATTERN = /^tok_[0-9A-Za-z]{22}$/;

/** `tok_` + base62 of 16 random bytes. Says nothing about value, category or key. */
export function newToken(): string {
  return tokenFromBytes(random(16));
}

/** The token spelling of 16 bytes: base62 of the big-endian number, 22 digits. */
export function tokenFromBytes(b: Uint8Array): string {
  // The 128-bit big-endian number as four 32-bit limbs; long division by 62, 22 times
  // (the same digits as BigInt arithmetic, without allocating a BigInt per step).
  const limbs = [0, 4, 8, 12].map((i) => ((b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!) >>> 0);
  const digits = new Array<string>(TOKEN_CHARS);
  for (let d = TOKEN_CHARS - 1; d >= 0; d--) {
    let rem = 0;
    for (let i = 0; i < 4; i++) {
      const cur = rem * 0x1_0000_0000 + limbs[i]!; // < 62 · 2^32, exact in a double
      limbs[i] = Math.floor(cur / 62);
      rem = cur - limbs[i]! * 62;
    }
    digits[d] = ALPHABET[rem]!;
  }
  return "tok_" + digits.join("");
}

export function isWellFormedToken(token: string): boolean {
  return TOKEN_PATTERN.test(token);
}

/**
 * A token as it may be echoed back in a response: in full when well formed, otherwise only its first
 * few characters — a caller who pasted a card number or a name where a token belongs must not get it
 * (or have it logged) back whole.
 */
export function echoToken(token: string): string {
  return isWellFormedToken(token) ? token : token.length <= 4 ? "(malformed)" : `${token.slice(0, 4)}…(malformed)`;
}
