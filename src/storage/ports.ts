import type { MaskedView } from "../domain/categories";

/** A stored token as read back: everything needed to open it, and nothing in plaintext but the mask. */
export interface TokenRecord {
  readonly id: string;
  readonly category: string;
  readonly kekVersion: number;
  readonly wrappedDek: Uint8Array;
  readonly ciphertext: Uint8Array;
  readonly masked: MaskedView;
  readonly createdAt: Date;
  readonly expiresAt: Date | null;
  /** Keyed fingerprint for deterministic categories, else null (bound into a v2 value's AAD). */
  readonly fingerprint: Uint8Array | null;
  /** MAC over the metadata columns (null only on legacy v1 rows); see services/token-integrity.ts. */
  readonly metaMac?: Uint8Array | null;
}

/** Checks and makes the MAC over a token row's metadata (category, fingerprint, mask, times, KEK version). */
export interface TokenIntegrity {
  mac(r: Omit<TokenRecord, "wrappedDek" | "ciphertext" | "metaMac">): Uint8Array;
  /** True when the row's MAC is valid, or it is a legacy v1 row that never had one. Reports failures. */
  intact(r: TokenRecord): boolean;
}

export interface NewToken extends TokenRecord {
  readonly subjectRef: string | null;
  /** The policy caller that links the subject (a caller later unlinks only its own links). */
  readonly subjectCaller?: string;
}

/** A single-use CVV envelope kept only in Redis (or its in-process stand-in). */
export interface CvvRecord {
  readonly kekVersion: number;
  readonly wrappedDek: Uint8Array;
  readonly ciphertext: Uint8Array;
  readonly createdAt: Date;
  readonly expiresAt: Date;
}

export interface CvvStore {
  put(entries: readonly { token: string; record: CvvRecord }[]): Promise<void>;
  /**
   * Reads without consuming. Single use is not Redis's job: a reveal records the token in
   * PostgreSQL (cvv_consumed) in the transaction of its log entry, and only then removes it here.
   */
  peek(tokens: readonly string[]): Promise<Map<string, CvvRecord>>;
  remove(tokens: readonly string[]): Promise<number>;
  close(): Promise<void>;
}

/** How a take counts: up to `n` ("up-to"), or `n` or nothing ("all"). */
export type TakeMode = "up-to" | "all";
/** Budgets are fixed windows of a wall-clock minute, the same for every instance. */
export const BUDGET_WINDOW_MS = 60_000;
/** How long until the current budget window ends and a budget is whole again. */
export const untilNextBudgetWindow = (now = Date.now()) => BUDGET_WINDOW_MS - (now % BUDGET_WINDOW_MS);
/**
 * Per caller × category budgets. Returns how many of `n` requested units are allowed: up to `n`
 * ("up-to", the default: a detokenize reveals what fits), or `n` or nothing ("all": a tokenize is
 * stored whole or not at all, and a refused one leaves the rest of the minute's budget to the next call).
 */
export interface RateLimiter {
  take(key: string, limitPerMinute: number, n: number, mode?: TakeMode): Promise<number>;
  close(): Promise<void>;
}

const FORMAT = 1;
export function encodeCvv(r: CvvRecord): Buffer {
  const head = Buffer.alloc(1 + 4 + 8 + 8 + 2);
  head.writeUInt8(FORMAT, 0);
  head.writeUInt32BE(r.kekVersion, 1);
  head.writeDoubleBE(r.createdAt.getTime(), 5);
  head.writeDoubleBE(r.expiresAt.getTime(), 13);
  head.writeUInt16BE(r.wrappedDek.length, 21);
  return Buffer.concat([head, r.wrappedDek, r.ciphertext]);
}

export function decodeCvv(b: Buffer): CvvRecord | undefined {
  if (b.length < 23 || b.readUInt8(0) !== FORMAT) return undefined;
  const dekLen = b.readUInt16BE(21);
  return {
    kekVersion: b.readUInt32BE(1),
    createdAt: new Date(b.readDoubleBE(5)),
    expiresAt: new Date(b.readDoubleBE(13)),
    wrappedDek: b.subarray(23, 23 + dekLen),
    ciphertext: b.subarray(23 + dekLen),
  };
}
