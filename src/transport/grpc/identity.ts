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

/** Builds the call context: from the verified client certificate, or (development only) the header. */
export function identify(call: ServerSurfaceCall, opts: IdentityOptions): CallContext {
  const peer = call.getPeer();
  const incoming = call.metadata.get("x-request-id")[0];
  const requestId = typeof incoming === "string" && /^[A-Za-z0-9_-]{1,64}$/.test(incoming) ? incoming : newRequestId();
  const auth = call.getAuthContext?.();
  const fromCert = identityFromCertificate(auth?.sslPeerCertificate as PeerCertificate | undefined);
  if (fromCert) return { identity: fromCert, auth: "mtls", peer, requestId };
  if (opts.allowSelfAsserted) {
    const claimed = call.metadata.get(CALLER_HEADER)[0];
    if (typeof claimed === "string" && NAME.test(claimed)) return { identity: claimed, auth: "self_asserted", peer, requestId };
    throw Object.assign(unauthenticated(`no caller identity: send a client certificate or the ${CALLER_HEADER} header`), { requestId });
  }
  throw Object.assign(unauthenticated("a client certificate is required"), { requestId });
}
