import { Readable } from "node:stream";
import fc from "fast-check";
import { lines, memberSpans } from "../../src/cli/import/jsonl";
import { guessFormat, makePlan, UsageError } from "../../src/cli/import/plan";
import { status } from "@grpc/grpc-js";
import type { TokenizeResponse } from "../../src/gen/fieldvault/v1/token_service";
import type { RowItem } from "../../src/cli/import/items";
import { RetryLater, TOKENIZE_BUDGET_EXCEEDED } from "../../src/domain/errors";
import { toServiceError } from "../../src/transport/grpc/status";
import { budgetRefusal, DEFAULT_RETRY, fieldOfError, ImportStopped, type TokenizeCall, tokenizeRows } from "../../src/cli/import/tokenize";

describe("import: JSON Lines member spans", () => {
  const json = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: "small" },
      fc.string(),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.boolean(),
      fc.constant(null),
      fc.array(tie("value"), { maxLength: 3 }),
      fc.dictionary(fc.string(), tie("value"), { maxKeys: 3 }),
    ),
  })).value;
  const ws = fc.constantFrom("", " ", "\t", "  ", "\r");

  it("finds each top-level member's value text exactly, whatever the spacing and nesting", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(fc.string(), json), { selector: ([k]) => k, maxLength: 6 }), fc.array(ws, { minLength: 30, maxLength: 30 }), (members, spaces) => {
        let w = 0;
        const sp = () => spaces[w++ % spaces.length]!;
        const text = `${sp()}{${members.map(([k, v]) => `${sp()}${JSON.stringify(k)}${sp()}:${sp()}${JSON.stringify(v)}${sp()}`).join(",")}}${sp()}`;
        const spans = memberSpans(text);
        expect([...spans.keys()].sort()).toEqual(members.map(([k]) => k).sort());
        for (const [k, v] of members) {
          const [[start, end]] = spans.get(k)! as [[number, number]];
          expect(text.slice(start, end)).toBe(JSON.stringify(v));
        }
      }),
    );
  });

  it("reports a member that appears twice (JSON.parse would keep only the last)", () => {
    expect(memberSpans('{"a":"x","b":1,"a":"y"}').get("a")).toEqual([
      [5, 8],
      [19, 22],
    ]);
  });
});

describe("import: line splitting", () => {
  it("splits on \\n across chunk boundaries (multi-byte characters too), keeps \\r, reports an over-long line and goes on", async () => {
    const text = "ab\r\nçé€\n" + "x".repeat(50) + "\nlast";
    const bytes = Buffer.from(text);
    for (const size of [1, 2, 3, 7, 64]) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
      const got: (string | { tooLong: true })[] = [];
      for await (const l of lines(Readable.from(chunks), 20)) got.push(l);
      expect(got).toEqual(["ab\r", "çé€", { tooLong: true }, "last"]);
    }
  });
});

describe("import: errors the vault names by field", () => {
  it("takes the field index and the reason after the category", () => {
    expect(fieldOfError("fields[12] (card_number): fails the Luhn check")).toEqual({ index: 12, rest: "fails the Luhn check" });
    expect(fieldOfError("fields[0].category: unknown category")).toEqual({ index: 0, rest: "unknown category" });
    expect(fieldOfError("subject_ref: longer than 256 characters")).toBeUndefined();
  });
});

describe("import: command-line plan", () => {
  it("guesses the format from the name and refuses to guess for stdin", () => {
    expect(guessFormat(undefined, "/x/rows.CSV")).toBe("csv");
    expect(guessFormat(undefined, "rows.ndjson")).toBe("jsonl");
    expect(() => guessFormat(undefined, "-")).toThrow(/--format/);
    expect(() => guessFormat("xml", "a.csv")).toThrow(UsageError);
  });

  it("fits the default batch in 1000 fields and checks every option", () => {
    expect(makePlan({ map: ["a=card_number", "b=card_expiry", "c=cardholder_name"], input: "a.csv" })).toMatchObject({ batchRows: 333, concurrency: 4 });
    expect(makePlan({ map: ["a=card_number"], input: "a.csv", subjectColumn: "s" })).toMatchObject({ batchRows: 500, concurrency: 16 });
    expect(makePlan({ map: ["a=card_number"], tokenFormat: ["a=preserving"], input: "a.csv" }).columns[0]!.preserving).toBe(true);
    expect(() => makePlan({ map: [], input: "a.csv" })).toThrow(/at least one/);
    expect(() => makePlan({ map: ["a"], input: "a.csv" })).toThrow(/COLUMN=VALUE/);
    expect(() => makePlan({ map: ["a=x", "a=y"], input: "a.csv" })).toThrow(/twice/);
    expect(() => makePlan({ map: ["a=x"], tokenFormat: ["b=preserving"], input: "a.csv" })).toThrow(/not a --map column/);
    expect(() => makePlan({ map: ["a=x"], subjectColumn: "a", input: "a.csv" })).toThrow(/cannot also be tokenized/);
    expect(() => makePlan({ map: ["a=x"], batch: "0", input: "a.csv" })).toThrow(/--batch/);
  });
});

describe("import: the caller's tokenize budget paces an import instead of failing it", () => {
  // The vault's budget window is a wall-clock minute, so these cases (how many windows, which
  // message) use a scripted call; test/e2e/import-cli.test.ts runs one real wait against a vault.
  // The vault's own refusal, through the vault's own error mapping (transport/grpc/status.ts), as a
  // grpc-js client receives it: code, message and trailers.
  const refusal = (limit: number, retryAfterMs = 12_345) =>
    Object.assign(new Error("8 RESOURCE_EXHAUSTED"), toServiceError(
      new RetryLater(`tokenize budget for card_number exceeded (${limit} a minute)`, TOKENIZE_BUDGET_EXCEEDED, retryAfterMs, { category: "card_number", limit_per_minute: String(limit), requested: "1" }),
      "req-1",
    ));
  const row = (line: number, n = 1): RowItem => ({
    kind: "row",
    line,
    subject: "",
    fields: Array.from({ length: n }, () => ({ column: "pan", category: "card_number", value: "4111111111111111", preserving: false })),
    render: () => "",
  });
  const scripted = (refusals: number, limit = 10) => {
    let calls = 0;
    const call: TokenizeCall = async (req) => {
      if (calls++ < refusals) throw refusal(limit);
      return { tokens: req.fields.map((_, i) => ({ token: `tok_${i}`, category: "card_number", kekVersion: 1, expiresAt: undefined, alias: "" })) } as unknown as TokenizeResponse;
    };
    return { call, calls: () => calls };
  };

  it("reads the budget refusal from its error details, not from other RESOURCE_EXHAUSTED answers or the message", () => {
    expect(budgetRefusal(refusal(10_000, 4_321))).toEqual({ category: "card_number", limit: 10_000, retryAfterMs: 4_321 });
    expect(budgetRefusal({ code: status.RESOURCE_EXHAUSTED, details: "detokenize rate limit exceeded" })).toBeUndefined();
    // The message alone is not enough (it is for people): no details, no budget refusal.
    expect(budgetRefusal({ code: status.RESOURCE_EXHAUSTED, details: "tokenize budget for card_number exceeded (5 a minute)" })).toBeUndefined();
    expect(budgetRefusal({ ...refusal(5), code: status.UNAVAILABLE })).toBeUndefined();
    // Another reason in the same trailer is not this refusal.
    const other = toServiceError(new RetryLater("x", "SOMETHING_ELSE", 1, { category: "card_number" }), "r");
    expect(budgetRefusal(other)).toBeUndefined();
  });

  it("waits as long as the vault's RetryInfo says, and no less", async () => {
    const s = scripted(1);
    const asked: number[] = [];
    const retry = { ...DEFAULT_RETRY, budgetDelayMs: (ms: number) => (asked.push(ms), 1) };
    await tokenizeRows(s.call, [row(2)], { ref: "", column: "" }, retry);
    expect(asked).toEqual([12_345]);
  });

  it("waits for the next window as often as needed and says so each time; the back-off attempts are not used up", async () => {
    const s = scripted(3);
    const waits: number[] = [];
    // Two back-off attempts with 1 ms delays: were a budget refusal retried on the back-off schedule,
    // the first retry would be spent there and fewer budget waits would be reported.
    const retry = { ...DEFAULT_RETRY, attempts: 2, baseDelayMs: 1, maxDelayMs: 1, budgetDelayMs: () => 1, onBudget: (e: { delayMs: number }) => waits.push(e.delayMs) };
    const r = await tokenizeRows(s.call, [row(2), row(3)], { ref: "", column: "" }, retry);
    expect(s.calls()).toBe(4);
    expect(waits).toEqual([1, 1, 1]);
    expect([...r.tokens.values()]).toEqual([["tok_0"], ["tok_1"]]);
    expect(r.rejected).toEqual([]);
  });

  it("stops resumably after budgetWaits windows, naming the budget and the policy setting", async () => {
    const s = scripted(100);
    const retry = { ...DEFAULT_RETRY, budgetWaits: 2, budgetDelayMs: () => 1 };
    const err = await tokenizeRows(s.call, [row(2)], { ref: "", column: "" }, retry).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImportStopped);
    expect((err as ImportStopped).resumable).toBe(true);
    expect((err as ImportStopped).message).toContain("tokenize budget for card_number (10 a minute) refused a batch through 2 windows");
    expect((err as ImportStopped).message).toContain("tokenize_deterministic_per_minute");
    expect(s.calls()).toBe(3);
  });

  it("a batch with more of the category's fields than the whole budget stops at once (it could never pass)", async () => {
    const s = scripted(100, 4);
    let waited = 0;
    const retry = { ...DEFAULT_RETRY, budgetDelayMs: () => 1, onBudget: () => waited++ };
    const err = await tokenizeRows(s.call, [row(2, 3), row(3, 2)], { ref: "", column: "" }, retry).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImportStopped);
    expect((err as ImportStopped).resumable).toBe(false);
    expect((err as ImportStopped).message).toBe(
      "a batch holds 5 card_number fields but the caller's tokenize budget is 4 a minute: use a --batch of fewer rows, or raise tokenize_deterministic_per_minute for this caller in the vault's policy",
    );
    expect(s.calls()).toBe(1);
    expect(waited).toBe(0);
  });
});
