import { randomInt } from "node:crypto";
import { TOKEN_PATTERN } from "../crypto/tokens";

/**
 * Token formats (DESIGN §13). Pure: no storage, no transport.
 *
 * - `opaque`: `tok_` + 22 base62 characters (crypto/tokens.ts).
 * - `preserving` (card_number only): the PAN's length, all digits, its first 6 and last 4 kept,
 *   random middle digits chosen so the whole number FAILS the Luhn check — it can never be a real
 *   card, and a Luhn-valid digit string is never taken for a token (so a real PAN pasted where a
 *   token belongs is never looked up or logged).
 *
 * A PAN's preserving token is an alias of its one stored value: the row keeps its opaque id (the
 * ciphertext's AAD binds that id) and `token_aliases` maps the digits to it. See docs/security.md.
 */
export type TokenFormat = "opaque" | "preserving";

/** Categories whose values a preserving token can stand in for. */
export const PRESERVING_CATEGORIES: ReadonlySet<string> = new Set(["card_number"]);

export const PREFIX_DIGITS = 6;
export const SUFFIX_DIGITS = 4;
export const MIN_PAN = 12;
export const MAX_PAN = 19;

const PRESERVING_SHAPE = /^\d{12,19}$/;

export function luhnValid(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return sum % 10 === 0;
}

/** What a preserving token keeps of a PAN, and so all it depends on besides chance. */
export interface PanShape {
  prefix: string;
  suffix: string;
  length: number;
}

export function panShape(pan: string): PanShape {
  return { prefix: pan.slice(0, PREFIX_DIGITS), suffix: pan.slice(-SUFFIX_DIGITS), length: pan.length };
}

/** The BIN range a token belongs to: tokens of one range compete for the same middle digits. */
export const rangeKey = (s: PanShape): string => `${s.length}:${s.prefix}:${s.suffix}`;

/**
 * How many distinct preserving tokens a range has: 10^(m-1) · 9 for m middle digits (for any
 * choice of the other middle digits exactly one value of the last one makes the number Luhn-valid).
 * Real PANs of a range number only 10^(m-1), so one token per PAN can never fill a range.
 */
export function rangeCapacity(length: number): number {
  const m = length - PREFIX_DIGITS - SUFFIX_DIGITS;
  return 9 * 10 ** (m - 1);
}

/**
 * One candidate preserving token, uniformly among the range's Luhn-invalid numbers: random middle
 * digits, the last middle digit drawn from the nine values that make the Luhn check fail.
 */
export function preservingCandidate(s: PanShape, digit: (n: number) => number = randomInt): string {
  const m = s.length - PREFIX_DIGITS - SUFFIX_DIGITS;
  let middle = "";
  for (let i = 0; i < m - 1; i++) middle += String(digit(10));
  // Which last-middle digit would make it valid? Try the ten (one exists: the map d → Luhn weight is a bijection).
  let valid = 0;
  for (let d = 0; d < 10; d++) {
    if (luhnValid(s.prefix + middle + d + s.suffix)) {
      valid = d;
      break;
    }
  }
  const pick = digit(9); // 0..8 → the nine digits other than `valid`
  const last = pick >= valid ? pick + 1 : pick;
  return s.prefix + middle + String(last) + s.suffix;
}

/** Every preserving token of a range, in order (for small ranges only: 12–15 digit PANs). */
export function* rangeTokens(s: PanShape): Generator<string> {
  const m = s.length - PREFIX_DIGITS - SUFFIX_DIGITS;
  for (let n = 0; n < 10 ** m; n++) {
    const t = s.prefix + String(n).padStart(m, "0") + s.suffix;
    if (!luhnValid(t)) yield t;
  }
}

/** Whether a preserving token can stand for this PAN: same length, first 6 and last 4. */
export function aliasFits(token: string, pan: string): boolean {
  return token.length === pan.length && token.startsWith(pan.slice(0, PREFIX_DIGITS)) && token.endsWith(pan.slice(-SUFFIX_DIGITS));
}

export function isPreservingToken(token: string): boolean {
  return PRESERVING_SHAPE.test(token) && !luhnValid(token);
}

export function isOpaqueToken(token: string): boolean {
  return TOKEN_PATTERN.test(token);
}

/** Either form of token. Anything else is never looked up, and never written to the log as given. */
export function isWellFormedToken(token: string): boolean {
  return isOpaqueToken(token) || isPreservingToken(token);
}

export function tokenFormatOf(token: string): TokenFormat | undefined {
  if (isOpaqueToken(token)) return "opaque";
  if (isPreservingToken(token)) return "preserving";
  return undefined;
}

/** A digit string that passes the Luhn check may be a real PAN: never a token, never to be logged. */
export function looksLikePan(s: string): boolean {
  return PRESERVING_SHAPE.test(s.replace(/[\s-]/g, "")) && luhnValid(s.replace(/[\s-]/g, ""));
}

/**
 * How a token the caller presented is written to the access log. A preserving token is PCI's
 * truncation (first 6, last 4) plus random digits, so it is logged as given; anything malformed —
 * a Luhn-valid number may be a real PAN — is never logged as given.
 */
export function loggableToken(token: string): string {
  return isWellFormedToken(token) ? token : "(malformed)";
}
