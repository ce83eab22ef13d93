import { type FileHandle, open } from "node:fs/promises";

/**
 * Where output bytes go. A file sink knows exactly how many bytes it has written and can make
 * them durable (fsync) before the import records them as committed; stdout cannot.
 */
export interface Sink {
  write(text: string): Promise<void>;
  /** Bytes written so far (file sinks: from the start of the file). */
  readonly bytes: number;
  /** Flushes to stable storage. */
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** A file opened for writing at `offset` (a resumed file is cut back to it first). */
export async function fileSink(path: string, offset: number | "fresh"): Promise<Sink> {
  const fh: FileHandle = await open(path, offset === "fresh" ? "w" : "r+");
  let bytes = 0;
  if (offset !== "fresh") {
    await fh.truncate(offset);
    bytes = offset;
  }
  return {
    async write(text) {
      if (!text) return;
      const buf = Buffer.from(text, "utf8");
      let done = 0;
      while (done < buf.length) done += (await fh.write(buf, done, buf.length - done, bytes + done)).bytesWritten;
      bytes += buf.length;
    },
    get bytes() {
      return bytes;
    },
    sync: () => fh.sync(),
    close: () => fh.close(),
  };
}

/** The reader has gone away (`| head`): the import stops quietly, like any well-behaved filter. */
export class OutputClosed extends Error {}

/** A stream (stdout): writes wait for `drain`, so a slow reader slows the import instead of filling memory. */
export function streamSink(stream: NodeJS.WritableStream): Sink {
  let bytes = 0;
  let failed: Error | undefined;
  stream.on("error", (err: NodeJS.ErrnoException) => {
    failed = err.code === "EPIPE" ? new OutputClosed("output closed") : err;
  });
  return {
    async write(text) {
      if (failed) throw failed;
      if (!text) return;
      bytes += Buffer.byteLength(text);
      if (stream.write(text)) return;
      await new Promise<void>((resolve) => {
        const done = () => {
          stream.off("drain", done);
          stream.off("error", done);
          stream.off("close", done);
          resolve();
        };
        stream.on("drain", done);
        stream.on("error", done);
        stream.on("close", done);
      });
      if (failed) throw failed;
    },
    get bytes() {
      return bytes;
    },
    async sync() {
      if (failed) throw failed;
    },
    async close() {},
  };
}
