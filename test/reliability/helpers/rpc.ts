import { type Client, Metadata, type ServiceError, status } from "@grpc/grpc-js";
import type { DetokenizeResponse, TokenizeResponse } from "../../../src/gen/fieldvault/v1/token_service";
import { TokenServiceService } from "../../../src/gen/fieldvault/v1/token_service";
import { CALLER_HEADER } from "../../../src/transport/grpc/identity";
import type { Clients } from "../../helpers/client";

export interface Outcome<T> {
  ok: boolean;
  value?: T;
  code?: number;
  details?: string;
  ms: number;
}

const md = (caller: string | undefined) => {
  const m = new Metadata();
  if (caller) m.set(CALLER_HEADER, caller);
  return m;
};

/** One unary call on any service by its method definition, with a deadline; never throws. */
export function unaryCall<Req, Res>(
  client: Client,
  def: { path: string; requestSerialize: (r: Req) => Buffer; responseDeserialize: (b: Buffer) => Res },
  caller: string | undefined,
  req: Req,
  deadlineMs = 5000,
): Promise<Outcome<Res>> {
  const started = Date.now();
  return new Promise((resolve) => {
    client.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, req, md(caller), { deadline: Date.now() + deadlineMs }, (err: ServiceError | null, res?: Res) =>
      resolve(err ? { ok: false, code: err.code, details: err.details, ms: Date.now() - started } : { ok: true, value: res, ms: Date.now() - started }),
    );
  });
}

/** Sends raw bytes as the request of `path` (for malformed protobuf / wrong wire types). */
export function rawCall(client: Client, path: string, caller: string | undefined, bytes: Buffer, deadlineMs = 5000): Promise<Outcome<Buffer>> {
  return unaryCall<Buffer, Buffer>(client, { path, requestSerialize: (b) => b, responseDeserialize: (b) => b }, caller, bytes, deadlineMs);
}

/** TokenService calls for one caller, each with a deadline, returning outcomes instead of throwing. */
export function tokens(c: Clients, caller: string, deadlineMs = 5000) {
  const S = TokenServiceService;
  return {
    tokenize: (fields: { category: string; value: string }[], ttlSeconds = 0, subjectRef = "") =>
      unaryCall<Parameters<typeof S.tokenize.requestSerialize>[0], TokenizeResponse>(c.tokens, S.tokenize, caller, { fields, ttlSeconds, subjectRef }, deadlineMs),
    detokenize: (toks: string[], purpose: string, justification = "REL-1") =>
      unaryCall<Parameters<typeof S.detokenize.requestSerialize>[0], DetokenizeResponse>(c.tokens, S.detokenize, caller, { tokens: toks, purpose, justification }, deadlineMs),
  };
}

/** The revealed value of each detokenize result, or undefined for an item error. */
export const valuesOf = (res: DetokenizeResponse | undefined) =>
  (res?.results ?? []).map((r) => (r.outcome?.$case === "value" ? r.outcome.value : undefined));

export const codeName = (code: number | undefined) => (code === undefined ? "OK" : (status[code] ?? `code ${code}`));
