import { readFileSync } from "node:fs";
import { type SigningKey, signingKeyFromSeed } from "../crypto/signing";
import { sodium } from "../crypto/sodium";
import { ConfigError } from "./config";

/** The access-log checkpoint signing key: a base64 Ed25519 seed (32 bytes) in a file. */
export function loadSigningKey(file: string): SigningKey {
  let seed: Uint8Array;
  try {
    seed = sodium.from_base64(readFileSync(file, "utf8").trim(), sodium.base64_variants.ORIGINAL);
  } catch {
    throw new ConfigError([`FIELDVAULT_SIGNING_KEY_FILE: cannot read a base64 seed from ${file}`]);
  }
  if (seed.length !== 32) throw new ConfigError(["FIELDVAULT_SIGNING_KEY_FILE: the seed must be 32 bytes"]);
  return signingKeyFromSeed(seed);
}
