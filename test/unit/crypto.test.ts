import { newKey, open, OpenError, seal, aad } from "../../src/crypto/aead";
import { openValue, rewrapDek, sealValue } from "../../src/crypto/envelope";
import { fingerprint, fingerprintKey } from "../../src/crypto/fingerprint";
import { localRootKey, rootKeyId, unwrapKek, unwrapSecret, wrapKek } from "../../src/crypto/root-key";
import { readySodium } from "../../src/crypto/sodium";
import { isWellFormedToken, newToken } from "../../src/crypto/tokens";

const utf8 = new TextEncoder();

beforeAll(() => readySodium());

describe("aead", () => {
  const key = () => newKey();
  const blobOf = (k: Uint8Array) => seal(k, utf8.encode("4111111111111111"), aad("value", "tok_a", "card_number"));

  it("opens what it sealed, with a format byte and a fresh nonce each time", () => {
    const k = key();
    const a = blobOf(k);
    const b = blobOf(k);
    expect(a[0]).toBe(1);
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false);
    expect(new TextDecoder().decode(open(k, a, aad("value", "tok_a", "card_number")))).toBe("4111111111111111");
  });

  const tampered: [string, (b: Uint8Array) => Uint8Array][] = [
    ["a flipped ciphertext byte", (b) => { const c = Uint8Array.from(b); c[c.length - 3]! ^= 1; return c; }],
    ["a flipped nonce byte", (b) => { const c = Uint8Array.from(b); c[5]! ^= 0x80; return c; }],
    ["a truncated blob", (b) => b.subarray(0, b.length - 1)],
    ["a blob shorter than a header", (b) => b.subarray(0, 10)],
    ["an unknown format byte", (b) => { const c = Uint8Array.from(b); c[0] = 2; return c; }],
    ["an empty blob", () => new Uint8Array(0)],
    ["a huge appended tail", (b) => { const c = new Uint8Array(b.length + 1_000_000); c.set(b); return c; }],
  ];
  it.each(tampered)("refuses %s with the one opaque error", (_n, mutate) => {
    const k = key();
    const blob = mutate(blobOf(k));
    expect(() => open(k, blob, aad("value", "tok_a", "card_number"))).toThrow(OpenError);
  });

  it("refuses the wrong key and the wrong AAD (another row, another category)", () => {
    const k = key();
    const blob = blobOf(k);
    expect(() => open(key(), blob, aad("value", "tok_a", "card_number"))).toThrow(OpenError);
    expect(() => open(k, blob, aad("value", "tok_b", "card_number"))).toThrow(OpenError);
    expect(() => open(k, blob, aad("value", "tok_a", "passport_number"))).toThrow(OpenError);
    expect(() => open(k, blob, aad("dek", "tok_a", "card_number"))).toThrow(OpenError);
  });

  it("encodes AAD parts unambiguously", () => {
    expect(Buffer.from(aad("v", "ab", "c")).equals(Buffer.from(aad("v", "a", "bc")))).toBe(false);
  });
});

describe("envelope", () => {
  const kek1 = { version: 1, key: newKey() };
  const kek2 = { version: 2, key: newKey() };

  it("binds the value to its token and category, and the DEK to the KEK version", () => {
    const sealed = sealValue(kek1, "tok_x", "email", utf8.encode("a@b.co"));
    expect(new TextDecoder().decode(openValue(kek1, "tok_x", "email", sealed))).toBe("a@b.co");
    expect(() => openValue(kek1, "tok_y", "email", sealed)).toThrow(OpenError);
    expect(() => openValue(kek1, "tok_x", "phone", sealed)).toThrow(OpenError);
    expect(() => openValue(kek2, "tok_x", "email", { ...sealed, kekVersion: 2 })).toThrow(OpenError);
    expect(() => openValue(kek1, "tok_x", "email", { ...sealed, kekVersion: 2 })).toThrow(OpenError);
  });

  it("rewraps only the DEK: the value ciphertext is unchanged and opens under the new version", () => {
    const sealed = sealValue(kek1, "tok_r", "address", utf8.encode("1 Main St"));
    const wrappedDek = rewrapDek(kek1, kek2, "tok_r", "address", sealed.wrappedDek);
    const moved = { ...sealed, kekVersion: 2, wrappedDek };
    expect(new TextDecoder().decode(openValue(kek2, "tok_r", "address", moved))).toBe("1 Main St");
    expect(() => rewrapDek(kek2, kek1, "tok_r", "address", sealed.wrappedDek)).toThrow(OpenError);
  });
});

describe("root key and fingerprints", () => {
  it("binds a wrapped KEK to category, version and root key id", async () => {
    const rk = newKey();
    const root = localRootKey(rk);
    const kek = newKey();
    const w = await wrapKek(root, "card_number", 3, kek);
    expect(Buffer.from(await unwrapKek(root, "card_number", 3, w)).equals(Buffer.from(kek))).toBe(true);
    await expect(unwrapKek(root, "card_number", 4, w)).rejects.toThrow(OpenError);
    await expect(unwrapKek(root, "email", 3, w)).rejects.toThrow(OpenError);
    await expect(unwrapKek({ ...root, id: "rk_other" }, "card_number", 3, w)).rejects.toThrow(OpenError);
    expect(root.id).toBe(rootKeyId(rk));
    expect(root.id).toMatch(/^rk_[0-9a-f]{16}$/);
  });

  it("still opens, byte for byte, a KEK and a secret wrapped by the code before the root-key interface", async () => {
    // Made by the previous wrapKek/wrapSecret (seal(root.key, …) with root = { id, key }), key bytes 1..32.
    const root = localRootKey(Uint8Array.from({ length: 32 }, (_, i) => i + 1));
    const kek = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
    const oldKek = Buffer.from("Aaf8naQcWfSHm0BlY6aAGrIZn0XtyFSsG+1ZuxP0SpjdPi7a359DeKunWw7tcic/FbY9MHEt2pVxdoN+9IQ0KtlMCpMvZXW6Pg==", "base64");
    const oldSecret = Buffer.from("ASRDrJVxRNxzQzU0bPLMNlQDvhsiDFB8CAoj2Hxo4OIXg7D1fRlBjCCxKUiV3jHj4YU1HYgA3p8h7QjFTMiR6amqYvYUrDDV6A==", "base64");
    expect(root.id).toBe("rk_aef5ccca1f8f46c4");
    expect(Buffer.from(await unwrapKek(root, "card_number", 3, oldKek))).toEqual(Buffer.from(kek));
    expect(Buffer.from(await unwrapSecret(root, "fingerprint-master", oldSecret))).toEqual(Buffer.from(kek));
    // And what it wraps now has the same shape: format byte 0x01, 24-byte nonce, 32 + 16 bytes.
    const now = await wrapKek(root, "card_number", 3, kek);
    expect(now[0]).toBe(1);
    expect(now.length).toBe(oldKek.length);
  });

  it("fingerprints are keyed per category and deterministic", () => {
    const master = newKey();
    const v = utf8.encode("4111111111111111");
    const a = fingerprint(fingerprintKey(master, "card_number"), v);
    expect(Buffer.from(a).equals(Buffer.from(fingerprint(fingerprintKey(master, "card_number"), v)))).toBe(true);
    expect(Buffer.from(a).equals(Buffer.from(fingerprint(fingerprintKey(master, "passport_number"), v)))).toBe(false);
    expect(Buffer.from(a).equals(Buffer.from(fingerprint(fingerprintKey(newKey(), "card_number"), v)))).toBe(false);
  });
});

describe("tokens", () => {
  it("are tok_ + 22 base62 chars and never repeat", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 20000; i++) {
      const t = newToken();
      expect(isWellFormedToken(t)).toBe(true);
      seen.add(t);
    }
    expect(seen.size).toBe(20000);
  });
});

describe("CVV envelope: authenticated times and the one-hour cap", () => {
  const { openCvv } = require("../../src/services/cvv-single-use") as typeof import("../../src/services/cvv-single-use");
  const { sealValue: seal2, cvvBinding } = require("../../src/crypto/envelope") as typeof import("../../src/crypto/envelope");
  const kek = { version: 1, key: new Uint8Array(32).fill(7) };
  const created = new Date("2026-01-01T00:00:00Z");
  const expires = new Date(created.getTime() + 900_000);
  const sealed = () => seal2(kek, "tok_c", "card_cvv", new TextEncoder().encode("123"), cvvBinding(created, expires));

  it("opens within its lifetime", () => {
    const r = openCvv(kek, "tok_c", { ...sealed(), createdAt: created, expiresAt: expires }, new Date(created.getTime() + 1000));
    expect(r.ok && new TextDecoder().decode(r.plain)).toBe("123");
  });
  it("refuses after its authenticated expiry, whatever Redis's TTL", () => {
    const r = openCvv(kek, "tok_c", { ...sealed(), createdAt: created, expiresAt: expires }, new Date(expires.getTime() + 1));
    expect(r).toMatchObject({ ok: false, code: "FAILED_PRECONDITION" });
  });
  it("refuses edited times with the opaque error", () => {
    const r = openCvv(kek, "tok_c", { ...sealed(), createdAt: created, expiresAt: new Date("2099-01-01") }, new Date(created.getTime() + 1000));
    expect(r).toMatchObject({ ok: false, code: "INTERNAL" });
  });
  it("refuses an authentic envelope older than the cap (a vault sealing a longer lifetime)", () => {
    const long = new Date(created.getTime() + 7200_000);
    const s = seal2(kek, "tok_c", "card_cvv", new TextEncoder().encode("123"), cvvBinding(created, long));
    const r = openCvv(kek, "tok_c", { ...s, createdAt: created, expiresAt: long }, new Date(created.getTime() + 1000));
    expect(r).toMatchObject({ ok: false, code: "FAILED_PRECONDITION" });
  });
});
