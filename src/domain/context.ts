import { randomBytes } from "node:crypto";
import type { AuthMethod } from "./access-log";

/** Who is calling, how we know, and which request this is. Built by the transport, used by services. */
export interface CallContext {
  readonly identity: string;
  readonly auth: AuthMethod;
  readonly peer: string;
  readonly requestId: string;
}

export const newRequestId = (): string => "req_" + randomBytes(12).toString("base64url");
