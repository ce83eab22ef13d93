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
}

export interface NewToken extends TokenRecord {
  /** Keyed fingerprint for deterministic categories, else null. */
  readonly fingerprint: Uint8Array | null;
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
  /** Reads without consuming (category and policy checks come before the reveal). */
  peek(tokens: readonly string[]): Promise<Map<string, CvvRecord>>;
  /** Atomic get-and-delete: at most one caller ever gets a given CVV. */
  take(token: string): Promise<CvvRecord | undefined>;
  remove(tokens: readonly string[]): Promise<number>;
  close(): Promise<void>;
}

/** Per caller × category budgets. Returns how many of `n` requested units are allowed. */
export interface RateLimiter {
  take(key: string, limitPerMinute: number, n: number): Promise<number>;
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
