import pino, { type Logger } from "pino";
import { activeTraceIds } from "./tracing";

export type { Logger };

/**
 * Structured JSON logs. Values never reach a log call by design; the redaction list is a second
 * line of defence for any field that could carry one by mistake.
 */
export function createLogger(level: string, destination?: pino.DestinationStream, opts: { traceIds?: boolean } = {}): Logger {
  return pino(
    {
      level,
      // With tracing on, every line written inside a traced call carries trace_id and span_id.
      ...(opts.traceIds ? { mixin: activeTraceIds } : {}),
      base: { service: "fieldvault" },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: ["value", "values", "*.value", "*.values", "fields", "*.fields", "plaintext", "*.plaintext", "key", "*.key", "secret", "*.secret"],
        censor: "[redacted]",
      },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}
