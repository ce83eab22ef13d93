import { chmodSync, lstatSync, mkdirSync, readdirSync } from "node:fs";
import path from "node:path";

/** Owner-only permissions for everything under `root`: folders 0700, files 0600 (symlinks untouched). */
export function restrictFolder(root: string): void {
  const st = lstatSync(root);
  if (st.isSymbolicLink()) return;
  if (st.isDirectory()) {
    if ((st.mode & 0o777) !== 0o700) chmodSync(root, 0o700);
    for (const name of readdirSync(root)) restrictFolder(path.join(root, name));
  } else if ((st.mode & 0o777) !== 0o600) {
    chmodSync(root, 0o600);
  }
}

/**
 * Makes the embedded data folder private to the vault's user: creates it 0700, tightens what an
 * earlier version left world-readable, and sets the process umask to 077 so files PGlite creates
 * are 0600. PGlite also sets modes itself (its initial cluster is unpacked with 0666, and files it
 * opens with fopen get 0644 from its own umask of 022), so call `restrictFolder` again once it has
 * started (its single backend writes those files at start-up).
 */
export function preparePrivateFolder(folder: string): void {
  process.umask(0o077);
  mkdirSync(folder, { recursive: true, mode: 0o700 });
  restrictFolder(folder);
}
