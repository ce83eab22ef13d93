import type { ServerSurfaceCall } from "@grpc/grpc-js/build/src/server-call";
import type { CallContext } from "../../domain/context";
import { newRequestId } from "../../domain/context";
import { unauthenticated } from "../../domain/errors";

export const CALLER_HEADER = "x-fieldvault-caller";
const NAME = /^[A-Za-z0-9._:/@-]{1,200}$/;

export interface IdentityOptions {
  /** development: a plaintext caller may name itself in x-fieldvault-caller. */
  allowSelfAsserted: boolean;
}

interface PeerCertificate {
  subject?: { CN?: string | string[] };
  subjectaltname?: string;
}

/** The identity in a client certificate: the first URI SAN, else the subject CN. */
export function identityFromCertificate(cert: PeerCertificate | undefined | null): string | undefined {
  if (!cert || Object.keys(cert).length === 0) return undefined;
  const uri = cert.subjectaltname
    ?.split(",")
    .map((s) => s.trim())
    .find((s) => s.startsWith("URI:"));
  if (uri) return uri.slice(4);
  const cn = cert.subject?.CN;
  return Array.isArray(cn) ? cn[0] : cn;
}

/**
 * The HTTP/2 session (one per connection) a call arrived on, through grpc-js's call objects:
 * ServerUnaryCallImpl.call → (interceptor wrappers' nextCall →) BaseServerInterceptingCall.stream.
 * These are grpc-js internals; if a release moves them this returns undefined and every call reads
 * the certificate itself (correct, only slower) — test/e2e/mtls.test.ts fails then, to say so.
 */
function sessionOf(call: ServerSurfaceCall): object | undefined {
  let c = (call as unknown as { call?: unknown }).call as { stream?: { session?: unknown }; nextCall?: unknown } | undefined;
  for (let hops = 0; c && !c.stream && hops < 8; hops++) c = c.nextCall as typeof c;
  const session = c?.stream?.session;
  return typeof session === "object" && session !== null ? session : undefined;
}

/**
 * What a connection says about its caller, read once: the certificate identity and the peer
 * address. `getPeerCertificate()` builds the whole certificate as an object on every call (42 µs on
 * this machine, more than a no-op gRPC call), and neither can change for a connection: Node's
 * HTTP/2 disables TLS renegotiation on its sockets (RFC 7540 §9.2.1), and TLS 1.3 has none. Keyed
 * weakly by the session, so a closed connection's entry goes with it.
 */
interface Connection {
  identity: string | undefined;
  peer: string;
}
const connections = new WeakMap<object, Connection>();

function connectionOf(call: ServerSurfaceCall): Connection {
  const session = sessionOf(call);
  const known = session && connections.get(session);
  if (known) return known;
  const auth = call.getAuthContext?.();
  const c = { identity: identityFromCertificate(auth?.sslPeerCertificate as PeerCertificate | undefined), peer: call.getPeer() };
  if (session) connections.set(session, c);
  return c;
}

/** Builds the call context: from the verified client certificate, or (development only) the header. */
export function identify(call: ServerSurfaceCall, opts: IdentityOptions): CallContext {
  const { identity: fromCert, peer } = connectionOf(call);
  const incoming = call.metadata.get("x-request-id")[0];
  const requestId = typeof incoming === "string" && /^[A-Za-z0-9_-]{1,64}$/.test(incoming) ? incoming : newRequestId();
  if (fromCert) return { identity: fromCert, auth: "mtls", peer, requestId };
  if (opts.allowSelfAsserted) {
    const claimed = call.metadata.get(CALLER_HEADER)[0];
    if (typeof claimed === "string" && NAME.test(claimed)) return { identity: claimed, auth: "self_asserted", peer, requestId };
    throw Object.assign(unauthenticated(`no caller identity: send a client certificate or the ${CALLER_HEADER} header`), { requestId });
  }
  throw Object.assign(unauthenticated("a client certificate is required"), { requestId });
}
