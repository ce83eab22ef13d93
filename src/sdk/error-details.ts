import type { Metadata } from "@grpc/grpc-js";
import { ErrorInfo, RetryInfo } from "../gen/google/rpc/error_details";
import { Status } from "../gen/google/rpc/status";

/** gRPC's richer error model: the trailer that carries a google.rpc.Status with typed details. */
const STATUS_DETAILS = "grpc-status-details-bin";
const ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo";
const RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo";

/** What a refusal says about itself beyond its code: why (a stable reason), and when to try again. */
export interface ErrorDetails {
  /** google.rpc.ErrorInfo's reason, e.g. TOKENIZE_BUDGET_EXCEEDED. */
  reason?: string;
  domain?: string;
  /** Names and numbers only (e.g. category, limit_per_minute); never a value. */
  info: Record<string, string>;
  /** From google.rpc.RetryInfo: how long until the same call can pass. */
  retryAfterMs?: number;
}

/**
 * Reads the google.rpc.ErrorInfo and RetryInfo a failed call's trailers carry. Undefined when there
 * are none (most errors) or the trailer cannot be read: callers then fall back on the status code.
 */
export function errorDetailsOf(metadata: Metadata | undefined): ErrorDetails | undefined {
  const raw = metadata?.get(STATUS_DETAILS)[0];
  if (!raw || typeof raw === "string") return undefined;
  try {
    const out: ErrorDetails = { info: {} };
    for (const d of Status.decode(raw).details) {
      if (d.typeUrl === ERROR_INFO) {
        const e = ErrorInfo.decode(d.value);
        Object.assign(out, { reason: e.reason, domain: e.domain, info: { ...e.metadata } });
      } else if (d.typeUrl === RETRY_INFO) {
        const delay = RetryInfo.decode(d.value).retryDelay;
        if (delay) out.retryAfterMs = delay.seconds * 1000 + Math.floor(delay.nanos / 1_000_000);
      }
    }
    return out.reason !== undefined || out.retryAfterMs !== undefined ? out : undefined;
  } catch {
    return undefined;
  }
}
