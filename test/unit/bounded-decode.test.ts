import { TokenizeRequest } from "../../src/gen/fieldvault/v1/token_service";
import { boundRepeated, maxRequestBytes } from "../../src/transport/grpc/bounded-decode";

describe("boundRepeated", () => {
  const req = (n: number) =>
    Buffer.from(
      TokenizeRequest.encode({
        fields: Array.from({ length: n }, (_, i) => ({ category: "email", value: `v${i}`.repeat(i % 3 ? 1 : 70), tokenFormat: 0 })),
        ttlSeconds: 300,
        subjectRef: "subj",
      }).finish(),
    );

  it("keeps a message within the bound byte for byte", () => {
    const b = req(5);
    expect(boundRepeated(b, 1, 5)).toBe(b);
  });

  it("keeps the first `keep` items (multi-byte lengths too) and every other field", () => {
    const out = TokenizeRequest.decode(boundRepeated(req(50), 1, 7));
    expect(out.fields).toHaveLength(7);
    expect(out.fields.map((f) => f.value)).toEqual(TokenizeRequest.decode(req(7)).fields.map((f) => f.value));
    expect(out).toMatchObject({ ttlSeconds: 300, subjectRef: "subj" });
  });

  it("returns a malformed buffer unchanged for the decoder to refuse", () => {
    for (const bad of [Buffer.from([0x0a, 0x05, 0x01]), Buffer.from([0x0a, 0xff, 0xff]), Buffer.from([0x0b]), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])]) {
      expect(boundRepeated(bad, 1, 0)).toBe(bad);
    }
  });

  it("sizes the receive limit to the largest legal request", () => {
    expect(maxRequestBytes(1000)).toBeGreaterThan(1000 * 4096);
    expect(maxRequestBytes(1000)).toBeLessThan(5 * 1024 * 1024);
  });
});
