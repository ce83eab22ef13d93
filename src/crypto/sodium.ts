import _sodium from "libsodium-wrappers";

/** libsodium, usable only after `readySodium()` resolved once in the process. */
export const sodium = _sodium;

let ready: Promise<void> | undefined;
export function readySodium(): Promise<void> {
  ready ??= _sodium.ready;
  return ready;
}
