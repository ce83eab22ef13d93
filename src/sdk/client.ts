import { readFileSync } from "node:fs";
import { type CallOptions, type ChannelOptions, ChannelCredentials, type ClientReadableStream, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { AccessLogClient, type LogEntry, type QueryRequest, type VerifyResponse } from "../gen/fieldvault/v1/access_log";
import { type CategoryKeys, KeyAdminClient } from "../gen/fieldvault/v1/key_admin";
import { type Masked, type TokenFormat, TokenServiceClient } from "../gen/fieldvault/v1/token_service";
import { type ErrorDetails, errorDetailsOf } from "./error-details";
import { explainConnectionError, SDK_WORDS } from "./connection-errors";
import { isWellFormedToken } from "../domain/token-formats";
import { DEFAULT_RETRY, DETERMINISTIC_CATEGORIES, type RetryPolicy, withRetry } from "./retry";

/** PEM contents, or a path to a PEM file. */
export type Pem = Buffer | string;

export interface FieldVaultOptions {
  /** host:port of the vault, e.g. "vault.internal:50051". */
  address: string;
  /** Mutual TLS: the CA that signed the vault's certificate, and this caller's certificate and key. */
  tls?: { ca: Pem; cert: Pem; key: Pem; serverName?: string };
  /** Development only, over plaintext: the identity to assert (x-fieldvault-caller). Ignored with tls. */
  caller?: string;
  /** Deadline for each call, including its retries (default 5000 ms). */
  deadlineMs?: number;
  retry?: Partial<RetryPolicy>;
  channelOptions?: ChannelOptions;
}

export interface CallOverrides {
  deadlineMs?: number;
  /** Sent as x-request-id; it appears in the vault's log line and access-log entry. */
  requestId?: string;
}

export interface FieldInput {
  category: string;
  value: string;
  /** TOKEN_FORMAT_PRESERVING (card_number only): a digits token of the PAN's length (DESIGN §13). */
  tokenFormat?: TokenFormat;
}

export interface Tokenized {
  token: string;
  category: string;
  masked: Masked;
  expiresAt?: Date;
}

export type Revealed =
  | { token: string; category: string; ok: true; value: string }
  | {
      token: string;
      category: string;
      ok: false;
      code: string;
      message: string;
      /** For RESOURCE_EXHAUSTED from the caller's rate budget: ms until the same item can pass. */
      retryAfterMs?: number;
    };

export type Inspected =
  | { token: string; ok: true; category: string; masked: Masked; createdAt?: Date; expiresAt?: Date; keyVersion: number }
  | { token: string; ok: false; code: string; message: string };

/**
 * A failed call: the gRPC status, its name, and the vault's message (which never carries a value).
 * For a connection that could not be made (vault down, plaintext against TLS, a certificate from
 * another CA, no identity) `message` is one line saying what is wrong and what to change, and
 * `details` keeps grpc-js's own text.
 */
export class FieldVaultError extends Error {
  readonly codeName: string;
  constructor(
    readonly code: number,
    readonly details: string,
    readonly method: string,
    /** What is wrong and what to change, for a failure to connect or to be recognised. */
    readonly explanation?: string,
    /**
     * Why, and when to try again, where the vault says so (google.rpc.ErrorInfo / RetryInfo): e.g. a
     * tokenize over its deterministic budget has reason TOKENIZE_BUDGET_EXCEEDED and retryAfterMs.
     */
    readonly errorDetails?: ErrorDetails,
  ) {
    super(`${method}: ${status[code] ?? code}: ${explanation ?? details}`);
    this.name = "FieldVaultError";
    this.codeName = status[code] ?? String(code);
  }

  /** How long until the same call can pass, when the vault said (a refilling budget). */
  get retryAfterMs(): number | undefined {
    return this.errorDetails?.retryAfterMs;
  }
}

/**
 * A reveal() that did not reveal every item. `results` holds every item's outcome in request order,
 * values included for items that were revealed (a CVV among them has been used up, and this is the
 * only copy); the message names the failed items by index and never carries a value.
 */
export class RevealError extends FieldVaultError {
  constructor(readonly results: Revealed[]) {
    const failed = results.flatMap((r, i) => (r.ok || r.code === "ABORTED" ? [] : [`item ${i}: ${r.code}: ${r.message}`]));
    const first = results.find((r) => !r.ok && r.code !== "ABORTED") as Extract<Revealed, { ok: false }> | undefined;
    super((status[first?.code as keyof typeof status] as number | undefined) ?? status.UNKNOWN, failed.join("; "), "Detokenize");
    this.name = "RevealError";
  }
}


const pem = (p: Pem) => (typeof p === "string" ? readFileSync(p) : p);

type UnaryMethod<Req, Res> = (req: Req, md: Metadata, opts: Partial<CallOptions>, cb: (err: ServiceError | null, res: Res) => void) => unknown;

/**
 * A typed, promise-based client for fieldvault. Every call has a deadline; only idempotent calls
 * (InspectTokens, ListKeys, Query, Verify, and Tokenize of deterministic categories only) are
 * retried, and only on UNAVAILABLE.
 */
export class FieldVaultClient {
  private readonly tokens: TokenServiceClient;
  private readonly keyAdmin: KeyAdminClient;
  private readonly accessLog: AccessLogClient;
  private readonly retry: RetryPolicy;
  private readonly deadlineMs: number;

  constructor(private readonly opts: FieldVaultOptions) {
    const creds = opts.tls
      ? ChannelCredentials.createSsl(pem(opts.tls.ca), pem(opts.tls.key), pem(opts.tls.cert))
      : ChannelCredentials.createInsecure();
    const channel: ChannelOptions = { ...opts.channelOptions };
    if (opts.tls?.serverName) channel["grpc.ssl_target_name_override"] = opts.tls.serverName;
    this.tokens = new TokenServiceClient(opts.address, creds, channel);
    this.keyAdmin = new KeyAdminClient(opts.address, creds, channel);
    this.accessLog = new AccessLogClient(opts.address, creds, channel);
    this.retry = { ...DEFAULT_RETRY, ...opts.retry };
    this.deadlineMs = opts.deadlineMs ?? 5000;
  }

  /** Tokenizes fields (all-or-nothing); tokens come back in request order. */
  async tokenize(fields: readonly FieldInput[], o: CallOverrides & { ttlSeconds?: number; subjectRef?: string } = {}): Promise<Tokenized[]> {
    const idempotent = fields.length > 0 && fields.every((f) => DETERMINISTIC_CATEGORIES.has(f.category));
    const res = await this.unary("Tokenize", this.tokens, this.tokens.tokenize as never, { fields: [...fields], ttlSeconds: o.ttlSeconds ?? 0, subjectRef: o.subjectRef ?? "" }, idempotent, o);
    const out = (res as { tokens: { token: string; category: string; masked?: Masked; expiresAt?: Date }[] }).tokens;
    return out.map((t) => ({ token: t.token, category: t.category, masked: t.masked ?? { display: "", brand: "", last: "", expired: false }, expiresAt: t.expiresAt }));
  }

  /** Reveals values for a declared purpose. Each item succeeds or fails alone. Never retried. */
  async detokenize(tokens: readonly string[], o: CallOverrides & { purpose: string; justification?: string }): Promise<Revealed[]> {
    const res = (await this.unary("Detokenize", this.tokens, this.tokens.detokenize as never, { tokens: [...tokens], purpose: o.purpose, justification: o.justification ?? "" }, false, o)) as {
      results: { token: string; category: string; outcome?: { $case: "value"; value: string } | { $case: "error"; value: { code: string; message: string; retryAfterMs?: number } } }[];
    };
    return res.results.map((r) =>
      r.outcome?.$case === "value"
        ? { token: r.token, category: r.category, ok: true as const, value: r.outcome.value }
        : {
            token: r.token,
            category: r.category,
            ok: false as const,
            code: r.outcome?.value.code ?? "UNKNOWN",
            message: r.outcome?.value.message ?? "no outcome",
            ...(r.outcome?.value.retryAfterMs ? { retryAfterMs: r.outcome.value.retryAfterMs } : {}),
          },
    );
  }

  /**
   * Like detokenize, but returns values in request order or throws a RevealError. CVVs are single
   * use, so reveal never spends one in a call that is going to fail: malformed tokens are refused
   * before any call; InspectTokens (which reveals nothing) finds unknown tokens and each token's
   * category; every other item is revealed first, and the CVVs only once all of those succeeded.
   * If a CVV is still revealed in a failing reveal (two CVVs where the second is refused, or a token
   * this caller may not inspect), its value is in the RevealError's `results`, with every other item.
   */
  async reveal(tokens: readonly string[], o: CallOverrides & { purpose: string; justification?: string }): Promise<string[]> {
    const results: (Revealed | undefined)[] = new Array(tokens.length).fill(undefined);
    const fail = (): never => {
      const all = results.map((r, i): Revealed => r ?? { token: tokens[i]!, category: "", ok: false, code: "ABORTED", message: "not revealed: another item failed first" });
      throw new RevealError(all);
    };
    tokens.forEach((token, i) => {
      if (!isWellFormedToken(token)) results[i] = { token, category: "", ok: false, code: "INVALID_ARGUMENT", message: "not a fieldvault token (tok_ and 22 letters or digits, or a format-preserving card token)" };
    });
    if (results.some(Boolean)) fail();

    // Which items are CVVs (single use)? Only worth asking when there is something else to fail.
    let cvv = new Set<number>();
    if (tokens.length > 1) {
      const inspected = await this.inspect(tokens, o);
      inspected.forEach((r, i) => {
        if (!r.ok && r.code === "NOT_FOUND") results[i] = { token: tokens[i]!, category: "", ok: false, code: r.code, message: r.message };
      });
      if (results.some(Boolean)) fail();
      cvv = new Set(inspected.flatMap((r, i) => (r.ok && r.category === "card_cvv" ? [i] : [])));
    }
    const phases = [tokens.map((_, i) => i).filter((i) => !cvv.has(i)), [...cvv]].filter((p) => p.length);
    for (const phase of phases) {
      const revealed = await this.detokenize(
        phase.map((i) => tokens[i]!),
        o,
      );
      revealed.forEach((r, k) => (results[phase[k]!] = r));
      if (revealed.some((r) => !r.ok)) fail();
    }
    return results.map((r) => (r as Extract<Revealed, { ok: true }>).value);
  }

  /** Metadata and masked views; never plaintext. Retried on UNAVAILABLE. */
  async inspect(tokens: readonly string[], o: CallOverrides = {}): Promise<Inspected[]> {
    const res = (await this.unary("InspectTokens", this.tokens, this.tokens.inspectTokens as never, { tokens: [...tokens] }, true, o)) as {
      tokens: { token: string; category: string; masked?: Masked; createdAt?: Date; expiresAt?: Date; keyVersion: number; error?: { code: string; message: string } }[];
    };
    return res.tokens.map((t) =>
      t.error
        ? { token: t.token, ok: false as const, code: t.error.code, message: t.error.message }
        : { token: t.token, ok: true as const, category: t.category, masked: t.masked!, createdAt: t.createdAt, expiresAt: t.expiresAt, keyVersion: t.keyVersion },
    );
  }

  async deleteTokens(tokens: readonly string[], o: CallOverrides = {}): Promise<number> {
    const res = (await this.unary("DeleteTokens", this.tokens, this.tokens.deleteTokens as never, { tokens: [...tokens] }, false, o)) as { deleted: number };
    return res.deleted;
  }

  async deleteSubject(subjectRef: string, o: CallOverrides = {}): Promise<{ erased: number; unlinked: number }> {
    return (await this.unary("DeleteSubject", this.tokens, this.tokens.deleteSubject as never, { subjectRef }, false, o)) as { erased: number; unlinked: number };
  }

  /** Key status per category (key administrators). Retried on UNAVAILABLE. */
  async listKeys(category = "", o: CallOverrides = {}): Promise<CategoryKeys[]> {
    const res = (await this.unary("ListKeys", this.keyAdmin, this.keyAdmin.listKeys as never, { category }, true, o)) as { categories: CategoryKeys[] };
    return res.categories;
  }

  /** Access-log entries matching a filter (log readers). Retried on UNAVAILABLE before the first entry. */
  async queryLog(filter: Partial<QueryRequest> = {}, o: CallOverrides = {}): Promise<LogEntry[]> {
    const req: QueryRequest = { caller: "", token: "", category: "", purpose: "", outcome: "", since: undefined, until: undefined, pageSize: 0, pageToken: "", action: "", ...filter };
    const deadline = Date.now() + (o.deadlineMs ?? this.deadlineMs);
    return withRetry(
      () =>
        new Promise<LogEntry[]>((resolve, reject) => {
          const out: LogEntry[] = [];
          const stream: ClientReadableStream<LogEntry> = this.accessLog.query(req, this.metadata(o), { deadline });
          stream.on("data", (e: LogEntry) => out.push(e));
          stream.on("error", (err: ServiceError) => reject(out.length ? new FieldVaultError(err.code, err.details, "Query") : err));
          stream.on("end", () => resolve(out));
        }),
      true,
      this.retry,
      deadline,
    ).catch((err) => {
      throw err instanceof FieldVaultError ? err : this.failure((err as ServiceError).code, (err as ServiceError).details, "Query");
    });
  }

  /** Recomputes the access log's hash chains and checkpoint signatures (log readers). Retried. */
  /** `anchor`: one published checkpoint (a line of FIELDVAULT_AUDIT_ANCHOR_FILE) the database must still hold. */
  async verifyLog(range: { since?: Date; until?: Date; anchor?: string } = {}, o: CallOverrides = {}): Promise<VerifyResponse> {
    return (await this.unary("Verify", this.accessLog, this.accessLog.verify as never, { since: range.since, until: range.until, anchor: range.anchor }, true, o)) as VerifyResponse;
  }

  close(): void {
    this.tokens.close();
    this.keyAdmin.close();
    this.accessLog.close();
  }

  private metadata(o: CallOverrides): Metadata {
    const md = new Metadata();
    if (this.opts.caller && !this.opts.tls) md.set("x-fieldvault-caller", this.opts.caller);
    if (o.requestId) md.set("x-request-id", o.requestId);
    return md;
  }

  private unary<Req, Res>(name: string, client: object, method: UnaryMethod<Req, Res>, req: Req, idempotent: boolean, o: CallOverrides): Promise<Res> {
    const deadline = Date.now() + (o.deadlineMs ?? this.deadlineMs);
    const attempt = () =>
      new Promise<Res>((resolve, reject) => {
        method.call(client, req, this.metadata(o), { deadline }, (err, res) => (err ? reject(err) : resolve(res)));
      });
    return withRetry(attempt, idempotent, this.retry, deadline).catch((err: ServiceError) => {
      throw this.failure(err.code ?? status.UNKNOWN, err.details ?? String(err), name, err.metadata);
    });
  }

  private failure(code: number, details: string, method: string, trailers?: Metadata): FieldVaultError {
    const explanation = explainConnectionError(code, details, { address: this.opts.address, tls: !!this.opts.tls, words: SDK_WORDS });
    return new FieldVaultError(code, details, method, explanation, errorDetailsOf(trailers));
  }
}
