import type { ServiceDefinition } from "@grpc/grpc-js";

/**
 * Reads a protobuf message's top-level fields without decoding them and, when repeated field
 * `field` occurs more than `keep` times, returns a copy holding only its first `keep` occurrences
 * (every other field kept). The decoder then builds at most `keep` items, whatever the caller sent:
 * a message of millions of empty items costs one scan, not millions of objects. The service's own
 * count check still refuses the call (more than the batch limit), naming the field. A malformed
 * buffer is returned as it is, for the decoder to refuse.
 */
export function boundRepeated(buf: Buffer, field: number, keep: number): Buffer {
  const spans: [number, number][] = [];
  let count = 0;
  let at = 0;
  let cut = false;
  let start = 0;
  const varint = (): number => {
    let result = 0;
    let shift = 0;
    for (;;) {
      if (at >= buf.length || shift > 49) throw new RangeError("varint");
      const b = buf[at++]!;
      result += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return result;
      shift += 7;
    }
  };
  try {
    while (at < buf.length) {
      const begin = at;
      // One-byte varints (the common case) are read inline: this loop runs once per item.
      let tag = buf[at]!;
      if (tag < 0x80) at++;
      else tag = varint();
      const wire = tag % 8;
      if (wire === 0) varint();
      else if (wire === 1) at += 8;
      else if (wire === 2) {
        let len = buf[at]!;
        if (len < 0x80) at++;
        else len = varint(); // read before adding: varint() moves `at`
        at += len;
      }
      else if (wire === 5) at += 4;
      else return buf;
      if (at > buf.length) return buf;
      if (Math.floor(tag / 8) === field && ++count > keep) {
        if (!cut) spans.push([start, begin]);
        cut = true;
        start = at;
      }
    }
  } catch {
    return buf;
  }
  if (!cut) return buf;
  spans.push([start, buf.length]);
  return Buffer.concat(spans.filter(([a, b]) => b > a).map(([a, b]) => buf.subarray(a, b)));
}

/**
 * A copy of a generated service definition whose named methods decode at most `keep` items of
 * their repeated field (see boundRepeated).
 */
export function boundedService<S extends ServiceDefinition>(def: S, repeatedField: Partial<Record<keyof S, number>>, keep: number): S {
  const out: Record<string, unknown> = { ...def };
  for (const [method, field] of Object.entries(repeatedField) as [string, number][]) {
    const m = def[method]!;
    out[method] = { ...m, requestDeserialize: (b: Buffer) => m.requestDeserialize(boundRepeated(b, field, keep)) };
  }
  return out as S;
}

/** The largest legal request: `maxBatch` items of at most 4 KiB each, with framing and the other fields. */
export const maxRequestBytes = (maxBatch: number): number => maxBatch * (4096 + 256) + 64 * 1024;
