/**
 * Values taken from the access log (caller identities, details, purposes, justifications) were
 * written by callers: printed raw they could move the cursor, rewrite earlier lines, set the window
 * title (C0/C1 control characters, ESC sequences) or reorder what the reader sees (Unicode bidi
 * controls, the "Trojan Source" trick). Every such character is shown as a visible escape instead.
 */
// C0 controls, DEL, C1 controls; bidi embeddings/overrides/isolates and marks; line/paragraph separators.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

const escape = (c: string) => {
  const code = c.codePointAt(0)!;
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u{${code.toString(16)}}`;
};

/** For a terminal: every control or bidi character as `\xNN` / `\u{NNNN}`. */
export function terminalSafe(text: string): string {
  return text.replace(UNSAFE, escape);
}

/** JSON.stringify whose output is also safe on a terminal (bidi and separators as \uNNNN); parses the same. */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value).replace(UNSAFE, (c) => `\\u${c.codePointAt(0)!.toString(16).padStart(4, "0")}`);
}
