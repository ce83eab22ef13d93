import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { type ErrorCode, RetryLater, VaultError } from "../../domain/errors";
import { Any } from "../../gen/google/protobuf/any";
import { ErrorInfo, RetryInfo } from "../../gen/google/rpc/error_details";
import { Status } from "../../gen/google/rpc/status";

/** The one table from domain error codes to gRPC status codes. */
const CODES: Record<ErrorCode, status> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  UNAUTHENTICATED: status.UNAUTHENTICATED,
  PERMISSION_DENIED: status.PERMISSION_DENIED,
  NOT_FOUND: status.NOT_FOUND,
  FAILED_PRECONDITION: status.FAILED_PRECONDITION,
  RESOURCE_EXHAUSTED: status.RESOURCE_EXHAUSTED,
  UNAVAILABLE: status.UNAVAILABLE,
  ALREADY_EXISTS: status.ALREADY_EXISTS,
  UNIMPLEMENTED: status.UNIMPLEMENTED,
  INTERNAL: status.INTERNAL,
};

/**
 * Maps any thrown value to a gRPC error. Domain errors keep their (value-free) message;
 * anything else becomes INTERNAL with a generic message and the request id to look it up by.
 */
export function toServiceError(err: unknown, requestId: string): Partial<ServiceError> & { code: status } {
  const metadata = new Metadata();
  metadata.set("x-request-id", requestId);
  if (err instanceof VaultError && err.code !== "INTERNAL") {
    if (err instanceof RetryLater) metadata.set(STATUS_DETAILS, statusDetails(CODES[err.code], err));
    return { code: CODES[err.code], details: err.message, metadata };
  }
  return { code: status.INTERNAL, details: `internal error (request ${requestId})`, metadata };
}

export const statusName = (code: status): string => status[code] ?? "UNKNOWN";

/** The trailer of gRPC's richer error model: a google.rpc.Status with typed details. */
export const STATUS_DETAILS = "grpc-status-details-bin";
/** google.rpc.ErrorInfo's domain for fieldvault's reasons. */
export const ERROR_DOMAIN = "fieldvault.v1";

function statusDetails(code: status, err: RetryLater): Buffer {
  const ms = Math.max(0, Math.ceil(err.retryAfterMs));
  const details = [
    Any.fromPartial({ typeUrl: "type.googleapis.com/google.rpc.ErrorInfo", value: Buffer.from(ErrorInfo.encode({ reason: err.reason, domain: ERROR_DOMAIN, metadata: { ...err.info } }).finish()) }),
    Any.fromPartial({
      typeUrl: "type.googleapis.com/google.rpc.RetryInfo",
      value: Buffer.from(RetryInfo.encode({ retryDelay: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 } }).finish()),
    }),
  ];
  return Buffer.from(Status.encode({ code, message: err.message, details }).finish());
}
