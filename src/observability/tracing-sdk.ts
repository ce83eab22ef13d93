import { context, ROOT_CONTEXT, type TextMapGetter } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter, type SpanProcessor } from "@opentelemetry/sdk-trace-base";
import type { Tracing } from "./tracing";

/** The OpenTelemetry SDK side of tracing (observability/tracing.ts): loaded only when tracing is on. */

let contextManagerSet = false;

/**
 * A tracer provider of this vault's own (not the global one, so two vaults in one process keep their
 * spans apart). `exporter` replaces the OTLP exporter (an in-memory exporter in tests, say).
 */
export function startTracing(opts: { serviceName?: string; instanceId: string; exporter?: SpanExporter; processor?: SpanProcessor }): Tracing {
  if (!contextManagerSet) {
    // The context manager is process-wide by nature (AsyncLocalStorage); set it once.
    context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
    contextManagerSet = true;
  }
  const processor = opts.processor ?? new BatchSpanProcessor(opts.exporter ?? new OTLPTraceExporter());
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      "service.name": opts.serviceName ?? process.env.OTEL_SERVICE_NAME ?? "fieldvault",
      "service.instance.id": opts.instanceId,
    }),
    spanProcessors: [processor],
  });
  const propagator = new W3CTraceContextPropagator();
  const getter: TextMapGetter<(h: string) => string | undefined> = {
    keys: () => ["traceparent", "tracestate"],
    get: (carrier, key) => carrier(key),
  };
  return {
    tracer: provider.getTracer("fieldvault"),
    extract: (get) => propagator.extract(ROOT_CONTEXT, get, getter),
    shutdown: () => provider.shutdown(),
  };
}

