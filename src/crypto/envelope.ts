import { aad, FORMAT_V1, FORMAT_V2, newKey, open, seal, zero } from "./aead";

/** A key-encryption key version, unwrapped. */
export interface Kek {
  readonly version: number;
  readonly key: Uint8Array;
}

export interface SealedValue {
  readonly kekVersion: number;
  readonly wrappedDek: Uint8Array;
  readonly ciphertext: Uint8Array;
}

// The value is bound to format ‖ token ‖ category (v1), and from v2 also to a binding string that
// names the row's integrity-relevant metadata (the fingerprint of a deterministic token, a CVV's
// created/expires times). The wrapped DEK is bound to token ‖ category ‖ KEK version, so a rewrap
// changes only the wrapped DEK (and, once, upgrades a v1 value to v2).
const valueAadV1 = (tokenId: string, category: string) => aad("value", tokenId, category);
const valueAadV2 = (tokenId: string, category: string, binding: string) => aad("value.v2", tokenId, category, binding);
const dekAad = (tokenId: string, category: string, version: number) => aad("dek", tokenId, category, version);

/** The v2 binding of a stored token: its fingerprint (hex) for a deterministic category, else empty. */
export const fingerprintBinding = (fp: Uint8Array | null | undefined): string => (fp ? Buffer.from(fp).toString("hex") : "");

/** The v2 binding of a CVV: its creation and expiry times (ms), so neither can be edited in Redis. */
export const cvvBinding = (createdAt: Date, expiresAt: Date): string => `cvv:${createdAt.getTime()}:${expiresAt.getTime()}`;

/** The format byte of a sealed value (1: legacy AAD, 2: AAD with binding). */
export const valueFormat = (sealed: Pick<SealedValue, "ciphertext">): number => sealed.ciphertext[0] ?? 0;

/** Encrypts a value (format v2) under a fresh DEK, wrapped by the KEK. The DEK is zeroed before returning. */
export function sealValue(kek: Kek, tokenId: string, category: string, plaintext: Uint8Array, binding = ""): SealedValue {
  const dek = newKey();
  try {
    return {
      kekVersion: kek.version,
      ciphertext: seal(dek, plaintext, valueAadV2(tokenId, category, binding), FORMAT_V2),
      wrappedDek: seal(kek.key, dek, dekAad(tokenId, category, kek.version)),
    };
  } finally {
    zero(dek);
  }
}

function openWithDek(dek: Uint8Array, tokenId: string, category: string, ciphertext: Uint8Array, binding: string): Uint8Array {
  const aadFor = ciphertext[0] === FORMAT_V1 ? valueAadV1(tokenId, category) : valueAadV2(tokenId, category, binding);
  return open(dek, ciphertext, aadFor);
}

/** Opens a v1 or v2 value; a v2 value opens only with the binding it was sealed with. */
export function openValue(kek: Kek, tokenId: string, category: string, sealed: SealedValue, binding = ""): Uint8Array {
  const dek = open(kek.key, sealed.wrappedDek, dekAad(tokenId, category, sealed.kekVersion));
  try {
    return openWithDek(dek, tokenId, category, sealed.ciphertext, binding);
  } finally {
    zero(dek);
  }
}

/** Re-wraps a DEK from one KEK version to another without touching the value. */
export function rewrapDek(from: Kek, to: Kek, tokenId: string, category: string, wrappedDek: Uint8Array): Uint8Array {
  const dek = open(from.key, wrappedDek, dekAad(tokenId, category, from.version));
  try {
    return seal(to.key, dek, dekAad(tokenId, category, to.version));
  } finally {
    zero(dek);
  }
}

/**
 * Re-wraps a DEK and, for a legacy v1 value, re-seals the value as v2 with `binding` (same DEK,
 * fresh nonce). `check` sees the plaintext first (e.g. to recompute the fingerprint) and may throw
 * to refuse the upgrade. The plaintext and the DEK are zeroed before returning.
 */
export function rewrapAndUpgrade(
  from: Kek,
  to: Kek,
  tokenId: string,
  category: string,
  sealed: SealedValue,
  binding: string,
  check: (plaintext: Uint8Array) => void = () => undefined,
): SealedValue {
  const dek = open(from.key, sealed.wrappedDek, dekAad(tokenId, category, from.version));
  try {
    let ciphertext = sealed.ciphertext;
    if (sealed.ciphertext[0] === FORMAT_V1) {
      const plain = open(dek, sealed.ciphertext, valueAadV1(tokenId, category));
      try {
        check(plain);
        ciphertext = seal(dek, plain, valueAadV2(tokenId, category, binding), FORMAT_V2);
      } finally {
        zero(plain);
      }
    }
    return { kekVersion: to.version, ciphertext, wrappedDek: seal(to.key, dek, dekAad(tokenId, category, to.version)) };
  } finally {
    zero(dek);
  }
}
