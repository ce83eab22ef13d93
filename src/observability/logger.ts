import pino, { type Logger } from "pino";

export type { Logger };

/**
 * Structured JSON logs. Values never reach a log call by design; the redaction list is a second
 * line of defence for any field that could carry one by mistake.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
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
