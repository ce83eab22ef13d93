import type { ServiceDefinition } from "@grpc/grpc-js";

/**
 * What a guarded method's deserializer hands the handler for bytes that are not its request
 * message. grpc-js would otherwise answer such a call itself with INTERNAL "Error deserializing
 * request" — a server fault to every alert, and no word of what was wrong — before any of our code
 * ran. The handler wrapper (call.ts) answers INVALID_ARGUMENT instead, counted and logged like any
 * refused call; nothing else runs, nothing is stored.
 */
export class UndecodableRequest {
  constructor(readonly reason: string) {}
}

/** Why the decoder refused, in words that never carry the bytes (the decoder's own text may). */
function reasonOf(err: unknown): string {
  // strict-utf8.ts makes string fields decode with a fatal TextDecoder, which throws a TypeError.
  if ((err as { code?: unknown })?.code === "ERR_ENCODING_INVALID_ENCODED_DATA") return "a string field is not valid UTF-8";
  return "not a valid protobuf message";
}

/** A copy of a service definition whose every method's deserializer returns UndecodableRequest instead of throwing. */
export function guardedService<S extends ServiceDefinition>(def: S): S {
  const out: Record<string, unknown> = {};
  for (const [method, m] of Object.entries(def)) {
    out[method] = {
      ...m,
      requestDeserialize: (b: Buffer) => {
        try {
          return m.requestDeserialize(b);
        } catch (err) {
          return new UndecodableRequest(reasonOf(err));
        }
      },
    };
  }
  return out as S;
}
