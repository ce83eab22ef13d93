import { open } from "node:fs/promises";

/** The last non-empty lines of a file, reading at most its final `bytes` (undefined: no such file). */
export async function lastLines(path: string, bytes = 64 * 1024): Promise<string[] | undefined> {
  let fh;
  try {
    fh = await open(path, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  try {
    const { size } = await fh.stat();
    const start = Math.max(0, size - bytes);
    const buf = Buffer.alloc(size - start);
    await fh.read(buf, 0, buf.length, start);
    const lines = buf.toString("utf8").split("\n");
    if (start > 0) lines.shift(); // a partial first line
    return lines.map((l) => l.trim()).filter(Boolean);
  } finally {
    await fh.close();
  }
}

/**
 * Appends lines to a file outside the database (FIELDVAULT_AUDIT_ANCHOR_FILE), each fsync'd before
 * the next is written, in order. Point it at storage the database's administrators cannot rewrite
 * (another host's mount, a WORM bucket's sync folder, a log shipper's input).
 */
export function anchorFile(path: string, onError: (err: unknown) => void) {
  let tail = Promise.resolve();
  return {
    append(line: string): Promise<void> {
      tail = tail.then(async () => {
        const fh = await open(path, "a", 0o600);
        try {
          await fh.appendFile(line.endsWith("\n") ? line : `${line}\n`);
          await fh.sync();
        } finally {
          await fh.close();
        }
      }).catch(onError);
      return tail;
    },
    /** Resolves once every line appended so far is on disk (or failed). */
    flushed: () => tail,
  };
}
