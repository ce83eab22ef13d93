import fc from "fast-check";
import { cardLifetime, cardLifetimes, expiryMonthEnd } from "../../src/domain/card-lifetime";
import {
  isOpaqueToken,
  isPreservingToken,
  isWellFormedToken,
  loggableToken,
  looksLikePan,
  luhnValid,
  panShape,
  preservingCandidate,
  rangeCapacity,
  rangeTokens,
} from "../../src/domain/token-formats";
import { newToken } from "../../src/crypto/tokens";
import { withLuhn } from "../helpers/luhn";

/** A Luhn-valid PAN of the given length (12–19), any digits. */
const pan = (len: number) => fc.array(fc.integer({ min: 0, max: 9 }), { minLength: len - 1, maxLength: len - 1 }).map((d) => withLuhn(d.join("")));
const anyPan = fc.integer({ min: 12, max: 19 }).chain(pan);

describe("format-preserving card tokens (pure)", () => {
  it("has the PAN's length, only digits, its first 6 and last 4, and fails Luhn — every length 12–19", () => {
    for (let len = 12; len <= 19; len++) {
      fc.assert(
        fc.property(pan(len), (p) => {
          const t = preservingCandidate(panShape(p));
          expect(t).toHaveLength(p.length);
          expect(t).toMatch(/^\d+$/);
          expect(t.slice(0, 6)).toBe(p.slice(0, 6));
          expect(t.slice(-4)).toBe(p.slice(-4));
          expect(luhnValid(t)).toBe(false);
          expect(isPreservingToken(t)).toBe(true);
          expect(isWellFormedToken(t)).toBe(true);
        }),
        { numRuns: 1000 },
      );
    }
  });

  it("never equals its PAN (the PAN passes Luhn, the token cannot)", () => {
    fc.assert(fc.property(anyPan, (p) => preservingCandidate(panShape(p)) !== p), { numRuns: 5000 });
  });

  it("draws middle digits at random: many PANs of one 16-digit range get nearly all-distinct tokens", () => {
    const shape = panShape("4111110000001111");
    const seen = new Set(Array.from({ length: 2000 }, () => preservingCandidate(shape)));
    // 900,000 candidates: 2,000 draws collide a couple of times at most by chance.
    expect(seen.size).toBeGreaterThan(1990);
  });

  it("covers exactly the nine Luhn-invalid last-middle digits, uniformly enough (12 digits: 2 middle digits)", () => {
    const shape = panShape("411111004242");
    const counts = new Map<string, number>();
    for (let i = 0; i < 18_000; i++) {
      const t = preservingCandidate(shape);
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    expect(counts.size).toBe(90);
    expect(rangeCapacity(12)).toBe(90);
    for (const n of counts.values()) expect(n).toBeGreaterThan(100); // mean 200
    expect(new Set(rangeTokens(shape))).toEqual(new Set(counts.keys()));
  });

  it("range capacity is nine times the number of real PANs in the range, for every length", () => {
    for (let len = 12; len <= 15; len++) {
      const shape = panShape(withLuhn("4".repeat(len - 1)));
      expect([...rangeTokens(shape)]).toHaveLength(rangeCapacity(len));
      expect(rangeCapacity(len)).toBe(9 * 10 ** (len - 11));
    }
  });

  it("tells the two forms apart, and never takes a real (Luhn-valid) PAN for a token", () => {
    fc.assert(
      fc.property(anyPan, (p) => {
        expect(isPreservingToken(p)).toBe(false);
        expect(isWellFormedToken(p)).toBe(false);
        expect(looksLikePan(p)).toBe(true);
        expect(loggableToken(p)).toBe("(malformed)");
      }),
      { numRuns: 2000 },
    );
    const opaque = newToken();
    expect(isOpaqueToken(opaque) && isWellFormedToken(opaque) && !isPreservingToken(opaque)).toBe(true);
    for (const bad of ["", "12345678901", "12345678901234567890", "4111-1111-1111-1112", "tok_short", "41111111111111x2"]) {
      expect(isWellFormedToken(bad)).toBe(false);
    }
  });
});

describe("card lifetime from expiry (pure)", () => {
  it("ends a card at 00:00 UTC on the 1st after its expiry month, plus the retention days", () => {
    expect(expiryMonthEnd("02/2028")!.toISOString()).toBe("2028-03-01T00:00:00.000Z");
    expect(expiryMonthEnd("12/2030")!.toISOString()).toBe("2031-01-01T00:00:00.000Z");
    expect(cardLifetime("12/2030", 90)!.toISOString()).toBe("2031-04-01T00:00:00.000Z");
    expect(cardLifetime("12/2030", 0)!.toISOString()).toBe("2031-01-01T00:00:00.000Z");
    expect(expiryMonthEnd("garbage")).toBeUndefined();
  });

  it("pairs the k-th card_number with the k-th card_expiry; other fields get nothing", () => {
    const out = cardLifetimes(
      [
        { category: "card_number", value: "4111111111111111" },
        { category: "card_expiry", value: "01/2030" },
        { category: "cardholder_name", value: "A" },
        { category: "card_number", value: "5555555555554444" },
        { category: "card_expiry", value: "06/2031" },
      ],
      90,
    );
    expect(out.map((d) => d?.toISOString())).toEqual([
      "2030-05-02T00:00:00.000Z",
      "2030-05-02T00:00:00.000Z",
      undefined,
      "2031-09-29T00:00:00.000Z",
      "2031-09-29T00:00:00.000Z",
    ]);
  });

  it("with unequal counts gives every card field the latest lifetime; without both kinds, none", () => {
    const out = cardLifetimes(
      [
        { category: "card_number", value: "4111111111111111" },
        { category: "card_number", value: "5555555555554444" },
        { category: "card_expiry", value: "06/2031" },
      ],
      10,
    );
    expect(new Set(out.map((d) => d?.toISOString()))).toEqual(new Set(["2031-07-11T00:00:00.000Z"]));
    expect(cardLifetimes([{ category: "card_number", value: "4111111111111111" }], 90)).toEqual([undefined]);
    expect(cardLifetimes([{ category: "card_expiry", value: "06/2031" }], 90)).toEqual([undefined]);
  });
});
