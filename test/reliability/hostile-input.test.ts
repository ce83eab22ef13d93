import { type Client, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import fc from "fast-check";
import { AccessLogService } from "../../src/gen/fieldvault/v1/access_log";
import { KeyAdminService } from "../../src/gen/fieldvault/v1/key_admin";
import { TokenServiceService } from "../../src/gen/fieldvault/v1/token_service";
import { CALLER_HEADER } from "../../src/transport/grpc/identity";
import { startTestVault, type TestVault } from "../helpers/vault";
import { codeName, tokens, valuesOf } from "./helpers/rpc";
import { SAMPLES } from "../helpers/samples";

/**
 * Hostile input over every RPC of every service: random bytes, structurally valid protobuf with
 * wrong wire types and invalid UTF-8, huge values, empty and 10,000-item lists, malformed and forged
 * tokens, unknown categories and purposes. The server never crashes, always answers with a proper
 * status, and a rejected call stores nothing.
 */
type MethodDef = { path: string; requestStream: boolean; responseStream: boolean };
const SERVICES = { TokenService: TokenServiceService, KeyAdmin: KeyAdminService, AccessLog: AccessLogService } as Record<string, Record<string, MethodDef>>;
const METHODS = Object.entries(SERVICES).flatMap(([svc, def]) => Object.values(def).map((m) => ({ svc, ...m })));
const CALLERS = ["payment-service", "booking-service", "sec-admin-1", "sec-admin-2", "ir-analyst", "support-desk", "nobody-in-policy", undefined];
const DEADLINE_MS = 10_000;

interface Answer {
  code: number;
  details: string;
  messages: number;
}

/** Sends raw request bytes to any method (unary or server-streaming) and waits for its final status. */
function send(client: Client, m: MethodDef, caller: string | undefined, bytes: Uint8Array): Promise<Answer> {
  const md = new Metadata();
  if (caller) md.set(CALLER_HEADER, caller);
  const opts = { deadline: Date.now() + DEADLINE_MS };
  const id = (b: Buffer) => b;
  const buf = Buffer.from(bytes);
  return new Promise((resolve) => {
    if (m.responseStream) {
      let messages = 0;
      const s = client.makeServerStreamRequest(m.path, id, id, buf, md, opts);
      s.on("data", () => messages++);
      s.on("error", () => undefined);
      s.on("status", (st) => resolve({ code: st.code, details: st.details, messages }));
    } else {
      client.makeUnaryRequest(m.path, id, id, buf, md, opts, (err: ServiceError | null) =>
        resolve(err ? { code: err.code, details: err.details, messages: 0 } : { code: status.OK, details: "", messages: 1 }),
      );
    }
  });
}

/**
 * A proper answer: a real status before the deadline, never UNKNOWN and never INTERNAL (bytes that
 * are not the method's message are the caller's fault: INVALID_ARGUMENT, see decode-guard.ts).
 */
function expectProper(a: Answer, what: string) {
  const name = codeName(a.code);
  expect({ what, name, ok: !["UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "CANCELLED", "INTERNAL"].includes(name) }).toEqual({
    what,
    name,
    ok: true,
  });
}

// ---- protobuf wire fuzz: arbitrary fields with arbitrary wire types, strings that are not UTF-8 ----
type WireField = { no: number; kind: "varint"; v: bigint } | { no: number; kind: "fixed64" | "fixed32"; v: number } | { no: number; kind: "bytes"; v: Uint8Array };
const invalidUtf8 = fc.constantFrom(
  Uint8Array.of(0xff),
  Uint8Array.of(0xc3, 0x28),
  Uint8Array.of(0xe2, 0x82),
  Uint8Array.of(0xed, 0xa0, 0x80), // a UTF-16 surrogate encoded in UTF-8
  Uint8Array.of(0xf8, 0x88, 0x80, 0x80, 0x80),
  Uint8Array.of(0x41, 0x00, 0xc0, 0xaf),
);
const wireField: fc.Arbitrary<WireField> = fc.oneof(
  fc.record({ no: fc.integer({ min: 1, max: 20 }), kind: fc.constant("varint" as const), v: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }),
  fc.record({ no: fc.integer({ min: 1, max: 20 }), kind: fc.constantFrom("fixed64" as const, "fixed32" as const), v: fc.integer({ min: 0, max: 2 ** 31 - 1 }) }),
  fc.record({
    no: fc.integer({ min: 1, max: 20 }),
    kind: fc.constant("bytes" as const),
    v: fc.oneof(fc.uint8Array({ maxLength: 64 }), invalidUtf8, fc.string({ unit: "grapheme", maxLength: 40 }).map((s) => new TextEncoder().encode(s))),
  }),
);
function encodeWire(fields: WireField[]): Uint8Array {
  const w = new BinaryWriter();
  for (const f of fields) {
    if (f.kind === "varint") w.tag(f.no, WireType.Varint).uint64(f.v);
    else if (f.kind === "fixed64") w.tag(f.no, WireType.Bit64).fixed64(f.v);
    else if (f.kind === "fixed32") w.tag(f.no, WireType.Bit32).fixed32(f.v);
    else w.tag(f.no, WireType.LengthDelimited).bytes(f.v as Uint8Array);
  }
  return w.finish();
}

describe("hostile input", () => {
  let t: TestVault;
  const rawClient = () => t.clients.tokens as unknown as Client;

  /** What a rejected call must not change: rows that hold data or keys, and CVV envelopes. */
  async function stored(): Promise<string> {
    const { rows } = await t.vault.db.query<{ t: number; s: number; k: number; d: number }>(
      `SELECT (SELECT count(*) FROM tokens)::int AS t, (SELECT count(*) FROM token_subjects)::int AS s,
              (SELECT count(*) FROM kek_versions)::int AS k, (SELECT count(*) FROM destroy_requests)::int AS d`,
      [],
    );
    return JSON.stringify(rows[0]);
  }

  /** The server is alive and serving real work. */
  async function stillServes() {
    const out = await tokens(t.clients, "payment-service").tokenize([{ category: "cardholder_name", value: "Still Alive" }]);
    expect(codeName(out.code)).toBe("OK");
  }

  /** Sends `bytes`; the answer is proper, and if the call was refused nothing was stored. */
  async function probe(m: (typeof METHODS)[number], caller: string | undefined, bytes: Uint8Array, what: string) {
    const before = await stored();
    const a = await send(rawClient(), m, caller, bytes);
    expectProper(a, `${what} → ${m.path}`);
    if (a.code !== status.OK) expect(await stored()).toBe(before);
    return a;
  }

  beforeAll(async () => {
    t = await startTestVault("postgres");
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
  }, 60_000);

  it("answers random bytes on every RPC properly and stores nothing", async () => {
    for (const m of METHODS) {
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 300 }), fc.constantFrom(...CALLERS), async (bytes, caller) => {
          await probe(m, caller, bytes, "random bytes");
        }),
        { numRuns: 25 },
      );
    }
    await stillServes();
  }, 90_000);

  it("answers well-formed protobuf with wrong wire types, unknown fields and invalid UTF-8 on every RPC", async () => {
    for (const m of METHODS) {
      await fc.assert(
        fc.asyncProperty(fc.array(wireField, { maxLength: 8 }), fc.constantFrom(...CALLERS), async (fields, caller) => {
          await probe(m, caller, encodeWire(fields), "wire fuzz");
        }),
        { numRuns: 25 },
      );
    }
    await stillServes();
  }, 90_000);

  it("rejects a value with invalid UTF-8 inside a real Tokenize request, storing nothing", async () => {
    const m = METHODS.find((x) => x.path.endsWith("/Tokenize"))!;
    await fc.assert(
      fc.asyncProperty(invalidUtf8, fc.boolean(), async (bad, inCategory) => {
        const field = new BinaryWriter();
        field.tag(1, WireType.LengthDelimited).bytes(inCategory ? bad : new TextEncoder().encode("cardholder_name"));
        field.tag(2, WireType.LengthDelimited).bytes(inCategory ? new TextEncoder().encode("Valid Name") : Uint8Array.from([0x41, ...bad, 0x42]));
        const req = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(field.finish()).finish();
        const a = await probe(m, "payment-service", req, "invalid UTF-8");
        // Refused at decoding (strict UTF-8), before the service ran: nothing stored; the message says
        // what is wrong and carries none of the bytes.
        expect({ code: codeName(a.code), details: a.details }).toEqual({ code: "INVALID_ARGUMENT", details: "request: not a valid Tokenize request (a string field is not valid UTF-8)" });
      }),
      { numRuns: 25 },
    );
    await stillServes();
  });

  it("answers bytes that are not the method's message INVALID_ARGUMENT on every RPC (not grpc-js's INTERNAL), and counts them", async () => {
    // A length-delimited field 1 that claims 5 bytes and has 1: no decoder can read it.
    const truncated = Uint8Array.of(0x0a, 0x05, 0x41);
    const refusedTokenizes = async () =>
      (await t.vault.metrics.registry.getSingleMetric("fieldvault_rpc_total")!.get()).values.find((v) => v.labels.method === "Tokenize" && v.labels.code === "INVALID_ARGUMENT")?.value ?? 0;
    const before = await refusedTokenizes();
    const refusedTokenizeLines = () =>
      t.logs.map((l) => JSON.parse(l) as { msg?: string; method?: string; status?: string }).filter((l) => l.msg === "call" && l.method === "Tokenize" && l.status === "INVALID_ARGUMENT").length;
    const linesBefore = refusedTokenizeLines();
    for (const m of METHODS) {
      const a = await probe(m, "payment-service", truncated, "truncated");
      const method = m.path.split("/").pop()!;
      expect({ path: m.path, code: codeName(a.code), details: a.details }).toEqual({ path: m.path, code: "INVALID_ARGUMENT", details: `request: not a valid ${method} request (not a valid protobuf message)` });
    }
    // Answered by our handler wrapper, so counted like any refused call (the alerts see them).
    expect(await refusedTokenizes()).toBe(before + 1);
    // ...and has its call line, like any refused call.
    expect(refusedTokenizeLines()).toBe(linesBefore + 1);
    await stillServes();
  });

  it("answers arbitrary Tokenize fields (unknown categories, huge, empty, control and astral characters) properly", async () => {
    const known = SAMPLES.map((s) => s.category);
    const value = fc.oneof(
      fc.string({ maxLength: 64 }),
      fc.string({ unit: "grapheme", maxLength: 64 }),
      fc.string({ unit: "binary", maxLength: 64 }),
      fc.constantFrom("", " ", "\u0000", "4111111111111111", "4111111111111112", "13/2099", "1899-12-31", "+", "@"),
      fc.integer({ min: 4000, max: 200_000 }).map((n) => "9".repeat(n)),
    );
    const field = fc.record({ category: fc.oneof(fc.constantFrom(...known), fc.string({ maxLength: 30 })), value });
    await fc.assert(
      fc.asyncProperty(
        fc.array(field, { maxLength: 6 }),
        fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 2 ** 32 - 1 })),
        fc.oneof(fc.constant(""), fc.string({ maxLength: 600 })),
        fc.constantFrom(...CALLERS),
        async (fields, ttlSeconds, subjectRef, caller) => {
          const bytes = TokenServiceService.tokenize.requestSerialize({ fields, ttlSeconds, subjectRef });
          const a = await probe(METHODS.find((x) => x.path.endsWith("/Tokenize"))!, caller, bytes, "tokenize fuzz");
          if (fields.length === 0 && caller && caller !== "nobody-in-policy") expect(codeName(a.code)).toBe("INVALID_ARGUMENT");
        },
      ),
      { numRuns: 100 },
    );
    await stillServes();
  }, 90_000);

  it("reveals nothing for malformed, forged and unknown tokens, whatever the purpose", async () => {
    const real = await tokens(t.clients, "payment-service").tokenize([{ category: "cardholder_name", value: "Real Holder" }]);
    const realToken = real.value!.tokens[0]!.token;
    const base62 = fc.constantFrom(..."0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");
    const forged = fc.string({ unit: base62, minLength: 22, maxLength: 22 }).map((s) => `tok_${s}`);
    const token = fc.oneof(
      forged,
      fc.string({ maxLength: 40 }),
      fc.constantFrom("", "tok_", "tok_!", `${realToken} `, realToken.toUpperCase(), realToken.slice(0, -1), `${realToken}x`, `TOK_${realToken.slice(4)}`),
      fc.integer({ min: 1000, max: 100_000 }).map((n) => `tok_${"A".repeat(n)}`),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(token, { maxLength: 20 }),
        fc.oneof(fc.constantFrom("payment_authorization", "refund", "marketing", ""), fc.string({ maxLength: 40 })),
        fc.string({ maxLength: 100 }),
        fc.constantFrom(...CALLERS),
        async (toks, purpose, justification, caller) => {
          const bytes = TokenServiceService.detokenize.requestSerialize({ tokens: toks, purpose, justification });
          const m = METHODS.find((x) => x.path.endsWith("/Detokenize"))!;
          const before = await stored();
          const a = await send(rawClient(), m, caller, bytes);
          expectProper(a, "detokenize fuzz");
          expect(await stored()).toBe(before);
          if (a.code === status.OK) {
            // Answered per item: never a value (none of these is a real token).
            const out = await tokens(t.clients, caller ?? "payment-service").detokenize(toks, purpose, justification);
            expect(valuesOf(out.value).filter((v) => v !== undefined)).toEqual([]);
            expect(out.value!.results).toHaveLength(toks.length);
          }
        },
      ),
      { numRuns: 100 },
    );
    await stillServes();
  }, 90_000);

  it("rejects empty and 10,000-item lists on every list RPC, storing nothing", async () => {
    const many = Array.from({ length: 10_000 }, (_, i) => `tok_${String(i).padStart(22, "0")}`);
    const cases: [string, Uint8Array][] = [
      ["Tokenize []", TokenServiceService.tokenize.requestSerialize({ fields: [], ttlSeconds: 0, subjectRef: "" })],
      ["Tokenize 10k", TokenServiceService.tokenize.requestSerialize({ fields: many.map((_, i) => ({ category: "cardholder_name", value: `Name ${i}` })), ttlSeconds: 0, subjectRef: "" })],
      ["Detokenize []", TokenServiceService.detokenize.requestSerialize({ tokens: [], purpose: "payment_authorization", justification: "" })],
      ["Detokenize 10k", TokenServiceService.detokenize.requestSerialize({ tokens: many, purpose: "payment_authorization", justification: "" })],
      ["InspectTokens []", TokenServiceService.inspectTokens.requestSerialize({ tokens: [] })],
      ["InspectTokens 10k", TokenServiceService.inspectTokens.requestSerialize({ tokens: many })],
      ["DeleteTokens []", TokenServiceService.deleteTokens.requestSerialize({ tokens: [] })],
      ["DeleteTokens 10k", TokenServiceService.deleteTokens.requestSerialize({ tokens: many })],
    ];
    for (const [what, bytes] of cases) {
      const m = METHODS.find((x) => x.path.endsWith(`/${what.split(" ")[0]}`))!;
      const a = await probe(m, "payment-service", bytes, what);
      expect({ what, code: codeName(a.code) }).toEqual({ what, code: "INVALID_ARGUMENT" });
    }
    await stillServes();
  }, 60_000);
});
