import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const made: string[] = [];

// Helpers make temp folders at collection or in hooks; every test file that imports this removes
// its own when it ends (a root-level afterAll runs after every describe's afterAll), so nothing —
// policy files, signing keys — is left in /tmp.
if (typeof afterAll === "function") {
  afterAll(() => {
    for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
}

/** A fresh folder under the OS temp dir, removed when the importing test file ends. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}
