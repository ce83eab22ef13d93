import { linkSync, openSync, readFileSync, renameSync, unlinkSync, writeSync, closeSync } from "node:fs";
import path from "node:path";

/** The lock file's name inside the embedded data folder. Its content is the holder's pid. */
export const LOCK_FILE = "fieldvault.lock";

/** Another live process holds the folder: a second vault on it would silently lose data. */
export class FolderLockedError extends Error {
  constructor(
    readonly folder: string,
    readonly pid: number,
  ) {
    super(
      `the data folder ${folder} is in use by another fieldvault (pid ${pid}, lock file ${path.join(folder, LOCK_FILE)}); ` +
        `stop that vault first, or give this one its own folder with FIELDVAULT_DATA_DIR ` +
        `(if no fieldvault runs as pid ${pid}, the lock is left over: delete the lock file)`,
    );
    this.name = "FolderLockedError";
  }
}

export interface FolderLock {
  readonly file: string;
  /** Removes the lock file if this process still holds it. Idempotent. */
  release(): void;
}

/** Whether a process with this pid exists (EPERM: it exists but belongs to someone else). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function readOrUndefined(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** Creates the lock file only if none exists (O_EXCL); false if one does. */
function tryCreate(file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, "wx", 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  }
  try {
    writeSync(fd, `${process.pid}\n`);
  } finally {
    closeSync(fd);
  }
  return true;
}

/**
 * Moves a stale lock (content `seen`, from a dead pid) out of the way. The rename is atomic, so of
 * two processes taking over the same stale lock only one moves it; if what was moved is not the
 * stale lock any more (a live vault's fresh lock), it is put back.
 */
function removeStale(file: string, seen: string): void {
  const aside = `${file}.stale.${process.pid}`;
  try {
    renameSync(file, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return; // someone else moved it
    throw err;
  }
  const moved = readOrUndefined(aside);
  if (moved !== seen) {
    try {
      linkSync(aside, file); // restore the other process's lock; EEXIST: a newer one is there already
    } catch {
      /* the lock in place wins */
    }
  }
  unlinkSync(aside);
}

/**
 * Takes the embedded data folder for this process's life: a lock file made with O_EXCL holding our
 * pid. A lock left by a dead process (crash, SIGKILL) is taken over; a live holder is refused with
 * a FolderLockedError naming the folder and its pid.
 */
export function lockFolder(folder: string): FolderLock {
  const abs = path.resolve(folder);
  const file = path.join(abs, LOCK_FILE);
  for (let attempt = 0; attempt < 5; attempt++) {
    if (tryCreate(file)) {
      let held = true;
      const release = () => {
        if (!held) return;
        held = false;
        process.removeListener("exit", release);
        if (readOrUndefined(file)?.trim() === String(process.pid)) unlinkSync(file);
      };
      process.once("exit", release);
      return { file, release };
    }
    const seen = readOrUndefined(file);
    if (seen === undefined) continue; // released meanwhile
    const pid = Number.parseInt(seen.trim(), 10);
    if (Number.isSafeInteger(pid) && pid > 0 && alive(pid)) throw new FolderLockedError(abs, pid);
    removeStale(file, seen);
  }
  throw new Error(`could not take the lock file ${file}: it keeps changing (several vaults starting on one folder?)`);
}
