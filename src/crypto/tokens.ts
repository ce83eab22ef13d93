import { random } from "./random";

const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const TOKEN_CHARS = 22; // 62^22 > 2^128
export const TOKEN_PATTERN = /^tok_[0-9A-Za-z]{22}$/;

/** `tok_` + base62 of 16 random bytes. Says nothing about value, category or key. */
export function newToken(): string {
  const bytes = random(16);
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  let out = "";
  for (let i = 0; i < TOKEN_CHARS; i++) {
    out = ALPHABET[Number(n % 62n)] + out;
    n /= 62n;
  }
  return "tok_" + out;
}

export function isWellFormedToken(token: string): boolean {
  return TOKEN_PATTERN.test(token);
}
