import { SingleBar } from "cli-progress";

export interface Summary {
  rowsIn: number;
  tokenized: number;
  rejected: number;
  seconds: number;
}

/**
 * Progress on stderr only (stdout may be the output). On a terminal a cli-progress bar: rows,
 * rows/s and, when the input's size is known, percentage and ETA from bytes read. Otherwise one
 * plain line every `everyMs`.
 */
export function progressReporter(stream: NodeJS.WriteStream, totalBytes: number | undefined, bytesRead: () => number, everyMs = 5000) {
  const started = performance.now();
  const seconds = () => (performance.now() - started) / 1000;
  let rows = 0;
  let rejected = 0;
  let fraction = 0;
  const rate = () => Math.round(rows / Math.max(seconds(), 0.001));

  let bar: SingleBar | undefined;
  let timer: NodeJS.Timeout | undefined;
  if (stream.isTTY) {
    const sized = totalBytes !== undefined && totalBytes > 0;
    bar = new SingleBar({
      stream,
      fps: 5,
      hideCursor: true,
      clearOnComplete: false,
      format: sized
        ? "import [{bar}] {percentage}% | {rows} rows | {rate} rows/s | {rejected} rejected | ETA {eta_formatted}"
        : "import {rows} rows | {rate} rows/s | {rejected} rejected | {duration_formatted}",
    });
    bar.start(sized ? totalBytes : 1, 0, { rows: 0, rate: 0, rejected: 0 });
  } else {
    timer = setInterval(() => {
      const pct = totalBytes ? ` (${Math.floor(fraction * 100)}%)` : "";
      stream.write(`import: ${rows} rows${pct}, ${rate()} rows/s, ${rejected} rejected, ${seconds().toFixed(0)}s\n`);
    }, everyMs);
    timer.unref();
  }

  return {
    /**
     * `done` of `read` records are written (or rejected) this run, after `skipped` (resume). The
     * reader runs a bounded distance ahead, so the bytes behind the written records are estimated
     * as bytes read × (skipped + done) / (skipped + read).
     */
    rows(done: number, rej: number, read: number, skipped = 0) {
      rows = done;
      rejected = rej;
      if (totalBytes) fraction = Math.min(1, (bytesRead() / totalBytes) * ((skipped + done) / Math.max(1, skipped + read)));
      bar?.update(totalBytes ? Math.round(fraction * totalBytes) : 0, { rows, rate: rate(), rejected });
    },
    stop(): number {
      if (timer) clearInterval(timer);
      bar?.stop();
      return seconds();
    },
  };
}

export function summaryLine(s: Summary): string {
  const rate = Math.round(s.rowsIn / Math.max(s.seconds, 0.001));
  return `import: ${s.rowsIn} rows in, ${s.tokenized} tokenized, ${s.rejected} rejected, ${s.seconds.toFixed(1)}s, ${rate} rows/s`;
}
