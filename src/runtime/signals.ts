import type { Logger } from "../observability/logger";

export interface SignalTargets {
  log: Logger;
  /** SIGHUP: re-read the policy file. */
  reload(): void;
  /** SIGTERM / SIGINT (and the death of the npm that started us): graceful stop, then exit. */
  stop(reason: string): void;
}

/**
 * Wires the process signals to the vault. Handlers stay installed for the process's life: under
 * `npm start` a Ctrl-C reaches the vault twice (from the terminal and forwarded by npm), and a
 * second signal must not fall through to Node's default (an immediate exit that skips the flush).
 *
 * `npm start` execs the vault, so npm's pid is its parent. npm 11 forwards only SIGINT and SIGTERM;
 * any other signal (SIGHUP included) kills npm and would leave the vault serving on its own. So,
 * when npm started us, a parent that goes away stops the vault too, saying where SIGHUP must go.
 */
export function installSignals(t: SignalTargets): void {
  process.on("SIGHUP", () => t.reload());
  process.on("SIGTERM", () => t.stop("SIGTERM"));
  process.on("SIGINT", () => t.stop("SIGINT"));

  const npmParent = process.env.npm_lifecycle_event === "start" ? process.ppid : undefined;
  t.log.info(
    { pid: process.pid, ...(npmParent ? { npmPid: npmParent } : {}) },
    npmParent
      ? `signals: SIGHUP to pid ${process.pid} reloads the policy; SIGTERM or SIGINT to it (or to npm, pid ${npmParent}) stops the vault`
      : `signals: SIGHUP to pid ${process.pid} reloads the policy; SIGTERM or SIGINT stops the vault`,
  );
  if (npmParent === undefined) return;
  const watch = setInterval(() => {
    if (process.ppid === npmParent) return;
    clearInterval(watch);
    t.log.warn(
      { npmPid: npmParent, pid: process.pid },
      `npm (pid ${npmParent}) exited without passing a signal on (npm forwards only SIGTERM and SIGINT); stopping so no vault is left ` +
        `serving without it. To reload the policy, send SIGHUP to the vault's own pid ${process.pid}`,
    );
    t.stop("npm exited");
  }, 250);
  watch.unref();
}
