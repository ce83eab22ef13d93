import { aad, newKey, open, seal, zero } from "./aead";

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

// The value is bound to format ‖ token ‖ category; the wrapped DEK to token ‖ category ‖ KEK
// version. A rewrap changes only the wrapped DEK, never the value's ciphertext.
const valueAad = (tokenId: string, category: string) => aad("value", tokenId, category);
const dekAad = (tokenId: string, category: string, version: number) => aad("dek", tokenId, category, version);

/** Encrypts a value under a fresh DEK, wrapped by the KEK. The DEK is zeroed before returning. */
export function sealValue(kek: Kek, tokenId: string, category: string, plaintext: Uint8Array): SealedValue {
  const dek = newKey();
  try {
    return {
      kekVersion: kek.version,
      ciphertext: seal(dek, plaintext, valueAad(tokenId, category)),
      wrappedDek: seal(kek.key, dek, dekAad(tokenId, category, kek.version)),
    };
  } finally {
    zero(dek);
  }
}

export function openValue(kek: Kek, tokenId: string, category: string, sealed: SealedValue): Uint8Array {
  const dek = open(kek.key, sealed.wrappedDek, dekAad(tokenId, category, sealed.kekVersion));
  try {
    return open(dek, sealed.ciphertext, valueAad(tokenId, category));
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
