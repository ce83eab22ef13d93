import { randomBytes } from "node:crypto";

/**
 * Cryptographically secure random bytes drawn from a refilled pool.
 * One `crypto.randomBytes` call (~3 µs whatever its size) serves many nonces and keys;
 * libsodium-wrappers' `randombytes_buf` is far slower per call. Bytes are never handed
 * out twice: the pool is replaced, never rewound.
 */
const POOL_BYTES = 64 * 1024;
let pool: Buffer = randomBytes(POOL_BYTES);
let offset = 0;

export function random(n: number): Uint8Array {
  if (n > POOL_BYTES / 4) return randomBytes(n);
  if (offset + n > pool.length) {
    pool = randomBytes(POOL_BYTES);
    offset = 0;
  }
  const out = pool.subarray(offset, offset + n);
  offset += n;
  return out;
}
