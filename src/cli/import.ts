import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import path from "node:path";
import { Transform, type Readable } from "node:stream";
import type { Metadata, ServiceError } from "@grpc/grpc-js";
import type { Command } from "commander";
import { type TokenizeRequest, type TokenizeResponse, TokenServiceClient } from "../gen/fieldvault/v1/token_service";
import { addConnectOptions, type ConnectOptions, credentials, metadata } from "./connect";
import { csvSource } from "./import/csv";
import { jsonlSource } from "./import/jsonl";
import { rejectsText, runPipeline } from "./import/pipeline";
import { type ImportPlan, makePlan, UsageError } from "./import/plan";
import { progressReporter, summaryLine } from "./import/progress";
import { fileSink, OutputClosed, type Sink, streamSink } from "./import/sink";
import { type ImportState, readState, removeState, statePath, writeState } from "./import/state";
import { DEFAULT_RETRY, ImportStopped, type Retry, type TokenizeCall } from "./import/tokenize";

interface ImportOptions extends ConnectOptions {
  map: string[];
  tokenFormat: string[];
  subjectColumn?: string;
  format?: string;
  rejects?: string;
  resume?: boolean;
  batch?: string;
  concurrency?: string;
  retries?: string;
  progressEvery?: string;
}

/** Exit statuses: 0 every row imported, 2 done with rejects, 3 stopped but resumable, 130 interrupted. */
export const EXIT = { ok: 0, failed: 1, rejects: 2, resumable: 3, interrupted: 130 } as const;

const collect = (v: string, prev: string[]) => [...prev, v];

/** One Tokenize call over a shared channel, as the given caller, with a deadline. */
export function tokenizeCall(client: TokenServiceClient, md: Metadata, deadlineMs = 60_000): TokenizeCall {
  return (req: TokenizeRequest) =>
    new Promise<TokenizeResponse>((resolve, reject) =>
      client.tokenize(req, md, { deadline: Date.now() + deadlineMs }, (err: ServiceError | null, res: TokenizeResponse) => (err ? reject(err) : resolve(res))),
    );
}

function jobOf(input: string, inputSize: number | null, plan: ImportPlan, o: ImportOptions): ImportState["job"] {
  return {
    input: input === "-" ? "-" : path.resolve(input),
    inputSize,
    format: plan.format,
    map: plan.columns.map((c) => `${c.column}=${c.category}${c.preserving ? ":preserving" : ""}`),
    subjectColumn: plan.subjectColumn ?? null,
    rejects: o.rejects ? path.resolve(o.rejects) : null,
  };
}

async function importCommand(input: string, output: string, o: ImportOptions): Promise<number> {
  const plan = makePlan({ ...o, input });
  const paced = new Set<string>();
  const retry: Retry = {
    ...DEFAULT_RETRY,
    attempts: o.retries === undefined ? DEFAULT_RETRY.attempts : Number(o.retries),
    // Said once per category: the policy's tokenize budget, not the vault, sets this import's pace.
    onBudget: ({ category, limit }) => {
      if (paced.has(category)) return;
      paced.add(category);
      process.stderr.write(
        `\nimport: the caller's tokenize budget for ${category} (${limit} a minute) is pacing this import; ` +
          `it waits for each next minute. To go faster, raise tokenize_deterministic_per_minute for this caller in the vault's policy\n`,
      );
    },
  };
  if (!Number.isInteger(retry.attempts) || retry.attempts < 1) throw new UsageError(`--retries ${o.retries}: expected a whole number ≥ 1`);
  const everyMs = o.progressEvery === undefined ? 5000 : Number(o.progressEvery) * 1000;
  if (!(everyMs >= 100)) throw new UsageError(`--progress-every ${o.progressEvery}: expected seconds, at least 0.1`);
  const toStdout = output === "-";
  if (toStdout && o.resume) throw new UsageError("--resume needs an output file: an import written to stdout cannot be resumed");
  if (!toStdout && input !== "-" && path.resolve(input) === path.resolve(output)) throw new UsageError("the output must not be the input file");
  if (o.rejects && (o.rejects === "-" || path.resolve(o.rejects) === path.resolve(output))) throw new UsageError("--rejects needs a file of its own");

  const inputSize = input === "-" ? null : (await stat(input)).size;
  const job = jobOf(input, inputSize, plan, o);
  const sidecar = toStdout ? undefined : statePath(output);
  let state: ImportState | undefined;
  if (sidecar) {
    const previous = await readState(sidecar);
    if (o.resume) {
      if (!previous) throw new UsageError(`--resume: no interrupted import to resume (${sidecar} does not exist)`);
      if (JSON.stringify(previous.job) !== JSON.stringify(job)) throw new UsageError(`--resume: ${sidecar} records a different import (input, size, format, --map, --subject-column or --rejects differ)`);
      const outSize = (await stat(output).catch(() => undefined))?.size ?? -1;
      if (outSize < previous.outputBytes) throw new UsageError(`--resume: ${output} is shorter than the ${previous.outputBytes} bytes already committed; it was changed since`);
      state = previous;
    } else if (previous) {
      throw new UsageError(`${sidecar} records an unfinished import into ${output}: run again with --resume, or delete it to start over`);
    }
  }

  let bytesRead = 0;
  const raw: Readable = input === "-" ? process.stdin : createReadStream(input);
  const counted = raw.pipe(
    new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytesRead += chunk.length;
        cb(null, chunk);
      },
    }),
  );
  raw.on("error", (err) => counted.destroy(err));
  const source = plan.format === "csv" ? csvSource(counted, plan) : jsonlSource(counted, plan);

  await source.preamble(); // reads and checks the header before any output is created

  const out: Sink = toStdout ? streamSink(process.stdout) : await fileSink(output, state ? state.outputBytes : "fresh");
  const rejects: Sink = o.rejects ? await fileSink(o.rejects, state ? state.rejectsBytes : "fresh") : streamSink(process.stderr);
  if (o.rejects && !state) await rejects.write("line,column,reason\n");

  const progress = progressReporter(process.stderr, inputSize ?? undefined, () => bytesRead, everyMs);
  const client = new TokenServiceClient(o.address, credentials(o));
  let stopping = false;
  const onSignal = () => {
    if (stopping) process.exit(EXIT.interrupted); // a second Ctrl-C: leave now (the sidecar is still consistent)
    stopping = true;
    process.stderr.write("\nimport: stopping after the calls in flight; run again with --resume to continue\n");
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const earlier = { tokenized: state?.tokenized ?? 0, rejected: state?.rejected ?? 0 };
  try {
    const outcome = await runPipeline({
      plan,
      source,
      call: tokenizeCall(client, metadata(o)),
      out,
      rejects,
      rejectText: o.rejects ? undefined : rejectsText,
      skip: state?.records ?? 0,
      earlier,
      fresh: !state,
      retry,
      stopping: () => stopping,
      progress: (c) => progress.rows(c.tokenized + c.rejected, c.rejected, c.rowsIn, state?.records ?? 0),
      commit: sidecar
        ? async (c) => {
            await out.sync();
            await rejects.sync();
            await writeState(sidecar, { version: 1, job, ...c, complete: false, updatedAt: new Date().toISOString() });
          }
        : undefined,
    });
    const seconds = progress.stop();
    const c = outcome.counts;
    if (outcome.kind === "stopped" && outcome.error instanceof OutputClosed) return EXIT.ok;
    process.stderr.write(summaryLine({ rowsIn: c.rowsIn, tokenized: c.tokenized, rejected: c.rejected, seconds }) + "\n");
    const total = { tokenized: earlier.tokenized + c.tokenized, rejected: earlier.rejected + c.rejected };
    if (state) process.stderr.write(`import: whole import so far: ${total.tokenized} tokenized, ${total.rejected} rejected\n`);
    if (outcome.kind === "complete") {
      if (sidecar) await removeState(sidecar);
      if (total.rejected) {
        process.stderr.write(`import: ${total.rejected} rows rejected${o.rejects ? ` (see ${o.rejects})` : ""}; they are not in the output\n`);
        return EXIT.rejects;
      }
      return EXIT.ok;
    }
    if (outcome.kind === "interrupted") {
      process.stderr.write(sidecar ? `import: interrupted; resume with the same command and --resume\n` : "import: interrupted\n");
      return EXIT.interrupted;
    }
    const err = outcome.error;
    const resumable = err instanceof ImportStopped ? err.resumable : !(err instanceof UsageError);
    process.stderr.write(`fieldvault: import stopped: ${err instanceof ImportStopped || err instanceof UsageError ? err.message : (err as { details?: string }).details ?? err.message}\n`);
    if (sidecar) process.stderr.write(`import: everything before the stop is committed; ${resumable ? "resume" : "after fixing that, resume"} with the same command and --resume\n`);
    return resumable && sidecar ? EXIT.resumable : EXIT.failed;
  } finally {
    progress.stop();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    client.close();
    raw.destroy();
    await out.close();
    await rejects.close();
  }
}

/** `fieldvault import`: bring an existing CSV or JSON Lines file into the vault (DESIGN §16). */
export function registerImport(program: Command): void {
  addConnectOptions(
    program
      .command("import")
      .description("tokenize columns of a CSV or JSON Lines file through the vault; rows come out in order with tokens in place of values")
      .argument("<in>", "input file, or - for stdin")
      .argument("<out>", "output file, or - for stdout (not resumable)")
      .requiredOption("--map <COLUMN=CATEGORY>", "tokenize COLUMN as CATEGORY (repeatable)", collect, [])
      .option("--token-format <COLUMN=preserving>", "card_number only: a format-preserving token (repeatable)", collect, [])
      .option("--subject-column <column>", "column holding each row's data-subject reference (sent as subject_ref, left as is)")
      .option("--format <csv|jsonl>", "input format (default: from the file name)")
      .option("--rejects <file>", "write rejected rows' line, column and reason (never the value) to this CSV file; default stderr")
      .option("--resume", "continue an interrupted import into the same output")
      .option("--batch <rows>", "rows per Tokenize call (default: 500, or fewer so a call has at most 1000 fields)")
      .option("--concurrency <n>", "Tokenize calls in flight (default 4; 16 with --subject-column)")
      .option("--progress-every <seconds>", "not on a terminal: one progress line on stderr this often (default 5)")
      .option("--retries <n>", `attempts for a call the vault could not answer (UNAVAILABLE), with back-off (default ${DEFAULT_RETRY.attempts})`),
  ).action(async (input: string, output: string, o: ImportOptions) => {
    let code: number;
    try {
      code = await importCommand(input, output, o);
    } catch (err) {
      if (!(err instanceof UsageError)) throw err;
      process.stderr.write(`fieldvault import: ${err.message}\n`);
      code = EXIT.failed;
    }
    process.exitCode = code;
  });
}
