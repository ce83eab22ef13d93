/**
 * Domain errors carry a closed code. `transport/grpc/status.ts` is the one place that maps
 * codes to gRPC status. Messages must never contain a value, a token's plaintext or key material.
 */
export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED"
  | "NOT_FOUND"
  | "FAILED_PRECONDITION"
  | "RESOURCE_EXHAUSTED"
  | "UNAVAILABLE"
  | "ALREADY_EXISTS"
  | "UNIMPLEMENTED"
  | "INTERNAL";

export class VaultError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "VaultError";
  }
}

/**
 * Over a budget that refills at a known time: RESOURCE_EXHAUSTED with a stable `reason`, value-free
 * `info` (names and numbers), and how long until a retry can pass. The transport sends them as
 * gRPC's richer error model (google.rpc.ErrorInfo and RetryInfo in `grpc-status-details-bin`), so
 * a client waits the right time instead of parsing the message.
 */
export class RetryLater extends VaultError {
  constructor(
    message: string,
    readonly reason: string,
    readonly retryAfterMs: number,
    readonly info: Readonly<Record<string, string>>,
  ) {
    super("RESOURCE_EXHAUSTED", message);
    this.name = "RetryLater";
  }
}

/** google.rpc.ErrorInfo's reason for a tokenize refused by the caller's deterministic budget. */
export const TOKENIZE_BUDGET_EXCEEDED = "TOKENIZE_BUDGET_EXCEEDED";

export const invalid = (message: string) => new VaultError("INVALID_ARGUMENT", message);
export const denied = (message: string) => new VaultError("PERMISSION_DENIED", message);
export const notFound = (message: string) => new VaultError("NOT_FOUND", message);
export const precondition = (message: string) => new VaultError("FAILED_PRECONDITION", message);
export const unavailable = (message: string) => new VaultError("UNAVAILABLE", message);
export const unauthenticated = (message: string) => new VaultError("UNAUTHENTICATED", message);

/** A storage dependency failed: the caller sees UNAVAILABLE, never the driver's message. */
export class DependencyError extends VaultError {
  constructor(
    readonly dependency: "postgres" | "redis",
    readonly causeError?: unknown,
  ) {
    super("UNAVAILABLE", `${dependency === "postgres" ? "database" : "cache"} unavailable`);
  }
}

/**
 * Stored metadata failed its integrity check (a database writer edited a token row or a key
 * state). Callers see only INTERNAL with a request id; the operator sees a metric and an ERROR line.
 */
export class IntegrityError extends VaultError {
  constructor() {
    super("INTERNAL", "stored metadata failed its integrity check");
    this.name = "IntegrityError";
  }
}
