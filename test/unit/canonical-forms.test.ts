import fc from "fast-check";
import { readySodium, sodium } from "../../src/crypto/sodium";
import { tokenMetadataMac, type TokenMetadata } from "../../src/crypto/metadata-mac";
import { hash256 } from "../../src/crypto/signing";
import { chain, entryHash, GENESIS_HASH, type LogDraft } from "../../src/domain/access-log";

/**
 * Stored rows carry MACs and chain hashes over exact bytes, so the faster code on the commit path
 * must produce exactly what the first implementation did. The references below are that
 * implementation, copied here unchanged.
 */
beforeAll(() => readySodium());

const utf8 = new TextEncoder();

function stableRef(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stableRef).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableRef((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}
const tokenMacRef = (key: Uint8Array, m: TokenMetadata) =>
  sodium.crypto_generichash(
    32,
    utf8.encode(
      stableRef([
        "token.v1",
        m.id,
        m.category,
        m.kekVersion,
        m.fingerprint ? Buffer.from(m.fingerprint).toString("hex") : null,
        m.masked,
        m.createdAt.getTime(),
        m.expiresAt ? m.expiresAt.getTime() : null,
      ]),
    ),
    key,
  );
function hash256Ref(...parts: Uint8Array[]): Uint8Array {
  const state = sodium.crypto_generichash_init(null, 32);
  for (const p of parts) sodium.crypto_generichash_update(state, p);
  return sodium.crypto_generichash_final(state, 32);
}
const canonicalRef = (e: LogDraft & { chainId: string; chainSeq: number }) =>
  utf8.encode(
    JSON.stringify([e.chainId, e.chainSeq, e.at.toISOString(), e.caller, e.auth, e.peer, e.action, e.category, e.token, e.purpose, e.justification, e.outcome, e.requestId, e.instanceId, e.detail]),
  );

const text = fc.oneof(fc.string({ unit: "binary" }), fc.string({ unit: "grapheme" }), fc.constantFrom("", '"', "\\", "\u2028", "é🙂", "\u0000"));
const date = fc.date({ min: new Date("1970-01-01T00:00:00Z"), max: new Date("2200-01-01T00:00:00Z"), noInvalidDate: true });
const bytes32 = fc.uint8Array({ minLength: 32, maxLength: 32 });

describe("token metadata MAC: the direct form gives the reference bytes", () => {
  const masked = fc.oneof(
    fc.record({ display: text, brand: text, last: text, expired: fc.boolean() }),
    fc.record({ last: text, expired: fc.boolean(), display: text, brand: text }),
    fc.record({ display: text, brand: text, last: text, expired: fc.boolean(), extra: fc.jsonValue() }),
    fc.record({ display: text, brand: text, last: fc.jsonValue(), expired: fc.jsonValue() }),
    // jsonb hands keys back in its own order, and a row edited by hand may hold anything.
    fc.dictionary(text, fc.jsonValue()),
  );
  const meta: fc.Arbitrary<TokenMetadata> = fc.record({
    id: text,
    category: text,
    kekVersion: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    fingerprint: fc.option(fc.uint8Array({ maxLength: 40 }), { nil: null }),
    masked,
    createdAt: date,
    expiresAt: fc.option(date, { nil: null }),
  });

  it("for arbitrary metadata", () => {
    fc.assert(
      fc.property(bytes32, meta, (key, m) => {
        expect(Buffer.from(tokenMetadataMac(key, m)).toString("hex")).toBe(Buffer.from(tokenMacRef(key, m)).toString("hex"));
      }),
      { numRuns: 2000 },
    );
  });

  it("and a fingerprint given as a Buffer over a larger allocation hashes only its own bytes", () => {
    const big = Buffer.alloc(64, 1);
    const fp = big.subarray(8, 40);
    const m: TokenMetadata = { id: "tok_x", category: "card_number", kekVersion: 3, fingerprint: fp, masked: { display: "•••1234" }, createdAt: new Date(0), expiresAt: null };
    expect(Buffer.from(tokenMetadataMac(new Uint8Array(32), m))).toEqual(Buffer.from(tokenMacRef(new Uint8Array(32), m)));
  });
});

describe("hash chain: the one-shot hash gives the reference chain", () => {
  const draft: fc.Arbitrary<LogDraft> = fc.record({
    at: date,
    caller: text,
    auth: fc.constantFrom("mtls" as const, "self_asserted" as const, "internal" as const),
    peer: text,
    action: text,
    category: text,
    token: text,
    purpose: text,
    justification: fc.oneof(text, fc.string({ minLength: 6000, maxLength: 9000, unit: "grapheme" })),
    outcome: text,
    requestId: text,
    instanceId: text,
    detail: text,
  });

  it("entry by entry, from genesis", () => {
    fc.assert(
      fc.property(text, fc.array(draft, { minLength: 1, maxLength: 8 }), (chainId, drafts) => {
        let prevRef: Uint8Array = GENESIS_HASH;
        let prev: Uint8Array = GENESIS_HASH;
        drafts.forEach((d, i) => {
          const e = chain(d, chainId, i + 1, prev);
          const want = hash256Ref(prevRef, canonicalRef({ ...d, chainId, chainSeq: i + 1 }));
          expect(Buffer.from(e.hash).toString("hex")).toBe(Buffer.from(want).toString("hex"));
          expect(Buffer.from(entryHash(prev, e))).toEqual(Buffer.from(want));
          expect({ ...e, prevHash: undefined, hash: undefined }).toEqual({ ...d, chainId, chainSeq: i + 1, prevHash: undefined, hash: undefined });
          prev = e.hash;
          prevRef = want;
        });
      }),
      { numRuns: 500 },
    );
  });

  it("hash256 of several parts is the streaming hash of their concatenation", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { minLength: 1, maxLength: 5 }), (parts) => {
        expect(Buffer.from(hash256(...parts))).toEqual(Buffer.from(hash256Ref(...parts)));
      }),
    );
  });
});
