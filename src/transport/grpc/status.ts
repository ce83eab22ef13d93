import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { type ErrorCode, VaultError } from "../../domain/errors";

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
    return { code: CODES[err.code], details: err.message, metadata };
  }
  return { code: status.INTERNAL, details: `internal error (request ${requestId})`, metadata };
}

export const statusName = (code: status): string => status[code] ?? "UNKNOWN";
