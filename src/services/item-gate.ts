import type { Tokenization } from "./tokenization";

/**
 * Admission by items: at most `limit` fields or tokens are being worked on at once, across calls.
 * A call that would pass the limit waits (first come, first served) before any of its work starts;
 * a call larger than the limit runs alone. Work on a CPU-bound process is no faster for starting
 * more of it at once, but everything it holds is live at once: without a gate, sixteen 1,000-item
 * calls keep 16,000 items' envelopes, log entries and statement text in the heap together
 * (docs/performance.md). The gate holds nothing but a count and a queue of waiters.
 */
export class ItemGate {
  private inUse = 0;
  private readonly waiting: { n: number; go: () => void }[] = [];

  constructor(private readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError("item gate limit must be a positive integer");
  }

  /** Items admitted and not yet released; calls waiting (for metrics and tests). */
  get state(): { inUse: number; waiting: number } {
    return { inUse: this.inUse, waiting: this.waiting.length };
  }

  async run<T>(items: number, work: () => Promise<T>): Promise<T> {
    const n = Math.max(1, items);
    if (this.waiting.length === 0 && this.fits(n)) this.inUse += n;
    else await new Promise<void>((go) => this.waiting.push({ n, go }));
    try {
      return await work();
    } finally {
      this.inUse -= n;
      this.admit();
    }
  }

  private fits(n: number): boolean {
    return this.inUse === 0 || this.inUse + n <= this.limit;
  }

  private admit(): void {
    while (this.waiting.length && this.fits(this.waiting[0]!.n)) {
      const next = this.waiting.shift()!;
      this.inUse += next.n;
      next.go();
    }
  }
}

/** Tokenize and Detokenize through the gate, counted by the items each call carries. */
export function gatedTokenization(gate: ItemGate, svc: Tokenization): Tokenization {
  return {
    ...svc,
    tokenize: (ctx, req) => gate.run(req.fields.length, () => svc.tokenize(ctx, req)),
    detokenize: (ctx, req) => gate.run(req.tokens.length, () => svc.detokenize(ctx, req)),
  };
}
