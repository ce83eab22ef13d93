import fc from "fast-check";
import {
  builtinCategories,
  CategoryRegistry,
  type CategorySpec,
  defaultRegistry,
  MAX_VALUE_BYTES,
  type Normalised,
} from "../../src/domain/categories";

const NOW = new Date("2026-03-15T12:00:00Z");
const registry = defaultRegistry();

function spec(name: string): CategorySpec {
  const s = registry.get(name);
  if (!s) throw new Error(`no category ${name}`);
  return s;
}

function accept(name: string, raw: string, now: Date = NOW): string {
  const r = spec(name).normalise(raw, now);
  if (!r.ok) throw new Error(`${name}: expected ${JSON.stringify(raw)} to be accepted, got "${r.reason}"`);
  return r.value;
}

function reject(name: string, raw: string, now: Date = NOW): string {
  const r = spec(name).normalise(raw, now);
  if (r.ok) throw new Error(`${name}: expected ${JSON.stringify(raw)} to be rejected, got ${JSON.stringify(r.value)}`);
  return r.reason;
}

const maskOf = (name: string, raw: string, now: Date = NOW) => spec(name).mask(accept(name, raw, now), now);

/** Append the Luhn check digit to a digit string. */
function withLuhnDigit(body: string): string {
  for (let d = 0; d <= 9; d++) {
    const candidate = body + d;
    let sum = 0;
    for (let i = 0; i < candidate.length; i++) {
      let n = Number(candidate[candidate.length - 1 - i]);
      if (i % 2 === 1) n = n * 2 > 9 ? n * 2 - 9 : n * 2;
      sum += n;
    }
    if (sum % 10 === 0) return candidate;
  }
  throw new Error("unreachable");
}

describe("registry", () => {
  it("lists the ten built-in categories with their token/storage settings", () => {
    expect(registry.names()).toEqual([
      "card_number",
      "card_expiry",
      "card_cvv",
      "cardholder_name",
      "passport_number",
      "identity_document",
      "date_of_birth",
      "phone",
      "email",
      "address",
    ]);
    const settings = Object.fromEntries(
      builtinCategories().map((s) => [s.name, [s.tokenKind, s.storage, s.singleUse, s.dynamicMask]]),
    );
    expect(settings).toEqual({
      card_number: ["deterministic", "postgres", false, false],
      card_expiry: ["random", "postgres", false, true],
      card_cvv: ["random", "redis", true, false],
      cardholder_name: ["random", "postgres", false, false],
      passport_number: ["deterministic", "postgres", false, false],
      identity_document: ["random", "postgres", false, false],
      date_of_birth: ["random", "postgres", false, false],
      phone: ["random", "postgres", false, false],
      email: ["random", "postgres", false, false],
      address: ["random", "postgres", false, false],
    });
  });

  it("returns undefined for unknown categories", () => {
    expect(registry.get("ssn")).toBeUndefined();
  });

  it("rejects duplicate names", () => {
    const [a] = builtinCategories();
    expect(() => new CategoryRegistry([a, a])).toThrow(/duplicate/);
  });

  describe("common rules, also applied to specs not built with defineCategory", () => {
    const freeText: CategorySpec = {
      name: "free_text",
      tokenKind: "random",
      storage: "postgres",
      singleUse: false,
      dynamicMask: false,
      normalise: (raw): Normalised => ({ ok: true, value: raw }),
      mask: () => ({ display: "•••", brand: "", last: "", expired: false }),
    };
    const custom = new CategoryRegistry([freeText]).get("free_text")!;

    it("rejects lone surrogates as invalid UTF-8", () => {
      for (const bad of ["abc\uD800", "\uDC00abc", "a\uDFFFb\uD83D"]) {
        expect(custom.normalise(bad, NOW)).toEqual({ ok: false, reason: "is not valid UTF-8" });
      }
      // A proper surrogate pair is fine.
      expect(custom.normalise("smile \uD83D\uDE00", NOW)).toEqual({ ok: true, value: "smile \uD83D\uDE00" });
    });

    it("rejects NUL", () => {
      const r = custom.normalise("ab\0cd", NOW);
      expect(r.ok).toBe(false);
    });

    it("enforces the 4096-byte limit on the normalised value, in UTF-8 bytes", () => {
      expect(MAX_VALUE_BYTES).toBe(4096);
      expect(custom.normalise("a".repeat(4096), NOW).ok).toBe(true);
      expect(custom.normalise("a".repeat(4097), NOW)).toEqual({ ok: false, reason: "is longer than 4096 bytes" });
      // 2049 two-byte characters = 4098 bytes, though only 2049 UTF-16 units.
      expect(custom.normalise("é".repeat(2049), NOW)).toEqual({ ok: false, reason: "is longer than 4096 bytes" });
      expect(custom.normalise("€".repeat(1366), NOW).ok).toBe(false); // 4098 bytes
      expect(custom.normalise("€".repeat(1365), NOW).ok).toBe(true); // 4095 bytes
    });

    it("measures the limit after normalisation", () => {
      const stripping: CategorySpec = { ...freeText, name: "strip", normalise: (raw) => ({ ok: true, value: raw.trim() }) };
      const s = new CategoryRegistry([stripping]).get("strip")!;
      expect(s.normalise(`${" ".repeat(100)}${"a".repeat(4096)}`, NOW).ok).toBe(true);
    });
  });

  it("every built-in rejects lone surrogates, NUL and 4097-byte values", () => {
    for (const name of registry.names()) {
      expect(reject(name, "4111111111111111\uD800")).toBe("is not valid UTF-8");
      reject(name, "41111111\u000011111111");
      reject(name, "a".repeat(4097));
      reject(name, "4".repeat(4097));
    }
  });
});

describe("card_number", () => {
  it("strips spaces and dashes", () => {
    expect(accept("card_number", "4111 1111 1111 1111")).toBe("4111111111111111");
    expect(accept("card_number", "4111-1111-1111-1111")).toBe("4111111111111111");
    expect(accept("card_number", " 4111111111111111 ")).toBe("4111111111111111");
  });

  it("rejects wrong lengths, non-digits and Luhn failures", () => {
    expect(reject("card_number", "4111111111111112")).toBe("fails the Luhn check");
    expect(reject("card_number", "41111111111")).toBe("must be 12-19 digits"); // 11
    expect(reject("card_number", withLuhnDigit("4".repeat(19)))).toBe("must be 12-19 digits"); // 20
    reject("card_number", "4111a11111111111");
    reject("card_number", "4111.1111.1111.1111");
    reject("card_number", "");
    reject("card_number", "٤١١١١١١١١١١١١١١١"); // Arabic-Indic digits are not accepted
  });

  it("accepts 12 and 19 digit numbers", () => {
    accept("card_number", withLuhnDigit("50000000000"));
    accept("card_number", withLuhnDigit("621234567890123456"));
  });

  const napas = withLuhnDigit("970400000000123");
  it.each([
    ["4111111111111111", "visa"],
    ["4242424242424242", "visa"],
    ["5555555555554444", "mastercard"],
    ["2221000000000009", "mastercard"],
    ["378282246310005", "amex"],
    ["6011111111111117", "discover"],
    ["3530111333300000", "jcb"],
    ["6200000000000005", "unionpay"],
    ["36227206271667", "diners"],
    ["6759649826438453", "maestro"],
    [napas, "napas"],
    [withLuhnDigit("123456789012345"), "unknown"],
  ])("brand of %s is %s", (pan, brand) => {
    const m = maskOf("card_number", pan);
    expect(m).toEqual({ display: `${brand} •••• ${pan.slice(-4)}`, brand, last: pan.slice(-4), expired: false });
  });

  it("masks like 'visa •••• 4242'", () => {
    expect(maskOf("card_number", "4242 4242 4242 4242").display).toBe("visa •••• 4242");
  });
});

describe("card_expiry", () => {
  it.each([
    ["12/29", "12/2029"],
    ["12/2029", "12/2029"],
    ["12-29", "12/2029"],
    ["12-2029", "12/2029"],
    ["1/27", "01/2027"],
    ["01/27", "01/2027"],
    [" 7/2030 ", "07/2030"],
  ])("%s → %s", (raw, normalised) => {
    expect(accept("card_expiry", raw)).toBe(normalised);
  });

  it("rejects bad months and unparseable input", () => {
    expect(reject("card_expiry", "13/29")).toBe("month must be 01-12");
    reject("card_expiry", "00/29");
    reject("card_expiry", "12/029");
    reject("card_expiry", "122029");
    reject("card_expiry", "12.29");
    reject("card_expiry", "ab/cd");
    reject("card_expiry", "");
    reject("card_expiry", "12/29/01");
  });

  it("rejects past months and accepts the current month through its last day (UTC)", () => {
    expect(reject("card_expiry", "02/26")).toBe("has expired");
    expect(reject("card_expiry", "12/2025")).toBe("has expired");
    expect(accept("card_expiry", "03/26")).toBe("03/2026");
    expect(accept("card_expiry", "03/26", new Date("2026-03-31T23:59:59.999Z"))).toBe("03/2026");
    reject("card_expiry", "03/26", new Date("2026-04-01T00:00:00Z"));
    // Local time zones do not matter: 2026-03-31T23:30 in UTC-5 is already April in UTC.
    reject("card_expiry", "03/26", new Date("2026-03-31T23:30:00-05:00"));
  });

  it("masks as valid/expired, recomputed from the value and the inspect time", () => {
    const s = spec("card_expiry");
    const v = accept("card_expiry", "03/26");
    expect(s.mask(v, NOW)).toEqual({ display: "valid", brand: "", last: "", expired: false });
    expect(s.mask(v, new Date("2026-04-01T00:00:00Z"))).toEqual({
      display: "expired",
      brand: "",
      last: "",
      expired: true,
    });
    expect(s.mask(v, NOW).display).not.toContain("2026");
  });
});

describe("card_cvv", () => {
  it("accepts 3-4 digits, trimming whitespace", () => {
    expect(accept("card_cvv", "123")).toBe("123");
    expect(accept("card_cvv", " 1234\n")).toBe("1234");
  });

  it("rejects anything else", () => {
    for (const bad of ["12", "12345", "12a", "1 23", "", "   "]) {
      expect(reject("card_cvv", bad)).toBe("must be 3-4 digits");
    }
  });

  it("masks to nothing", () => {
    expect(maskOf("card_cvv", "123")).toEqual({ display: "•••", brand: "", last: "", expired: false });
  });
});

describe("cardholder_name", () => {
  it("trims and applies NFC", () => {
    expect(accept("cardholder_name", "  John Doe ")).toBe("John Doe");
    expect(accept("cardholder_name", "Jose\u0301 Garci\u0301a")).toBe("José García");
    expect(accept("cardholder_name", "Nguyễn Văn An")).toBe("Nguyễn Văn An");
  });

  it("rejects empty, too long and control characters", () => {
    expect(reject("cardholder_name", "   ")).toBe("must not be empty");
    accept("cardholder_name", "a".repeat(200));
    accept("cardholder_name", "😀".repeat(200)); // 200 code points, 400 UTF-16 units
    expect(reject("cardholder_name", "a".repeat(201))).toBe("is longer than 200 characters");
    expect(reject("cardholder_name", "John\nDoe")).toBe("contains control characters");
    reject("cardholder_name", "John\u007fDoe");
    reject("cardholder_name", "John\u0085Doe");
  });

  it("masks as initials", () => {
    expect(maskOf("cardholder_name", "John Doe")).toEqual({ display: "J. D.", brand: "", last: "", expired: false });
    expect(maskOf("cardholder_name", "jean-luc   picard").display).toBe("J. P.");
    expect(maskOf("cardholder_name", "Ærøskøbing").display).toBe("Æ.");
    expect(maskOf("cardholder_name", "---").display).toBe("•••");
  });
});

describe("passport_number", () => {
  it("upper-cases and strips spaces", () => {
    expect(accept("passport_number", "ab 123 4567")).toBe("AB1234567");
    expect(accept("passport_number", "C01X00T47")).toBe("C01X00T47");
    expect(accept("passport_number", "12345")).toBe("12345");
  });

  it("rejects anything but 5-9 of [A-Z0-9]", () => {
    for (const bad of ["1234", "1234567890", "AB-12345", "AB12345É", "abcßd", "ıiııı", ""]) {
      expect(reject("passport_number", bad)).toBe("must be 5-9 letters or digits");
    }
  });

  it("masks as ••• + last 3 regardless of length", () => {
    expect(maskOf("passport_number", "AB1234567")).toEqual({ display: "•••567", brand: "", last: "567", expired: false });
    expect(maskOf("passport_number", "X1234").display).toBe("•••234");
  });
});

describe("identity_document", () => {
  it("trims and applies NFC", () => {
    expect(accept("identity_document", "  079 123 456 789 ")).toBe("079 123 456 789");
    expect(accept("identity_document", "Cre\u0300me-42")).toBe("Crème-42");
  });

  it("rejects empty and > 64 characters", () => {
    expect(reject("identity_document", " \t ")).toBe("must not be empty");
    accept("identity_document", "x".repeat(64));
    expect(reject("identity_document", "x".repeat(65))).toBe("is longer than 64 characters");
  });

  it("masks as ••• + last 3", () => {
    expect(maskOf("identity_document", "079123456789")).toEqual({
      display: "•••789",
      brand: "",
      last: "789",
      expired: false,
    });
    expect(maskOf("identity_document", "ab😀").last).toBe("ab😀");
  });
});

describe("date_of_birth", () => {
  it("accepts real ISO dates, trimmed", () => {
    expect(accept("date_of_birth", " 1987-06-05 ")).toBe("1987-06-05");
    expect(accept("date_of_birth", "2024-02-29")).toBe("2024-02-29");
    expect(accept("date_of_birth", "1900-01-01")).toBe("1900-01-01");
    expect(accept("date_of_birth", "2026-03-15")).toBe("2026-03-15"); // today
  });

  it("rejects impossible, future and pre-1900 dates and other formats", () => {
    expect(reject("date_of_birth", "2023-02-29")).toBe("is not a valid calendar date");
    expect(reject("date_of_birth", "1900-02-29")).toBe("is not a valid calendar date");
    reject("date_of_birth", "1987-13-01");
    reject("date_of_birth", "1987-04-31");
    reject("date_of_birth", "1987-00-10");
    expect(reject("date_of_birth", "2026-03-16")).toBe("is in the future");
    expect(reject("date_of_birth", "1899-12-31")).toBe("is before 1900-01-01");
    reject("date_of_birth", "0050-01-01");
    for (const bad of ["05/06/1987", "1987-6-5", "19870605", "1987-06-05T00:00:00Z", ""]) {
      expect(reject("date_of_birth", bad)).toBe("must be a YYYY-MM-DD date");
    }
  });

  it("masks as the year only", () => {
    expect(maskOf("date_of_birth", "1987-06-05")).toEqual({ display: "1987", brand: "", last: "", expired: false });
  });
});

describe("phone", () => {
  it.each([
    ["+1 (415) 555-2671", "+14155552671"],
    ["+44 20.7946.0958", "+442079460958"],
    ["0084 912 345 678", "+84912345678"],
    ["+12345678", "+12345678"],
    ["+123456789012345", "+123456789012345"],
  ])("%s → %s", (raw, normalised) => {
    expect(accept("phone", raw)).toBe(normalised);
  });

  it("rejects invalid numbers", () => {
    for (const bad of ["4155552671", "+0415555267", "+1234567", "+1234567890123456", "+1 415 CALL ME", "+", "", "0412345678", "00 0412345678"]) {
      expect(reject("phone", bad)).toBe("is not a valid E.164 phone number");
    }
  });

  it("masks as the last 2 digits", () => {
    expect(maskOf("phone", "+14155552642")).toEqual({ display: "•••• 42", brand: "", last: "42", expired: false });
  });
});

describe("email", () => {
  it("trims and lower-cases", () => {
    expect(accept("email", "  Alice.Smith+tag@Example.COM ")).toBe("alice.smith+tag@example.com");
    expect(accept("email", "a@b.co")).toBe("a@b.co");
    expect(accept("email", "x@mail.sub-domain.example.org")).toBe("x@mail.sub-domain.example.org");
  });

  it("rejects invalid formats", () => {
    const bad = [
      "alice",
      "alice@",
      "@example.com",
      "alice@@example.com",
      "a@b@example.com",
      "alice@localhost",
      "al ice@example.com",
      "alice@exa mple.com",
      "alice@-example.com",
      "alice@example-.com",
      "alice@example..com",
      "alice@example.com.",
      "alice@exa_mple.com",
      `${"a".repeat(65)}@example.com`,
    ];
    for (const b of bad) expect(reject("email", b)).toBe("is not a valid email address");
    accept("email", `${"a".repeat(64)}@example.com`);
  });

  it("rejects addresses longer than 254 characters", () => {
    const domain = `${"d".repeat(63)}.${"e".repeat(63)}.${"f".repeat(63)}.com`; // 195 chars
    accept("email", `${"a".repeat(58)}@${domain}`); // 254
    expect(reject("email", `${"a".repeat(59)}@${domain}`)).toBe("is longer than 254 characters");
  });

  it("masks as the domain", () => {
    expect(maskOf("email", "Alice@Example.com")).toEqual({
      display: "•••@example.com",
      brand: "",
      last: "",
      expired: false,
    });
  });
});

describe("address", () => {
  it("trims, applies NFC and collapses runs of spaces/tabs but keeps newlines", () => {
    expect(accept("address", "  12   Main\t\tSt\nSpringfield,  IL ")).toBe("12 Main St\nSpringfield, IL");
    expect(accept("address", "1 Rue de l'E\u0301glise\r\nParis")).toBe("1 Rue de l'Église\nParis");
  });

  it("rejects empty, > 1000 characters and control characters other than \\n", () => {
    expect(reject("address", " \n\t ")).toBe("must not be empty");
    accept("address", "a".repeat(1000));
    expect(reject("address", "a".repeat(1001))).toBe("is longer than 1000 characters");
    expect(reject("address", "1 Main St\rSpringfield")).toBe("contains control characters");
    reject("address", "1 Main St\u0007");
    reject("address", "1 Main St\vSpringfield");
  });

  it("masks to nothing", () => {
    expect(maskOf("address", "1 Main St")).toEqual({ display: "•••", brand: "", last: "", expired: false });
  });
});

describe("masks", () => {
  it("brand is empty except for card_number and expired is false except for card_expiry", () => {
    const samples: Record<string, string> = {
      card_cvv: "123",
      cardholder_name: "John Doe",
      passport_number: "AB1234567",
      identity_document: "ID-12345",
      date_of_birth: "1987-06-05",
      phone: "+14155552671",
      email: "a@example.com",
      address: "1 Main St",
    };
    for (const [name, raw] of Object.entries(samples)) {
      const m = maskOf(name, raw, new Date("2100-01-01T00:00:00Z"));
      expect(m.brand).toBe("");
      expect(m.expired).toBe(false);
    }
  });
});

describe("rejection reasons never leak the value", () => {
  // Every number appearing in a reason must be one of the published bounds.
  const ALLOWED_NUMBERS = new Set(["8", "164", "3", "4", "5", "9", "12", "19", "01", "64", "200", "254", "1000", "1900", "4096"]);

  function assertSafe(raw: string, reason: string, minLength = 3): void {
    expect(reason.length).toBeGreaterThan(0);
    // Very short inputs ("a", "12") can appear in any English sentence or bound; skip those.
    if (raw.trim().length >= minLength) expect(reason).not.toContain(raw.trim());
    for (const num of reason.match(/\d+/g) ?? []) expect(ALLOWED_NUMBERS).toContain(num);
    const digits = raw.replace(/\D/g, "");
    if (digits.length >= 5) {
      // No run of 4+ digits from the input (e.g. last 4 / first 6 of a card).
      const leaked: string[] = [];
      for (let i = 0; i + 4 <= digits.length; i++) {
        const window = digits.slice(i, i + 4);
        if (!ALLOWED_NUMBERS.has(window) && reason.includes(window)) leaked.push(window);
      }
      expect(leaked).toEqual([]);
    }
  }

  const BAD: Record<string, string[]> = {
    card_number: ["4111111111111112", "5555555555554440", "41111111111", "41111111111111111111", "4111-xxxx-1111-1111", "secret-card-data"],
    card_expiry: ["13/29", "00/2030", "02/2026", "12/1999", "7-777", "9999/99", "expiry-secret"],
    card_cvv: ["98", "98765", "9a8", "cvv-secret"],
    cardholder_name: ["John\u0007Doe", "x".repeat(201), "Secret\tName"],
    passport_number: ["8765", "8765432109", "AB-765432", "pässport1"],
    identity_document: ["z".repeat(65), "9".repeat(70)],
    date_of_birth: ["2023-02-29", "1899-12-31", "2087-06-05", "1987/06/05", "1987-13-45"],
    phone: ["87654321", "+0876543219", "+8765", "+87654321098765432", "call-me-maybe"],
    email: ["secret.person", "secret@localhost", "sec ret@example.com", `${"q".repeat(250)}@example.com`],
    address: ["Secret\u0001Street 77", "y".repeat(1001)],
  };

  it.each(Object.entries(BAD))("%s", (name, inputs) => {
    for (const raw of inputs) assertSafe(raw, reject(name, raw));
  });

  it("common-rule reasons are safe too", () => {
    for (const name of registry.names()) {
      for (const raw of ["9876543210\uD800", "98765\u000043210", "8".repeat(5000)]) {
        assertSafe(raw, reject(name, raw));
      }
    }
  });

  it("property: random input, never thrown, reasons safe, normalisation idempotent", () => {
    const input = fc.oneof(
      // Any UTF-16 code unit, so lone surrogates are generated too.
      fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)), maxLength: 40 }),
      fc.string({ unit: "binary", maxLength: 40 }),
      fc.string({ maxLength: 40 }),
      fc.stringMatching(/^[0-9 +/-]{0,25}$/),
      fc.stringMatching(/^\d{5,25}$/),
    );
    fc.assert(
      fc.property(input, fc.constantFrom(...registry.names()), (raw, name) => {
        const s = spec(name);
        const r = s.normalise(raw, NOW);
        if (r.ok) {
          expect(s.normalise(r.value, NOW)).toEqual(r);
          const m = s.mask(r.value, NOW);
          expect(typeof m.display).toBe("string");
        } else {
          assertSafe(raw, r.reason, 6);
        }
      }),
      { numRuns: 1000 },
    );
  });
});
