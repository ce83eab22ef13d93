import { readFileSync } from "node:fs";
import { type CallOptions, type ChannelOptions, ChannelCredentials, type ClientReadableStream, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { AccessLogClient, type LogEntry, type QueryRequest, type VerifyResponse } from "../gen/fieldvault/v1/access_log";
import { type CategoryKeys, KeyAdminClient } from "../gen/fieldvault/v1/key_admin";
import { type Masked, TokenServiceClient } from "../gen/fieldvault/v1/token_service";
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
}

export interface Tokenized {
  token: string;
  category: string;
  masked: Masked;
  expiresAt?: Date;
}

export type Revealed =
  | { token: string; category: string; ok: true; value: string }
  | { token: string; category: string; ok: false; code: string; message: string };

export type Inspected =
  | { token: string; ok: true; category: string; masked: Masked; createdAt?: Date; expiresAt?: Date; keyVersion: number }
  | { token: string; ok: false; code: string; message: string };

/** A failed call: the gRPC status, its name, and the vault's message (which never carries a value). */
export class FieldVaultError extends Error {
  readonly codeName: string;
  constructor(
    readonly code: number,
    readonly details: string,
    readonly method: string,
  ) {
    super(`${method}: ${status[code] ?? code}: ${details}`);
    this.name = "FieldVaultError";
    this.codeName = status[code] ?? String(code);
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
      results: { token: string; category: string; outcome?: { $case: "value"; value: string } | { $case: "error"; value: { code: string; message: string } } }[];
    };
    return res.results.map((r) =>
      r.outcome?.$case === "value"
        ? { token: r.token, category: r.category, ok: true as const, value: r.outcome.value }
        : { token: r.token, category: r.category, ok: false as const, code: r.outcome?.value.code ?? "UNKNOWN", message: r.outcome?.value.message ?? "no outcome" },
    );
  }

  /** Like detokenize, but throws unless every item was revealed; returns values in request order. */
  async reveal(tokens: readonly string[], o: CallOverrides & { purpose: string; justification?: string }): Promise<string[]> {
    const results = await this.detokenize(tokens, o);
    return results.map((r, i) => {
      if (!r.ok) throw new FieldVaultError(status[r.code as keyof typeof status] as number ?? status.UNKNOWN, `item ${i}: ${r.message}`, "Detokenize");
      return r.value;
    });
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
      throw err instanceof FieldVaultError ? err : new FieldVaultError((err as ServiceError).code, (err as ServiceError).details, "Query");
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
      throw new FieldVaultError(err.code ?? status.UNKNOWN, err.details ?? String(err), name);
    });
  }
}
