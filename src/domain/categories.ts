/**
 * Data categories: how each kind of sensitive value is normalised, validated,
 * tokenised, stored and masked.
 *
 * Rejection reasons are fixed, generic strings: they never contain the value,
 * any part of it, or its length, so they are safe to log and return to callers.
 */

export type TokenKind = "deterministic" | "random";
export type StorageKind = "postgres" | "redis";
export interface MaskedView {
  display: string;
  brand: string;
  last: string;
  expired: boolean;
}
export type Normalised = { ok: true; value: string } | { ok: false; reason: string };

export interface CategorySpec {
  readonly name: string;
  readonly tokenKind: TokenKind;
  readonly storage: StorageKind;
  /** true for card_cvv: deleted on first successful detokenize */
  readonly singleUse: boolean;
  /** true when the masked view depends on the current time (card_expiry's `expired`) and must be recomputed from the value at inspect time */
  readonly dynamicMask: boolean;
  /** Normalise + validate. `reason` is a short human message that NEVER contains the value or any part of it (e.g. "fails the Luhn check", "must be 12-19 digits"). */
  normalise(raw: string, now: Date): Normalised;
  /** Masked view of an already-normalised value. */
  mask(normalised: string, now: Date): MaskedView;
}

export const MAX_VALUE_BYTES = 4096;

const DOTS = "•••";

// ---------------------------------------------------------------------------
// Common rules and the defineCategory helper
// ---------------------------------------------------------------------------

const ok = (value: string): Normalised => ({ ok: true, value });
const fail = (reason: string): Normalised => ({ ok: false, reason });

/** Specs whose normalise() already enforces the common rules. */
const enforced = new WeakSet<CategorySpec>();

/**
 * Wrap a spec so normalise() enforces the rules shared by every category:
 * a string of well-formed UTF-16 (no lone surrogates, so it encodes to valid
 * UTF-8), no NUL, and at most MAX_VALUE_BYTES UTF-8 bytes after normalisation.
 * Idempotent.
 */
export function withCommonRules(spec: CategorySpec): CategorySpec {
  if (enforced.has(spec)) return spec;
  const wrapped: CategorySpec = Object.freeze({
    name: spec.name,
    tokenKind: spec.tokenKind,
    storage: spec.storage,
    singleUse: spec.singleUse,
    dynamicMask: spec.dynamicMask,
    normalise(raw: string, now: Date): Normalised {
      if (typeof raw !== "string") return fail("must be a string");
      if (/\p{Cs}/u.test(raw)) return fail("is not valid UTF-8");
      if (raw.includes("\0")) return fail("contains a NUL character");
      const result = spec.normalise(raw, now);
      if (result.ok && Buffer.byteLength(result.value, "utf8") > MAX_VALUE_BYTES) {
        return fail(`is longer than ${MAX_VALUE_BYTES} bytes`);
      }
      return result;
    },
    mask: (normalised: string, now: Date) => spec.mask(normalised, now),
  });
  enforced.add(wrapped);
  return wrapped;
}

export interface CategoryDefinition {
  name: string;
  tokenKind: TokenKind;
  storage?: StorageKind; // default "postgres"
  singleUse?: boolean; // default false
  dynamicMask?: boolean; // default false
  normalise(raw: string, now: Date): Normalised;
  /** Only `display` is required; brand/last default to "", expired to false. */
  mask(normalised: string, now: Date): Partial<MaskedView> & { display: string };
}

export function defineCategory(def: CategoryDefinition): CategorySpec {
  return withCommonRules({
    name: def.name,
    tokenKind: def.tokenKind,
    storage: def.storage ?? "postgres",
    singleUse: def.singleUse ?? false,
    dynamicMask: def.dynamicMask ?? false,
    normalise: def.normalise,
    mask: (v, now) => ({ brand: "", last: "", expired: false, ...def.mask(v, now) }),
  });
}

export class CategoryRegistry {
  private readonly specs = new Map<string, CategorySpec>();

  constructor(specs: readonly CategorySpec[]) {
    for (const spec of specs) {
      if (this.specs.has(spec.name)) throw new Error(`duplicate category: ${spec.name}`);
      this.specs.set(spec.name, withCommonRules(spec));
    }
  }

  get(name: string): CategorySpec | undefined {
    return this.specs.get(name);
  }

  names(): string[] {
    return [...this.specs.keys()];
  }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

const codePoints = (s: string): number => [...s].length;
const lastChars = (s: string, n: number): string => [...s].slice(-n).join("");
const hasControl = (s: string): boolean => /\p{Cc}/u.test(s);

function luhnValid(digits: string): boolean {
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

/** Brand by IIN/BIN prefix; first match wins, so specific ranges come first. */
function cardBrand(pan: string): string {
  const p = (n: number) => Number(pan.slice(0, n));
  if (pan.startsWith("9704")) return "napas";
  if (pan.startsWith("4")) return "visa";
  if ((p(2) >= 51 && p(2) <= 55) || (p(4) >= 2221 && p(4) <= 2720)) return "mastercard";
  if (p(2) === 34 || p(2) === 37) return "amex";
  if (p(4) >= 3528 && p(4) <= 3589) return "jcb";
  if ((p(3) >= 300 && p(3) <= 305) || p(4) === 3095 || [36, 38, 39].includes(p(2))) return "diners";
  if (p(4) === 6011 || (p(3) >= 644 && p(3) <= 649) || p(2) === 65) return "discover";
  if (p(2) === 62 || p(2) === 81) return "unionpay";
  if ([50, 56, 57, 58, 67].includes(p(2)) || p(3) === 639 || p(4) === 6304) return "maestro";
  return "unknown";
}

/** Today's date in UTC as "YYYY-MM-DD" (lexicographically comparable). */
const utcDay = (now: Date): string => now.toISOString().slice(0, 10);

/** A card is valid through the last day of its expiry month (UTC). */
function expiryPassed(month: number, year: number, now: Date): boolean {
  // Date.UTC with a 0-based month index of `month` is the 1st of the following month.
  return now.getTime() >= Date.UTC(year, month, 1);
}

// ---------------------------------------------------------------------------
// The ten built-in categories
// ---------------------------------------------------------------------------

const cardNumber = defineCategory({
  name: "card_number",
  tokenKind: "deterministic",
  normalise(raw) {
    const v = raw.replace(/[\s-]/g, "");
    if (!/^\d{12,19}$/.test(v)) return fail("must be 12-19 digits");
    if (!luhnValid(v)) return fail("fails the Luhn check");
    return ok(v);
  },
  mask(v) {
    const brand = cardBrand(v);
    const last = v.slice(-4);
    return { display: `${brand} •••• ${last}`, brand, last };
  },
});

const cardExpiry = defineCategory({
  name: "card_expiry",
  tokenKind: "random",
  dynamicMask: true,
  normalise(raw, now) {
    const m = /^(\d{1,2})[/-](\d{2}|\d{4})$/.exec(raw.trim());
    if (!m) return fail("must be MM/YY or MM/YYYY");
    const month = Number(m[1]);
    const year = m[2].length === 2 ? 2000 + Number(m[2]) : Number(m[2]);
    if (month < 1 || month > 12) return fail("month must be 01-12");
    if (expiryPassed(month, year, now)) return fail("has expired");
    return ok(`${String(month).padStart(2, "0")}/${String(year).padStart(4, "0")}`);
  },
  mask(v, now) {
    const m = /^(\d{2})\/(\d{4})$/.exec(v);
    // Fail safe: an unparseable stored value is reported as expired.
    const expired = !m || expiryPassed(Number(m[1]), Number(m[2]), now);
    return { display: expired ? "expired" : "valid", expired };
  },
});

const cardCvv = defineCategory({
  name: "card_cvv",
  tokenKind: "random",
  storage: "redis",
  singleUse: true,
  normalise(raw) {
    const v = raw.trim();
    return /^\d{3,4}$/.test(v) ? ok(v) : fail("must be 3-4 digits");
  },
  mask: () => ({ display: DOTS }),
});

const cardholderName = defineCategory({
  name: "cardholder_name",
  tokenKind: "random",
  normalise(raw) {
    const v = raw.normalize("NFC").trim();
    if (v === "") return fail("must not be empty");
    if (codePoints(v) > 200) return fail("is longer than 200 characters");
    if (hasControl(v)) return fail("contains control characters");
    return ok(v);
  },
  mask(v) {
    const initials = v
      .split(/\s+/)
      .map((word) => word.match(/[\p{L}\p{N}]/u)?.[0])
      .filter((c): c is string => c !== undefined)
      .map((c) => `${c.toUpperCase()}.`)
      .join(" ");
    return { display: initials || DOTS };
  },
});

const passportNumber = defineCategory({
  name: "passport_number",
  tokenKind: "deterministic",
  normalise(raw) {
    const v = raw.replace(/\s/g, "");
    // Check the charset before upper-casing: toUpperCase maps some non-ASCII letters to ASCII ("ß" → "SS").
    if (!/^[A-Za-z0-9]{5,9}$/.test(v)) return fail("must be 5-9 letters or digits");
    return ok(v.toUpperCase());
  },
  mask(v) {
    const last = v.slice(-3);
    return { display: DOTS + last, last };
  },
});

const identityDocument = defineCategory({
  name: "identity_document",
  tokenKind: "random",
  normalise(raw) {
    const v = raw.normalize("NFC").trim();
    if (v === "") return fail("must not be empty");
    if (codePoints(v) > 64) return fail("is longer than 64 characters");
    return ok(v);
  },
  mask(v) {
    const last = lastChars(v, 3);
    return { display: DOTS + last, last };
  },
});

const dateOfBirth = defineCategory({
  name: "date_of_birth",
  tokenKind: "random",
  normalise(raw, now) {
    const v = raw.trim();
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v);
    if (!m) return fail("must be a YYYY-MM-DD date");
    // Checked first: Date.UTC maps years 0-99 to 1900-1999, so the calendar check below needs y >= 1900.
    if (v < "1900-01-01") return fail("is before 1900-01-01");
    const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
    const date = new Date(Date.UTC(y, mo - 1, d));
    if (date.getUTCFullYear() !== y || date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d) {
      return fail("is not a valid calendar date");
    }
    if (v > utcDay(now)) return fail("is in the future");
    return ok(v);
  },
  mask: (v) => ({ display: v.slice(0, 4) }),
});

const phone = defineCategory({
  name: "phone",
  tokenKind: "random",
  normalise(raw) {
    let v = raw.replace(/[\s\-.()]/g, "");
    if (v.startsWith("00")) v = `+${v.slice(2)}`;
    return /^\+[1-9]\d{7,14}$/.test(v) ? ok(v) : fail("is not a valid E.164 phone number");
  },
  mask(v) {
    const last = v.slice(-2);
    return { display: `•••• ${last}`, last };
  },
});

const DOMAIN_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

const email = defineCategory({
  name: "email",
  tokenKind: "random",
  normalise(raw) {
    const v = raw.trim().toLowerCase();
    // Lengths are in octets, as in RFC 5321.
    if (Buffer.byteLength(v, "utf8") > 254) return fail("is longer than 254 characters");
    const parts = v.split("@");
    if (parts.length !== 2) return fail("is not a valid email address");
    const [local, domain] = parts;
    const labels = domain.split(".");
    const valid =
      local !== "" &&
      Buffer.byteLength(local, "utf8") <= 64 &&
      !/[\s\p{Cc}]/u.test(local) &&
      labels.length >= 2 &&
      labels.every((l) => DOMAIN_LABEL.test(l));
    return valid ? ok(v) : fail("is not a valid email address");
  },
  mask(v) {
    const domain = v.slice(v.lastIndexOf("@") + 1);
    return { display: `•••@${domain}` };
  },
});

const address = defineCategory({
  name: "address",
  tokenKind: "random",
  normalise(raw) {
    const v = raw
      .replace(/\r\n/g, "\n")
      .normalize("NFC")
      .trim()
      .replace(/[ \t]+/g, " ");
    if (v === "") return fail("must not be empty");
    if (codePoints(v) > 1000) return fail("is longer than 1000 characters");
    if (/[^\P{Cc}\n]/u.test(v)) return fail("contains control characters");
    return ok(v);
  },
  mask: () => ({ display: DOTS }),
});

export function builtinCategories(): CategorySpec[] {
  return [
    cardNumber,
    cardExpiry,
    cardCvv,
    cardholderName,
    passportNumber,
    identityDocument,
    dateOfBirth,
    phone,
    email,
    address,
  ];
}

export function defaultRegistry(): CategoryRegistry {
  return new CategoryRegistry(builtinCategories());
}
