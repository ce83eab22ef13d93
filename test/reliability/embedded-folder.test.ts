import { chmodSync, existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fromRoot } from "../../src/config/paths";
import { tokenApi } from "../helpers/client";
import { type ChildVault, runChildVaultToExit, startChildVault } from "./helpers/child-vault";

/** Every entry under `root` whose permission bits are not owner-only (0700 folders, 0600 files). */
function notPrivate(root: string): string[] {
  const bad: string[] = [];
  const walk = (p: string) => {
    const st = lstatSync(p);
    if (st.isSymbolicLink()) return;
    const mode = st.mode & 0o777;
    if (st.isDirectory()) {
      if (mode !== 0o700) bad.push(`${p} ${mode.toString(8)}`);
      for (const n of readdirSync(p)) walk(path.join(p, n));
    } else if (mode !== 0o600) bad.push(`${p} ${mode.toString(8)}`);
  };
  walk(root);
  return bad;
}

/**
 * The embedded store's data folder, with real vault processes: a second vault on the same folder
 * refuses to start (naming the folder and the holder's pid) instead of silently losing writes; a
 * lock left by a SIGKILLed vault is taken over; the folder is 0700 and its files 0600, even under a
 * umask of 022 and for files an earlier run left world-readable.
 */
describe("embedded data folder", () => {
  let dir: string;
  let dataDir: string;
  const children: ChildVault[] = [];
  const email = { fields: [{ category: "email", value: "folder@example.com" }], ttlSeconds: 0, subjectRef: "" };
  // Relative to the vault's working folder, as a user would write it; messages must show it absolute.
  const env = () => ({ FIELDVAULT_DATA_DIR: path.relative(fromRoot(), dataDir) });

  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), "fv-folder-"));
    dataDir = path.join(dir, "data");
  });
  afterAll(async () => {
    for (const c of children) await c.kill9();
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it("refuses a second vault, takes over a dead vault's lock, and keeps every file owner-only", async () => {
    expect(process.umask()).toBe(0o022); // the test proves the vault's own umask, not the runner's
    const first = await startChildVault(env());
    children.push(first);
    const lockFile = path.join(dataDir, "fieldvault.lock");
    expect(first.output.join("\n")).toContain(`storage: embedded PostgreSQL (PGlite) in ${dataDir}`);
    expect(readFileSync(lockFile, "utf8").trim()).toBe(String(first.proc.pid));
    const booking = tokenApi(first.clients, "booking-service");
    const { tokens } = await booking.tokenize(email);

    // A second vault on the same folder (its own port) must not start.
    const second = await runChildVaultToExit(env());
    expect(second.code).toBe(1);
    expect(second.output).toContain(`the data folder ${path.resolve(dataDir)} is in use by another fieldvault (pid ${first.proc.pid}`);
    expect(second.output).not.toContain("fieldvault listening");
    expect(readFileSync(lockFile, "utf8").trim()).toBe(String(first.proc.pid)); // the refused vault left the lock alone

    expect(notPrivate(dataDir)).toEqual([]);

    // SIGKILL leaves the lock behind; its pid is dead, so the next vault takes it over.
    await first.kill9();
    expect(existsSync(lockFile)).toBe(true);
    // Files left world-readable by an earlier version are tightened at start.
    const pgVersion = path.join(dataDir, "PG_VERSION");
    chmodSync(pgVersion, 0o666);
    chmodSync(dataDir, 0o755);
    writeFileSync(path.join(dataDir, "left-over.txt"), "x", { mode: 0o644 });

    const third = await startChildVault(env());
    children.push(third);
    expect(readFileSync(lockFile, "utf8").trim()).toBe(String(third.proc.pid));
    expect(third.output.join("\n")).not.toContain("in use by another fieldvault");
    expect(notPrivate(dataDir)).toEqual([]);
    // The data written by the first vault is there (nothing was lost to a second writer).
    const revealed = await tokenApi(third.clients, "support-desk").detokenize({ tokens: [tokens[0]!.token], purpose: "customer_support", justification: "ticket 7" });
    expect(revealed.results[0]!.outcome).toEqual({ $case: "value", value: "folder@example.com" });

    // A graceful stop releases the lock.
    await third.stop();
    expect(third.proc.exitCode).toBe(0);
    expect(existsSync(lockFile)).toBe(false);
  }, 240_000);
});
