import { type Attributes, type Context, context, type Span, SpanKind, SpanStatusCode, trace, type Tracer } from "@opentelemetry/api";

/**
 * OpenTelemetry tracing, off unless configured (OpenTelemetry's own variables:
 * OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_SERVICE_NAME,
 * OTEL_SDK_DISABLED; or FIELDVAULT_TRACING=on). When off, no span is ever created and the hot path
 * pays nothing: the composition root only wraps dependencies when a tracer exists.
 *
 * Span attributes carry categories, purposes, outcomes and counts: never a value, a token or a key.
 *
 * This module needs only @opentelemetry/api; the SDK (provider, exporter, propagator) is in
 * tracing-sdk.ts, which the composition root imports only when tracing is on (~2.5 MB of heap and
 * ~15 MB resident otherwise spent on code that never runs; docs/performance.md).
 */

export interface Tracing {
  tracer: Tracer;
  /** The caller's W3C trace context (traceparent/tracestate) from gRPC metadata. */
  extract(get: (header: string) => string | undefined): Context;
  shutdown(): Promise<void>;
}

/** Whether the environment asks for tracing, following OpenTelemetry's conventions. */
export function tracingRequested(env: NodeJS.ProcessEnv): boolean {
  if ((env.OTEL_SDK_DISABLED ?? "").toLowerCase() === "true") return false;
  const flag = (env.FIELDVAULT_TRACING ?? "").toLowerCase();
  if (flag === "off") return false;
  return flag === "on" || !!env.OTEL_EXPORTER_OTLP_ENDPOINT || !!env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
}

/** Runs `fn` inside a child span of the active one; records failures without their messages' values. */
export async function inSpan<T>(tracer: Tracer, name: string, attributes: Attributes, fn: (span: Span) => Promise<T>): Promise<T> {
  return tracer.startActiveSpan(name, { attributes }, async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as { code?: string }).code ?? "error" });
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Starts the server span of one RPC, continuing the caller's trace. */
export function startRpcSpan(t: Tracing, method: string, service: string, get: (header: string) => string | undefined): { span: Span; ctx: Context } {
  const parent = t.extract(get);
  const span = t.tracer.startSpan(`fieldvault.v1.${service}/${method}`, {
    kind: SpanKind.SERVER,
    attributes: { "rpc.system": "grpc", "rpc.service": `fieldvault.v1.${service}`, "rpc.method": method },
  }, parent);
  return { span, ctx: trace.setSpan(parent, span) };
}

/**
 * Wraps the named async methods of `target` in child spans. `attrs` derives safe attributes (counts,
 * categories) from the arguments; it must never copy a value or a token.
 */
export function traceMethods<T extends object>(
  tracer: Tracer,
  target: T,
  prefix: string,
  methods: readonly (keyof T & string)[],
  attrs: (method: string, args: unknown[]) => Attributes = () => ({}),
): T {
  // A plain object whose every method runs on the original (so its state stays in one place).
  const wrapped = {} as Record<string, unknown>;
  for (let o: object | null = target; o && o !== Object.prototype; o = Object.getPrototypeOf(o)) {
    for (const k of Object.getOwnPropertyNames(o)) {
      const v = (target as Record<string, unknown>)[k];
      if (k !== "constructor" && !(k in wrapped) && typeof v === "function") wrapped[k] = (v as (...a: unknown[]) => unknown).bind(target);
    }
  }
  for (const m of methods) {
    const fn = target[m];
    if (typeof fn !== "function") continue;
    wrapped[m] = (...args: unknown[]) =>
      inSpan(tracer, `${prefix}.${m}`, attrs(m, args), async () => (fn as (...a: unknown[]) => Promise<unknown>).apply(target, args));
  }
  return wrapped as T;
}

/** The active span's ids, for log lines of a traced call. */
export function activeTraceIds(): { trace_id: string; span_id: string } | Record<string, never> {
  const span = trace.getSpan(context.active());
  if (!span) return {};
  const c = span.spanContext();
  return c.traceFlags & 1 || span.isRecording() ? { trace_id: c.traceId, span_id: c.spanId } : {};
}
