import type { sendUnaryData, ServerUnaryCall, ServerWritableStream } from "@grpc/grpc-js";
import { Metadata, status } from "@grpc/grpc-js";
import type { CallContext } from "../../domain/context";
import { newRequestId } from "../../domain/context";
import type { CallLine, Logger } from "../../observability/logger";
import { context, SpanStatusCode, type Span } from "@opentelemetry/api";
import { startRpcSpan, type Tracing } from "../../observability/tracing";
import { type IdentityOptions, identify } from "./identity";
import { statusName, toServiceError } from "./status";
import { UndecodableRequest } from "./decode-guard";
import { invalid } from "../../domain/errors";
import "./strict-utf8";

/** Hooks the composition root gives every handler: logging, metrics, in-flight tracking. */
export interface CallHooks {
  log: Logger;
  /** Writes the per-call line (observability/logger.ts callLineWriter); default `log.info(line, "call")`. */
  callLine?: (line: CallLine) => void;
  identity: IdentityOptions;
  onDone?: (e: { method: string; code: string; seconds: number; identity?: string }) => void;
  track?: <T>(p: Promise<T>) => Promise<T>;
  /** Set when tracing is on: each call is a server span continuing the caller's traceparent. */
  tracing?: Tracing;
  /** The gRPC service these handlers belong to (span names: fieldvault.v1.<service>/<method>). */
  service?: string;
}

/** Runs one call's work, inside its server span when tracing is on. */
function traced(hooks: CallHooks, method: string, metadata: { get(key: string): unknown[] }, work: (span?: Span) => Promise<void>): Promise<void> {
  if (!hooks.tracing) return work();
  const { span, ctx } = startRpcSpan(hooks.tracing, method, hooks.service ?? "unknown", (h) => {
    const v = metadata.get(h)[0];
    return typeof v === "string" ? v : undefined;
  });
  return context.with(ctx, () => work(span)).finally(() => span.end());
}

function endSpan(span: Span | undefined, code: status): void {
  if (!span) return;
  span.setAttribute("rpc.grpc.status_code", code);
  if (code !== status.OK) span.setStatus({ code: SpanStatusCode.ERROR, message: statusName(code) });
}

function finish(hooks: CallHooks, method: string, started: number, ctx: CallContext | undefined, code: status, requestId: string, err?: unknown) {
  const seconds = (performance.now() - started) / 1000;
  const name = statusName(code);
  hooks.onDone?.({ method, code: name, seconds, identity: ctx?.identity });
  const line: CallLine = { requestId, caller: ctx?.identity, method, status: name, durationMs: Math.round(seconds * 1000 * 10) / 10 };
  if (code === status.INTERNAL) hooks.log.error({ ...line, err: err instanceof Error ? { name: err.name, message: err.message } : undefined }, "call failed");
  else if (hooks.callLine) hooks.callLine(line);
  else hooks.log.info(line, "call");
}

/** The request, or INVALID_ARGUMENT when its bytes were not the method's message (decode-guard.ts). */
function decoded<Req>(method: string, req: Req): Req {
  if (req instanceof UndecodableRequest) throw invalid(`request: not a valid ${method} request (${req.reason})`);
  return req;
}

/** A unary handler: identify → run → respond, with one error mapping and one log line per call. */
export function unary<Req, Res>(hooks: CallHooks, method: string, run: (ctx: CallContext, req: Req) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
    const started = performance.now();
    let ctx: CallContext | undefined;
    const work = traced(hooks, method, call.metadata, async (span) => {
      try {
        ctx = identify(call, hooks.identity);
        const res = await run(ctx, decoded(method, call.request));
        endSpan(span, status.OK);
        finish(hooks, method, started, ctx, status.OK, ctx.requestId);
        callback(null, res);
      } catch (err) {
        const requestId = ctx?.requestId ?? (err as { requestId?: string }).requestId ?? newRequestId();
        const e = toServiceError(err, requestId);
        endSpan(span, e.code);
        finish(hooks, method, started, ctx, e.code, requestId, err);
        callback(e);
      }
    });
    void (hooks.track ? hooks.track(work) : work);
  };
}

/** A server-streaming handler: `run` writes messages; errors end the stream with a mapped status. */
export function serverStream<Req, Res>(
  hooks: CallHooks,
  method: string,
  run: (ctx: CallContext, req: Req, write: (msg: Res) => Promise<void>, cancelled: () => boolean, trailer: (key: string, value: string) => void) => Promise<void>,
) {
  return (call: ServerWritableStream<Req, Res>): void => {
    const started = performance.now();
    let ctx: CallContext | undefined;
    let cancelled = false;
    call.on("cancelled", () => (cancelled = true));
    // A cancelled call never drains: resolve then too, so `run` sees cancelled() instead of hanging.
    const write = (msg: Res) =>
      new Promise<void>((resolve) => {
        if (cancelled || call.write(msg)) return resolve();
        const done = () => {
          call.off("drain", done);
          call.off("cancelled", done);
          resolve();
        };
        call.once("drain", done);
        call.once("cancelled", done);
      });
    const work = traced(hooks, method, call.metadata, async (span) => {
      try {
        ctx = identify(call, hooks.identity);
        const trailers = new Metadata();
        await run(ctx, decoded(method, call.request), write, () => cancelled, (key, value) => trailers.set(key, value));
        endSpan(span, status.OK);
        finish(hooks, method, started, ctx, status.OK, ctx.requestId);
        call.end(trailers);
      } catch (err) {
        const requestId = ctx?.requestId ?? (err as { requestId?: string }).requestId ?? newRequestId();
        const e = toServiceError(err, requestId);
        endSpan(span, e.code);
        finish(hooks, method, started, ctx, e.code, requestId, err);
        // emit('error'), not destroy(): grpc-js turns the stream's 'error' event into the final status;
        // a destroyed stream never sends one, and the client would wait until its deadline.
        call.emit("error", Object.assign(new Error(e.details), e));
      }
    });
    void (hooks.track ? hooks.track(work) : work);
  };
}
