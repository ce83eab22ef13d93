import pino, { type Logger } from "pino";
import { activeTraceIds } from "./tracing";

export type { Logger };

/**
 * Structured JSON logs. Values never reach a log call by design; the redaction list is a second
 * line of defence for any field that could carry one by mistake.
 */
export function createLogger(level: string, destination?: pino.DestinationStream, opts: { traceIds?: boolean } = {}): Logger {
  return pino({ ...format(level, opts), redact: REDACT }, destination ?? bufferedStdout());
}

const REDACT = {
  paths: ["value", "values", "*.value", "*.values", "fields", "*.fields", "plaintext", "*.plaintext", "key", "*.key", "secret", "*.secret"],
  censor: "[redacted]",
};

/** Everything about a line's shape but redaction: shared by both loggers, so their lines look alike. */
function format(level: string, opts: { traceIds?: boolean }): pino.LoggerOptions {
  return {
    level,
    // With tracing on, every line written inside a traced call carries trace_id and span_id.
    ...(opts.traceIds ? { mixin: activeTraceIds } : {}),
    base: { service: "fieldvault" },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
}

/** The fixed-shape line every successful call writes: ids, names and numbers the transport builds. */
export interface CallLine {
  requestId: string;
  caller: string | undefined;
  method: string;
  status: string;
  durationMs: number;
}

/**
 * Writes the one `call` line per call through `log`'s destination, level and format, without the
 * redaction pass: that pass cost ~3 of the ~5 µs a line costs (docs/performance.md) and none of
 * its paths can match a CallLine, whose type admits no request field. Everything else — errors,
 * anything with a free-form object — goes through `log` and its redaction.
 */
export function callLineWriter(log: Logger, opts: { traceIds?: boolean } = {}): (line: CallLine) => void {
  const stream = (log as unknown as Record<symbol, pino.DestinationStream>)[pino.symbols.streamSym]!;
  const plain = pino(format(log.level, opts), stream);
  return (line) => plain.info(line, "call");
}

/** How long a line may wait in the buffer before it is written anyway. */
export const LOG_FLUSH_MS = 100;

/**
 * Stdout, written asynchronously in blocks of up to 4 KB and at least every LOG_FLUSH_MS: a write(2)
 * per line cost ~3% of a single-field call's CPU (docs/performance.md). pino flushes what is still
 * buffered when the process exits (also after an uncaught error); only a SIGKILL can lose the
 * last LOG_FLUSH_MS of lines, never an access-log entry (those are in PostgreSQL before any answer).
 */
function bufferedStdout(): pino.DestinationStream {
  const dest = pino.destination({ dest: 1, sync: false, minLength: 4096 });
  // Flushing an empty buffer still writes (zero bytes): only flush after a line was written.
  let dirty = false;
  const write = dest.write.bind(dest);
  dest.write = (line: string) => ((dirty = true), write(line));
  const timer = setInterval(() => {
    if (!dirty) return;
    dirty = false;
    try {
      dest.flush();
    } catch {
      // not open yet, or already closed: the next tick (or the exit flush) writes it
    }
  }, LOG_FLUSH_MS);
  timer.unref();
  dest.on("close", () => clearInterval(timer));
  return dest;
}
