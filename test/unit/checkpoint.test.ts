import { randomBytes } from "node:crypto";
import { GENESIS_HASH } from "../../src/domain/access-log";
import {
  checkpointBody,
  checkpointHash,
  checkpointJson,
  checkpointNote,
  checkpointSignedBy,
  parseCheckpointJson,
  publishedForkProblem,
  signCheckpoint,
  type SignedCheckpointV2,
  ZERO_HASH,
} from "../../src/domain/checkpoint";
import { signingKeyFromSeed } from "../../src/crypto/signing";
import { readySodium } from "../../src/crypto/sodium";

/** The v2 checkpoint format: its signed body, its published JSON, and tampering with either. */
describe("checkpoints v2", () => {
  let key: ReturnType<typeof signingKeyFromSeed>;
  const chainOf = (n: number) => {
    const out: SignedCheckpointV2[] = [];
    let prev: SignedCheckpointV2 | undefined;
    for (let i = 0; i < n; i++) {
      prev = signCheckpoint(key, { chainId: "fv-a.01020304", size: i * 4, head: i ? randomBytes(32) : GENESIS_HASH, at: new Date(1_800_000_000_000 + i), closed: false, number: i + 1, prev: prev ? checkpointHash(prev) : ZERO_HASH });
      out.push(prev);
    }
    return out;
  };
  beforeAll(async () => {
    await readySodium();
    key = signingKeyFromSeed(new Uint8Array(32).fill(3));
  });

  it("signs a C2SP-style body: origin, size, head, then the extension lines", () => {
    const [cp] = chainOf(1);
    const lines = checkpointBody(cp!).split("\n");
    expect(lines.slice(0, 4)).toEqual(["fieldvault.access-log/fv-a.01020304", "0", Buffer.from(GENESIS_HASH).toString("base64"), "fieldvault-checkpoint v2"]);
    expect(lines).toContain("number 1");
    expect(lines).toContain(`key ${key.keyId}`);
    expect(checkpointNote(cp!)).toContain(`\n\n\u2014 ${key.keyId} `);
    expect(checkpointSignedBy(key.publicKey, cp!)).toBe(true);
  });

  it("round-trips the published JSON, bare or inside a log line, and any edited field breaks the signature", () => {
    const [, cp] = chainOf(2);
    const json = checkpointJson(cp!);
    for (const line of [JSON.stringify(json), JSON.stringify({ level: "info", msg: "audit checkpoint", checkpoint: json })]) {
      const back = parseCheckpointJson(line);
      if (typeof back === "string") throw new Error(back);
      expect(checkpointSignedBy(key.publicKey, back)).toBe(true);
      expect(Buffer.from(checkpointHash(back)).equals(Buffer.from(checkpointHash(cp!)))).toBe(true);
    }
    for (const edit of [{ size: 5 }, { number: 3 }, { closed: true }, { chain_id: "fv-b.01020304" }, { time: new Date(0).toISOString() }, { prev: Buffer.from(ZERO_HASH).toString("base64") }]) {
      const back = parseCheckpointJson(JSON.stringify({ ...json, ...edit }));
      if (typeof back === "string") throw new Error(back);
      expect(checkpointSignedBy(key.publicKey, back)).toBe(false);
    }
    expect(checkpointSignedBy(signingKeyFromSeed(new Uint8Array(32).fill(4)).publicKey, cp!)).toBe(false);
  });

  it("refuses lines that are not checkpoints, naming the problem without echoing the input", () => {
    const json = checkpointJson(chainOf(1)[0]!);
    expect(parseCheckpointJson("{nope")).toBe("not JSON");
    expect(parseCheckpointJson(JSON.stringify({ ...json, v: 1 }))).toBe("not a v2 checkpoint");
    expect(parseCheckpointJson(JSON.stringify({ ...json, head: "secret-value" }))).toBe("head is not a base64 32-byte hash");
    expect(parseCheckpointJson(JSON.stringify({ ...json, number: 0 }))).toBe("number missing");
    expect(parseCheckpointJson(JSON.stringify({ ...json, chain_id: "a\nb" }))).toBe("chain_id missing or malformed");
  });

  it("finds a fork among published checkpoints: one number twice, or a link that does not hold", () => {
    const cps = chainOf(4);
    expect(publishedForkProblem(cps)).toBeUndefined();
    expect(publishedForkProblem([cps[0]!, cps[2]!])).toBeUndefined(); // a gap in what was kept is no fork
    const other = signCheckpoint(key, { ...cps[2]!, head: randomBytes(32) });
    expect(publishedForkProblem([...cps, other])).toMatch(/two different checkpoints numbered 3/);
    const unlinked = signCheckpoint(key, { ...cps[3]!, prev: ZERO_HASH });
    expect(publishedForkProblem([cps[2]!, unlinked])).toMatch(/checkpoint 4 of key \S+ does not cover checkpoint 3/);
  });
});
