import type { Server } from "@grpc/grpc-js";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";

/** The services whose status `grpc.health.v1.Health` reports ("" is the server as a whole). */
export const HEALTH_SERVICES = ["", "fieldvault.v1.TokenService", "fieldvault.v1.KeyAdmin", "fieldvault.v1.AccessLog"] as const;

export interface HealthProbeOptions {
  /** One check of the dependencies every service needs: resolves true when ready. */
  probe: () => Promise<boolean>;
  intervalMs: number;
  /** Called after every probe with its result (metrics, logs). */
  onResult?: (ready: boolean, err?: unknown) => void;
}

/**
 * gRPC health checking: every service answers SERVING only while the last probe (PostgreSQL
 * reachable and every migration applied) succeeded, NOT_SERVING otherwise and once shutdown began.
 */
export class Health {
  private readonly impl = new HealthImplementation(Object.fromEntries(HEALTH_SERVICES.map((s) => [s, "NOT_SERVING" as ServingStatus])));
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private current: ServingStatus = "NOT_SERVING";
  private running: Promise<void> | undefined;

  constructor(private readonly opts: HealthProbeOptions) {}

  addToServer(server: Server): void {
    this.impl.addToServer(server);
  }

  get status(): ServingStatus {
    return this.current;
  }

  /** Runs one probe now, then every `intervalMs`. */
  async start(): Promise<void> {
    await this.check();
    this.timer = setInterval(() => void this.check(), this.opts.intervalMs);
    this.timer.unref();
  }

  /** One probe; concurrent callers share it. */
  check(): Promise<void> {
    this.running ??= (async () => {
      let ready = false;
      let error: unknown;
      try {
        ready = await this.opts.probe();
      } catch (err) {
        error = err;
      }
      if (!this.stopped) this.set(ready ? "SERVING" : "NOT_SERVING");
      this.opts.onResult?.(ready, error);
    })().finally(() => (this.running = undefined));
    return this.running;
  }

  /** Shutdown: report NOT_SERVING from now on so load balancers drain this instance. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.set("NOT_SERVING");
  }

  private set(status: ServingStatus): void {
    if (status === this.current) return;
    this.current = status;
    for (const s of HEALTH_SERVICES) this.impl.setStatus(s, status);
  }
}

/** Resolves false if `p` has not settled after `ms` (a hung database must not hang the probe). */
export function within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout;
  const late = new Promise<T>((resolve) => (timer = setTimeout(() => resolve(fallback), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
