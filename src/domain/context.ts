import { random } from "../crypto/random";
import type { AuthMethod } from "./access-log";

/** Who is calling, how we know, and which request this is. Built by the transport, used by services. */
export interface CallContext {
  readonly identity: string;
  readonly auth: AuthMethod;
  readonly peer: string;
  readonly requestId: string;
}

/** 96 random bits from the pooled CSPRNG (one `crypto.randomBytes` per call cost ~10 µs per RPC). */
export const newRequestId = (): string => {
  const r = random(12);
  return "req_" + Buffer.from(r.buffer, r.byteOffset, r.byteLength).toString("base64url");
};
