import { ChannelCredentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import { AccessLogClient } from "../../src/gen/fieldvault/v1/access_log";
import { KeyAdminClient } from "../../src/gen/fieldvault/v1/key_admin";
import { TokenServiceClient } from "../../src/gen/fieldvault/v1/token_service";
import { CALLER_HEADER } from "../../src/transport/grpc/identity";

type Unary<Req, Res> = (req: Req, md: Metadata, cb: (err: ServiceError | null, res: Res) => void) => unknown;

/** Promisifies a generated unary method with the development caller header. */
export function call<Req, Res>(client: object, method: Unary<Req, Res>, caller: string | undefined, req: Req): Promise<Res> {
  const md = new Metadata();
  if (caller) md.set(CALLER_HEADER, caller);
  return new Promise((resolve, reject) =>
    method.call(client, req, md, (err, res) => (err ? reject(err) : resolve(res))),
  );
}

export interface Clients {
  tokens: TokenServiceClient;
  keys: KeyAdminClient;
  log: AccessLogClient;
  close(): void;
}

export function clients(address: string, credentials = ChannelCredentials.createInsecure()): Clients {
  const tokens = new TokenServiceClient(address, credentials);
  const keys = new KeyAdminClient(address, credentials);
  const log = new AccessLogClient(address, credentials);
  return {
    tokens,
    keys,
    log,
    close() {
      tokens.close();
      keys.close();
      log.close();
    },
  };
}

/** A caller bound to one identity: `as("payment-service").tokenize({...})`. */
export function tokenApi(c: Clients, caller: string | undefined) {
  const t = c.tokens;
  return {
    tokenize: (req: Parameters<typeof t.tokenize>[0]) => call(t, t.tokenize as never, caller, req) as Promise<import("../../src/gen/fieldvault/v1/token_service").TokenizeResponse>,
    detokenize: (req: Parameters<typeof t.detokenize>[0]) => call(t, t.detokenize as never, caller, req) as Promise<import("../../src/gen/fieldvault/v1/token_service").DetokenizeResponse>,
    inspect: (req: Parameters<typeof t.inspectTokens>[0]) => call(t, t.inspectTokens as never, caller, req) as Promise<import("../../src/gen/fieldvault/v1/token_service").InspectTokensResponse>,
    deleteTokens: (req: Parameters<typeof t.deleteTokens>[0]) => call(t, t.deleteTokens as never, caller, req) as Promise<import("../../src/gen/fieldvault/v1/token_service").DeleteTokensResponse>,
    deleteSubject: (req: Parameters<typeof t.deleteSubject>[0]) => call(t, t.deleteSubject as never, caller, req) as Promise<import("../../src/gen/fieldvault/v1/token_service").DeleteSubjectResponse>,
  };
}

/** The gRPC status code of a rejected call (fails the test if it resolved). */
export async function codeOf(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as ServiceError;
    return { code: e.code, details: e.details };
  }
  throw new Error("expected the call to fail");
}

/** Streams every message of a server-streaming call into an array (the development caller header when `caller` is set). */
export function collect<Req, Res>(
  client: object,
  method: (req: Req, md: Metadata) => import("@grpc/grpc-js").ClientReadableStream<Res>,
  caller: string | undefined,
  req: Req,
): Promise<Res[]> {
  const md = new Metadata();
  if (caller) md.set(CALLER_HEADER, caller);
  return new Promise((resolve, reject) => {
    const out: Res[] = [];
    const stream = method.call(client, req, md);
    stream.on("data", (m: Res) => out.push(m));
    stream.on("error", reject);
    stream.on("end", () => resolve(out));
  });
}

/** Promisified AccessLog calls for one caller (header for development callers; undefined for mTLS clients). */
export function logApi(c: Clients, caller: string | undefined) {
  const l = c.log;
  type Q = import("../../src/gen/fieldvault/v1/access_log").QueryRequest;
  type V = import("../../src/gen/fieldvault/v1/access_log").VerifyRequest;
  const blankQuery: Q = { caller: "", token: "", category: "", purpose: "", outcome: "", since: undefined, until: undefined, pageSize: 0, pageToken: "", action: "" };
  return {
    query: (req: Partial<Q> = {}) =>
      collect(l, l.query as never, caller, { ...blankQuery, ...req }) as Promise<import("../../src/gen/fieldvault/v1/access_log").LogEntry[]>,
    verify: (req: Partial<V> = {}) =>
      call(l, l.verify as never, caller, { since: undefined, until: undefined, ...req }) as Promise<import("../../src/gen/fieldvault/v1/access_log").VerifyResponse>,
  };
}
