import { open } from "node:fs/promises";

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
