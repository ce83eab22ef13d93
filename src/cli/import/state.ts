import { open, readFile, rename, rm } from "node:fs/promises";

/**
 * The sidecar `OUT.import-state.json`: how far an import got. It is rewritten (temporary file,
 * fsync, rename) only after the output and rejects files are fsync'd up to `outputBytes` and
 * `rejectsBytes`, so whatever it says is on disk. `--resume` cuts both files back to those
 * offsets and skips `records` input records. (The rename is not followed by a directory fsync: after
 * a power cut the previous state may come back, which is older but just as consistent.)
 */
export interface ImportState {
  version: 1;
  /** What was being imported: a resume with anything else is refused. */
  job: {
    input: string;
    inputSize: number | null;
    format: string;
    map: string[];
    subjectColumn: string | null;
    rejects: string | null;
  };
  /** Input records accounted for: written to the output, or rejected. */
  records: number;
  outputBytes: number;
  rejectsBytes: number;
  tokenized: number;
  rejected: number;
  /** Set when the import reached the end of its input. */
  complete: boolean;
  updatedAt: string;
}

export const statePath = (out: string) => `${out}.import-state.json`;

export async function readState(path: string): Promise<ImportState | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const s = JSON.parse(text) as ImportState;
  if (s.version !== 1 || !Number.isInteger(s.records) || !Number.isInteger(s.outputBytes)) throw new Error(`${path}: not an import state file`);
  return s;
}

export async function writeState(path: string, state: ImportState): Promise<void> {
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, "w");
  try {
    await fh.writeFile(JSON.stringify(state, null, 2) + "\n");
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

export const removeState = (path: string) => rm(path, { force: true });
