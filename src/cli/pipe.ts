/**
 * A command piped into `head` (or anything that stops reading) gets EPIPE on its next write. Like
 * ripgrep or jq, stop quietly: no stack trace, exit 0 — the reader has all it wanted.
 */
export function exitQuietlyOnClosedPipe(stream: NodeJS.WriteStream = process.stdout): void {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(0);
    throw err;
  });
}
