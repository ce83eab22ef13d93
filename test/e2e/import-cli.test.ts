import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parse } from "csv-parse/sync";
import { stringify } from "csv-stringify/sync";
import YAML from "yaml";
import { fromRoot } from "../../src/config/paths";
import { dropRedisPrefix } from "../helpers/backends";
import { tokenApi } from "../helpers/client";
import { withLuhn } from "../helpers/luhn";
import { startTestVault, type TestVault } from "../helpers/vault";

const MAIN = fromRoot("src", "cli", "main.ts");

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The real CLI in one node process (so a SIGKILL reaches the importer itself, not a wrapper). */
function start(args: string[], stdin?: string): { child: ChildProcess; done: Promise<Run>; stderr: () => string } {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], { cwd: fromRoot(), stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  if (stdin !== undefined) child.stdin!.end(stdin);
  else child.stdin!.end();
  const done = new Promise<Run>((resolve) => child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, done, stderr: () => stderr };
}
const cli = (args: string[], stdin?: string) => start(args, stdin).done;

const card = (i: number) => withLuhn(`4${String(i).padStart(14, "0")}`);
const expiry = (i: number) => `${String((i % 12) + 1).padStart(2, "0")}/${2030 + (i % 5)}`;
const MAP = ["--map", "name=cardholder_name", "--map", "pan=card_number", "--map", "exp=card_expiry"];

describe("fieldvault import (CLI) against a real vault on PostgreSQL and Redis", () => {
  jest.setTimeout(240_000);
  let t: TestVault;
  let dir: string;
  const as = (caller = "payment-service") => ["--address", t.vault.address, "--caller", caller];
  const file = (name: string) => path.join(dir, name);

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "fv-import-"));
    const policy = YAML.parse(readFileSync(fromRoot("policy", "default.yaml"), "utf8")) as { rate_limits: { detokenize_per_minute: number } };
    policy.rate_limits.detokenize_per_minute = 10_000_000;
    writeFileSync(file("policy.yaml"), YAML.stringify(policy));
    t = await startTestVault("postgres", { FIELDVAULT_POLICY_FILE: file("policy.yaml") });
  });
  afterAll(async () => {
    await t?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Every token reveals to the expected value (payment-service, payment_authorization). */
  async function reveal(tokens: string[]): Promise<string[]> {
    const api = tokenApi(t.clients, "payment-service");
    const out: string[] = [];
    for (let i = 0; i < tokens.length; i += 500) {
      const res = await api.detokenize({ tokens: tokens.slice(i, i + 500), purpose: "payment_authorization", justification: "import test", breakGlassId: undefined });
      for (const r of res.results) {
        if (r.outcome?.$case !== "value") throw new Error(`token did not reveal: ${JSON.stringify(r.outcome)}`);
        out.push(r.outcome.value);
      }
    }
    return out;
  }

  const countTokens = async (category: string) =>
    Number((await t.vault.db.query<{ n: string }>("SELECT count(*) AS n FROM tokens WHERE category = $1", [category])).rows[0]!.n);
  /** Fields the vault accepted in Tokenize calls, from the access log (detail "fields=N"). */
  const tokenizedFields = async () =>
    Number(
      (
        await t.vault.db.query<{ n: string | null }>(
          // One entry per token handed out (issue 10.7); every field of these files gets a token of its own.
          "SELECT count(*) AS n FROM access_log WHERE action = 'tokenize' AND outcome = 'ok' AND token <> ''",
          [],
        )
      ).rows[0]!.n ?? 0,
    );

  it("CSV round trip: tokens reveal the values, other cells and their quoting come out as they went in, rows in order", async () => {
    const header = ["id", "name", "pan", "exp", "note"];
    const rows = Array.from({ length: 60 }, (_, i) => [
      `r${i}`,
      i % 3 === 0 ? `Nguyễn, "Văn" ${i}` : `Name ${i}`,
      card(1000 + i),
      expiry(i),
      i % 4 === 0 ? `multi\nline, "quoted" ${i}` : i % 5 === 0 ? "" : `plain ${i}`,
    ]);
    writeFileSync(file("in.csv"), stringify([header, ...rows]));
    const r = await cli(["import", ...MAP, "--batch", "7", "--concurrency", "3", "--rejects", file("in.rejects.csv"), file("in.csv"), file("out.csv"), ...as()]);
    expect(r.stderr).toMatch(/import: 60 rows in, 60 tokenized, 0 rejected, [\d.]+s, \d+ rows\/s/);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("");
    expect(existsSync(file("out.csv.import-state.json"))).toBe(false); // a finished import leaves no sidecar

    const out = parse(readFileSync(file("out.csv"))) as string[][];
    expect(out[0]).toEqual(header);
    expect(out).toHaveLength(61);
    const body = out.slice(1);
    expect(body.map((c) => c[0])).toEqual(rows.map((c) => c[0])); // input order
    expect(body.map((c) => c[4])).toEqual(rows.map((c) => c[4])); // untouched column, embedded newlines and quotes included
    for (const c of body) for (const k of [1, 2, 3]) expect(c[k]).toMatch(/^tok_[0-9A-Za-z]+$/);
    for (const k of [1, 2, 3]) expect(await reveal(body.map((c) => c[k]!))).toEqual(rows.map((c) => c[k]));
    // Byte for byte: the output is the input with only the three values replaced.
    const expected = stringify([header, ...rows.map((c, i) => [c[0], body[i]![1], body[i]![2], body[i]![3], c[4]])]);
    expect(readFileSync(file("out.csv"), "utf8")).toBe(expected);
    expect(readFileSync(file("in.rejects.csv"), "utf8")).toBe("line,column,reason\n");
  });

  it("keeps CRLF line endings and leaves empty cells empty (not sent, not rejected)", async () => {
    writeFileSync(file("crlf.csv"), `id,name,pan,exp\r\na,Ann Lee,${card(7)},\r\nb,,${card(8)},01/2031\r\n`);
    const r = await cli(["import", ...MAP, file("crlf.csv"), file("crlf.out.csv"), ...as()]);
    expect(r.code).toBe(0);
    const text = readFileSync(file("crlf.out.csv"), "utf8");
    expect(text).toMatch(/^id,name,pan,exp\r\na,tok_\w+,tok_\w+,\r\nb,,tok_\w+,tok_\w+\r\n$/);
  });

  it("JSONL round trip: each value is replaced in place and every other byte of the line stays", async () => {
    const lines = Array.from({ length: 40 }, (_, i) => ({
      pre: `{"id": ${12345678901234567890n + BigInt(i)},  "name":`,
      name: `Zoë \\u00e9 ${i}`,
      mid: `, "nested": {"pan": "not me", "a": [1, 2.50, "x"]}, "pan":`,
      pan: card(5000 + i),
      post: `, "exp": null}`,
    }));
    const text = lines.map((l) => `${l.pre}"${l.name}"${l.mid}"${l.pan}"${l.post}\n`).join("");
    writeFileSync(file("in.jsonl"), text);
    const r = await cli(["import", ...MAP, "--batch", "9", file("in.jsonl"), file("out.jsonl"), ...as()]);
    expect(r.code).toBe(0);
    const outLines = readFileSync(file("out.jsonl"), "utf8").split("\n");
    expect(outLines.pop()).toBe("");
    expect(outLines).toHaveLength(40);
    const names: string[] = [];
    const pans: string[] = [];
    outLines.forEach((line, i) => {
      const m = /^(.*)"(tok_\w+)"(.*)"(tok_\w+)"(.*)$/.exec(line)!;
      expect(m).not.toBeNull();
      expect([m[1], m[3], m[5]]).toEqual([lines[i]!.pre, lines[i]!.mid, lines[i]!.post]);
      names.push(m[2]!);
      pans.push(m[4]!);
    });
    expect(await reveal(names)).toEqual(lines.map((_, i) => `Zoë é ${i}`));
    expect(await reveal(pans)).toEqual(lines.map((l) => l.pan));
  });

  it("sends bad rows to the rejects file by line, column and reason, never the value, and goes on", async () => {
    const before = await countTokens("cardholder_name");
    const bad = { luhn: "4111111111111112", expired: "01/2001", longName: "Q".repeat(201) };
    const csv =
      "id,name,pan,exp\n" +
      `1,Good One,${card(9001)},01/2031\n` +
      `2,Bad Luhn,${bad.luhn},01/2031\n` + // line 3
      `"3\nx",Third Row,${card(9002)},02/2031\n` + // lines 4-5
      `4,Expired,${card(9003)},${bad.expired}\n` + // line 6
      `5,${bad.longName},${card(9004)},03/2031\n` + // line 7
      `6,Too,Many,Fields,Here\n` + // line 8
      `7,Good Two,${card(9005)},04/2031\n`;
    writeFileSync(file("bad.csv"), csv);
    const r = await cli(["import", ...MAP, "--batch", "50", "--rejects", file("bad.rejects.csv"), file("bad.csv"), file("bad.out.csv"), ...as()]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/import: 7 rows in, 3 tokenized, 4 rejected/);
    const rejects = parse(readFileSync(file("bad.rejects.csv"))) as string[][];
    expect(rejects[0]).toEqual(["line", "column", "reason"]);
    expect(rejects.slice(1).map((x) => [x[0], x[1]])).toEqual([
      ["3", "pan"],
      ["6", "exp"],
      ["7", "name"],
      ["8", ""],
    ]);
    expect(rejects[1]![2]).toMatch(/^card_number: .*luhn/i);
    expect(rejects[2]![2]).toMatch(/^card_expiry: .*expired/i);
    expect(rejects[4]![2]).toBe("5 fields where the header has 4");
    const everything = readFileSync(file("bad.rejects.csv"), "utf8") + r.stderr + r.stdout;
    for (const v of Object.values(bad)) expect(everything).not.toContain(v);
    const out = parse(readFileSync(file("bad.out.csv"))) as string[][];
    expect(out.slice(1).map((c) => c[0])).toEqual(["1", "3\nx", "7"]);
    expect(await reveal(out.slice(1).map((c) => c[1]!))).toEqual(["Good One", "Third Row", "Good Two"]);
    // The refused calls stored nothing and no row was sent twice: one random token per good row.
    expect((await countTokens("cardholder_name")) - before).toBe(3);

    const jsonl = `{"name":"Ok A","pan":"${card(9100)}"}\n{"name":\n{"pan":"${card(9101)}"}\n{"name":42,"pan":"${card(9102)}"}\n{"name":"Ok B","pan":"${card(9103)}"}\n{"name":"Lone \\ud800","pan":"${card(9104)}"}\n`;
    writeFileSync(file("bad.jsonl"), jsonl);
    const j = await cli(["import", "--map", "name=cardholder_name", "--map", "pan=card_number", file("bad.jsonl"), file("bad.out.jsonl"), ...as()]);
    expect(j.code).toBe(2);
    expect(j.stderr).toContain("import: rejected line 2: not valid JSON");
    expect(j.stderr).toContain("import: rejected line 3, column name: missing column");
    expect(j.stderr).toContain("import: rejected line 4, column name: not a string (number)");
    expect(j.stderr).toContain("import: rejected line 6, column name: not valid UTF-8 text"); // a lone surrogate cannot be sent as is
    expect(j.stderr).not.toContain(card(9101));
    expect(readFileSync(file("bad.out.jsonl"), "utf8").trim().split("\n")).toHaveLength(2);
  });

  it("links each row's tokens to its --subject-column reference (one subject_ref per call), rows still in order", async () => {
    // Subjects interleave (a, b, a, c, …) so a chunk holds several groups that finish in any order.
    const rows = Array.from({ length: 25 }, (_, i) => [`s${i}`, `subj-${["a", "b", "c"][i % 3]}-${Math.floor(i / 9)}`, `Subject Row ${i}`, card(30_000 + i)]);
    writeFileSync(file("subj.csv"), stringify([["id", "who", "name", "pan"], ...rows]));
    const r = await cli(["import", "--map", "name=cardholder_name", "--map", "pan=card_number", "--subject-column", "who", "--batch", "10", file("subj.csv"), file("subj.out.csv"), ...as()]);
    expect(r.code).toBe(0);
    const out = (parse(readFileSync(file("subj.out.csv"))) as string[][]).slice(1);
    expect(out.map((c) => [c[0], c[1]])).toEqual(rows.map((c) => [c[0], c[1]])); // subject column left as is
    const links = await t.vault.db.query<{ subject_ref: string; token_id: string }>(
      "SELECT subject_ref, token_id FROM token_subjects WHERE subject_ref LIKE 'subj-%'",
      [],
    );
    const subjectOf = new Map(links.rows.map((l) => [l.token_id, l.subject_ref]));
    for (const c of out) {
      expect(subjectOf.get(c[2]!)).toBe(c[1]);
      expect(subjectOf.get(c[3]!)).toBe(c[1]);
    }
    expect(await reveal(out.map((c) => c[2]!))).toEqual(rows.map((c) => c[2]));
  });

  it("on Ctrl-C (SIGINT) finishes the calls in flight, writes them, and resumes without minting a token twice", async () => {
    const N = 10_000;
    const rows = Array.from({ length: N }, (_, i) => [`i${i}`, `Interrupted ${i}`]);
    writeFileSync(file("int.csv"), stringify([["id", "name"], ...rows]));
    const args = ["import", "--map", "name=cardholder_name", "--batch", "25", "--progress-every", "0.1", file("int.csv"), file("int.out.csv"), ...as()];
    const before = await countTokens("cardholder_name");
    const first = start(args);
    const sidecar = file("int.out.csv.import-state.json");
    const progressLine = /^import: \d+ rows \(\d+%\), \d+ rows\/s, 0 rejected, \d+s$/m;
    // Interrupt once rows are committed and a progress line has been written (not on a fixed
    // timer: a fast vault commits 500 rows before the first interval ends).
    while (!existsSync(sidecar) || (JSON.parse(readFileSync(sidecar, "utf8")) as { records: number }).records < 500 || !progressLine.test(first.stderr()))
      await new Promise((r) => setTimeout(r, 20));
    first.child.kill("SIGINT");
    const stopped = await first.done;
    expect(stopped.code).toBe(130);
    expect(stopped.stderr).toContain("interrupted; resume with the same command and --resume");
    const state = JSON.parse(readFileSync(sidecar, "utf8")) as { records: number };
    expect(state.records).toBeLessThan(N);
    // Not a terminal: plain progress lines on stderr, none on stdout.
    expect(stopped.stderr).toMatch(progressLine);
    expect(stopped.stdout).toBe("");
    // Nothing was left in flight: exactly the committed rows have tokens.
    expect((await countTokens("cardholder_name")) - before).toBe(state.records);
    const resumed = await cli([...args, "--resume"]);
    expect(resumed.code).toBe(0);
    const out = (parse(readFileSync(file("int.out.csv"))) as string[][]).slice(1);
    expect(out.map((c) => c[0])).toEqual(rows.map((c) => c[0]));
    expect((await countTokens("cardholder_name")) - before).toBe(N);
    expect(await reveal(out.map((c) => c[1]!))).toEqual(rows.map((c) => c[1]));
  });

  it("stops with a clear message when the caller may not tokenize a mapped category", async () => {
    writeFileSync(file("denied.csv"), `id,name\n1,Some One\n`);
    const r = await cli(["import", "--map", "name=cardholder_name", file("denied.csv"), file("denied.out.csv"), ...as("support-desk")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("fieldvault: import stopped: the vault refused the import:");
    expect(r.stderr).toContain("may not tokenize cardholder_name");
    const missing = await cli(["import", "--map", "nope=cardholder_name", file("denied.csv"), file("denied2.out.csv"), ...as()]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("fieldvault import: --map nope=cardholder_name: no column nope in the header");
    expect(existsSync(file("denied2.out.csv"))).toBe(false); // checked before any output is created
    writeFileSync(file("twice.csv"), `id,name,name\n1,A B,C D\n`);
    const twice = await cli(["import", "--map", "name=cardholder_name", file("twice.csv"), file("twice.out.csv"), ...as()]);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toContain("the header names name more than once");
    const tooBig = await cli(["import", "--map", "name=cardholder_name", "--batch", "1001", file("denied.csv"), file("denied3.out.csv"), ...as()]);
    expect(tooBig.code).toBe(0); // one row: the batch is only as large as the file
    const rows = stringify([["a", "b"], ...Array.from({ length: 600 }, (_, i) => [`A ${i}`, `B ${i}`])]);
    writeFileSync(file("wide.csv"), rows);
    const wide = await cli(["import", "--map", "a=cardholder_name", "--map", "b=cardholder_name", "--batch", "600", file("wide.csv"), file("wide.out.csv"), ...as()]);
    expect(wide.code).toBe(1);
    expect(wide.stderr).toContain("the vault refused a batch of 1200 fields (fields: at most 1000 items per call); use a smaller --batch");
  });

  it("the caller's deterministic tokenize budget paces the import (waits for the next minute, says why) and a batch larger than the budget stops at once", async () => {
    const policy = YAML.parse(readFileSync(file("policy.yaml"), "utf8")) as { rate_limits: Record<string, number> };
    policy.rate_limits.tokenize_deterministic_per_minute = 4;
    writeFileSync(file("budget-policy.yaml"), YAML.stringify(policy));
    const paced = await startTestVault("postgres", { FIELDVAULT_POLICY_FILE: file("budget-policy.yaml") });
    try {
      const cards = async () => Number((await paced.vault.db.query<{ n: string }>("SELECT count(*) AS n FROM tokens WHERE category = 'card_number'", [])).rows[0]!.n);
      const header = ["id", "pan"];
      const rows = Array.from({ length: 6 }, (_, i) => [`b${i}`, card(90_000 + i)]);
      writeFileSync(file("budget.csv"), stringify([header, ...rows]));
      const args = (input: string, out: string, ...options: string[]) =>
        ["import", "--map", "pan=card_number", ...options, file(input), file(out), "--address", paced.vault.address, "--caller", "payment-service"];

      // Batches of two, one at a time: two batches fit this minute's budget, the third waits for the next.
      // Start well inside a minute, so the first two share one window (the vault's window is the clock's minute).
      while (Date.now() % 60_000 > 45_000) await new Promise((r) => setTimeout(r, 250));
      const started = Date.now();
      const boundary = started - (started % 60_000) + 60_000;
      const r = await cli(args("budget.csv", "budget.out.csv", "--batch", "2", "--concurrency", "1"));
      expect(r.stderr).toContain("import: the caller's tokenize budget for card_number (4 a minute) is pacing this import");
      expect(r.stderr.split("is pacing this import").length).toBe(2); // said once
      expect(r.code).toBe(0);
      expect(Date.now()).toBeGreaterThanOrEqual(boundary); // it did wait for the next window
      const out = parse(readFileSync(file("budget.out.csv"))) as string[][];
      expect(out.slice(1).map((c) => c[0])).toEqual(rows.map((c) => c[0]));
      const api = tokenApi(paced.clients, "payment-service");
      const res = await api.detokenize({ tokens: out.slice(1).map((c) => c[1]!), purpose: "payment_authorization", justification: "budget test", breakGlassId: undefined });
      expect(res.results.map((x) => (x.outcome?.$case === "value" ? x.outcome.value : "?"))).toEqual(rows.map((c) => c[1]));
      expect(await cards()).toBe(6);

      // Six card numbers in one call against a budget of four a minute can never pass: no waiting.
      // (Last: the vault's refusal still takes what was left of this minute's budget.)
      writeFileSync(file("budget-big.csv"), stringify([header, ...Array.from({ length: 6 }, (_, i) => [`c${i}`, card(91_000 + i)])]));
      const tooBig = await cli(args("budget-big.csv", "budget-big.out.csv", "--batch", "6"));
      expect(tooBig.stderr).toContain("fieldvault: import stopped: a batch holds 6 card_number fields but the caller's tokenize budget is 4 a minute: use a --batch of fewer rows");
      expect(tooBig.code).toBe(1);
      expect(await cards()).toBe(6); // the refused call stored nothing
    } finally {
      await paced.stop();
    }
  });

  it("draws a progress bar (rows, rows/s, percentage, ETA) on a terminal", async () => {
    writeFileSync(file("tty.csv"), stringify([["id", "name"], ...Array.from({ length: 400 }, (_, i) => [String(i), `Terminal ${i}`])]));
    const quote = (a: string) => `'${a.replace(/'/g, "'\\''")}'`;
    const command = [process.execPath, "--import", "tsx", MAIN, "import", "--map", "name=cardholder_name", "--batch", "20", file("tty.csv"), file("tty.out.csv"), ...as()].map(quote).join(" ");
    // script(1) runs the CLI on a pseudo-terminal, so stderr is a TTY as in an operator's shell.
    const child = spawn("script", ["-qec", command, "/dev/null"], { cwd: fromRoot(), stdio: ["pipe", "pipe", "pipe"] });
    let seen = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (seen += d));
    const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
    expect(code).toBe(0);
    expect(seen).toMatch(/import \[[=-]+\] \d+% \| \d+ rows \| \d+ rows\/s \| 0 rejected \| ETA/);
    expect(seen).toContain("import: 400 rows in, 400 tokenized, 0 rejected");
    expect((parse(readFileSync(file("tty.out.csv"))) as string[][]).length).toBe(401);
  });

  it("reads stdin and writes stdout; stops quietly when the reader goes away (EPIPE)", async () => {
    const csv = stringify([["id", "name"], ...Array.from({ length: 30 }, (_, i) => [String(i), `Piped ${i}`])]);
    const r = await cli(["import", "--map", "name=cardholder_name", "--format", "csv", "-", "-", ...as()], csv);
    expect(r.code).toBe(0);
    const out = parse(r.stdout) as string[][];
    expect(out.map((c) => c[0])).toEqual(["id", ...Array.from({ length: 30 }, (_, i) => String(i))]);
    expect(await reveal(out.slice(1).map((c) => c[1]!))).toEqual(Array.from({ length: 30 }, (_, i) => `Piped ${i}`));
    expect(r.stderr).toMatch(/import: 30 rows in, 30 tokenized, 0 rejected/);

    const noResume = await cli(["import", "--map", "name=cardholder_name", "--resume", file("in.csv"), "-", ...as()]);
    expect(noResume.code).toBe(1);
    expect(noResume.stderr).toContain("cannot be resumed");

    // `… | head -n 2`: the reader closes after two lines.
    const big = stringify([["id", "name"], ...Array.from({ length: 3000 }, (_, i) => [String(i), `Head ${i}`])]);
    const { child, done } = start(["import", "--map", "name=cardholder_name", "--format", "csv", "--batch", "50", "-", "-", ...as()], big);
    let seen = "";
    child.stdout!.on("data", (d: string) => {
      seen += d;
      if (seen.split("\n").length > 2) child.stdout!.destroy();
    });
    const e = await done;
    expect(e.code).toBe(0);
    expect(e.stderr).not.toMatch(/EPIPE|Error|at .*\.ts/);
  });

  it("resumes after kill -9 mid-file: no gap, no duplicate, every token reveals, committed rows never sent again", async () => {
    const N = 6000;
    const header = ["id", "name", "pan", "exp"];
    const rows = Array.from({ length: N }, (_, i) => [`k${i}`, `Kill Nine ${i}`, card(200_000 + i), expiry(i)]);
    writeFileSync(file("kill.csv"), stringify([header, ...rows]));
    const args = ["import", ...MAP, "--batch", "50", "--concurrency", "4", "--rejects", file("kill.rejects.csv"), file("kill.csv"), file("kill.out.csv"), ...as()];
    const namesBefore = await countTokens("cardholder_name");
    const fieldsBefore = await tokenizedFields();

    const first = start(args);
    const sidecar = file("kill.out.csv.import-state.json");
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      const s = existsSync(sidecar) ? (JSON.parse(readFileSync(sidecar, "utf8")) as { records: number }) : undefined;
      if (s && s.records >= 1000) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    first.child.kill("SIGKILL");
    const killed = await first.done;
    expect(killed.signal).toBe("SIGKILL");
    const state = JSON.parse(readFileSync(sidecar, "utf8")) as { records: number; outputBytes: number };
    expect(state.records).toBeGreaterThanOrEqual(1000);
    expect(state.records).toBeLessThan(N); // killed mid-file
    expect(statSync(file("kill.out.csv")).size).toBeGreaterThanOrEqual(state.outputBytes);
    // Calls the killed importer had in flight may still complete on the server: wait until they have.
    let fieldsAtKill = await tokenizedFields();
    for (let settled = 0; settled < 10; ) {
      await new Promise((r) => setTimeout(r, 100));
      const now = await tokenizedFields();
      settled = now === fieldsAtKill ? settled + 1 : 0;
      fieldsAtKill = now;
    }

    const resumed = await cli([...args.slice(0, 1), "--resume", ...args.slice(1)]);
    expect(resumed.stderr).toMatch(new RegExp(`import: ${N - state.records} rows in, ${N - state.records} tokenized, 0 rejected`));
    expect(resumed.code).toBe(0);
    expect(existsSync(sidecar)).toBe(false);

    const out = parse(readFileSync(file("kill.out.csv"))) as string[][];
    expect(out[0]).toEqual(header);
    expect(out.slice(1).map((c) => c[0])).toEqual(rows.map((c) => c[0])); // no gap, no duplicate, in order
    const body = out.slice(1);
    expect(await reveal(body.map((c) => c[1]!))).toEqual(rows.map((c) => c[1]));
    expect(await reveal(body.map((c) => c[2]!))).toEqual(rows.map((c) => c[2]));
    expect(await reveal(body.map((c) => c[3]!))).toEqual(rows.map((c) => c[3]));

    // The resumed run sent exactly the rows the sidecar did not record: none of the committed ones.
    expect((await tokenizedFields()) - fieldsAtKill).toBe((N - state.records) * 3);
    // What the first run tokenized beyond the commit (calls in flight or answered but not yet
    // written when it was killed) is bounded by what may be in flight: 2 × concurrency batches.
    const extraFirstRun = (fieldsAtKill - fieldsBefore) / 3 - state.records;
    expect(extraFirstRun).toBeGreaterThanOrEqual(0);
    expect(extraFirstRun).toBeLessThanOrEqual(2 * 4 * 50);
    expect((await countTokens("cardholder_name")) - namesBefore).toBe(N + extraFirstRun);
  });

  it("stops cleanly when the vault goes away, and resumes against the restarted vault", async () => {
    const N = 4000;
    const header = ["id", "name"];
    const rows = Array.from({ length: N }, (_, i) => [`u${i}`, `Outage ${i}`]);
    writeFileSync(file("outage.csv"), stringify([header, ...rows]));
    const second = await startTestVault("postgres", { FIELDVAULT_POLICY_FILE: file("policy.yaml") });
    const base = ["import", "--map", "name=cardholder_name", "--batch", "20", "--concurrency", "2", "--retries", "3", file("outage.csv"), file("outage.out.csv"), "--caller", "payment-service"];
    const first = start([...base, "--address", second.vault.address]);
    const sidecar = file("outage.out.csv.import-state.json");
    while (!existsSync(sidecar) || (JSON.parse(readFileSync(sidecar, "utf8")) as { records: number }).records < 500) await new Promise((r) => setTimeout(r, 20));
    const db = second.db!;
    const prefix = second.redisPrefix!;
    second.clients.close();
    await second.vault.close(); // the vault stops; its database stays
    const stopped = await first.done;
    expect(stopped.stderr).toContain("fieldvault: import stopped: the vault stayed unavailable after 3 attempts");
    expect(stopped.stderr).toContain("resume with the same command and --resume");
    expect(stopped.code).toBe(3);

    const third = await startTestVault("postgres", { FIELDVAULT_POLICY_FILE: file("policy.yaml") }, { db, redisPrefix: prefix });
    try {
      const resumed = await cli([...base, "--resume", "--address", third.vault.address]);
      expect(resumed.code).toBe(0);
      const out = parse(readFileSync(file("outage.out.csv"))) as string[][];
      expect(out.slice(1).map((c) => c[0])).toEqual(rows.map((c) => c[0]));
      const api = tokenApi(third.clients, "payment-service");
      const res = await api.detokenize({ tokens: out.slice(1, 501).map((c) => c[1]!), purpose: "refund", justification: "outage test", breakGlassId: undefined });
      expect(res.results.map((x) => (x.outcome?.$case === "value" ? x.outcome.value : "?"))).toEqual(rows.slice(0, 500).map((c) => c[1]));
    } finally {
      await third.stop();
      await db.drop();
      await dropRedisPrefix(prefix);
    }
  });
});
