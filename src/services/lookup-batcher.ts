/**
 * Merges the token lookups of concurrent calls into one query: ids asked for in the same turn of
 * the event loop are fetched together (`WHERE id = ANY($1)`), and each caller gets back only the
 * records it asked for. One query per wave of calls instead of one per call.
 */
export function batchLookups<R>(
  find: (ids: readonly string[]) => Promise<Map<string, R>>,
  maxIdsPerQuery = 5000,
): (ids: readonly string[]) => Promise<Map<string, R>> {
  interface Waiter {
    ids: readonly string[];
    resolve: (m: Map<string, R>) => void;
    reject: (err: unknown) => void;
  }
  let waiting: Waiter[] = [];
  let pendingIds = 0;
  let scheduled = false;

  const run = (batch: Waiter[]) => {
    const ids = [...new Set(batch.flatMap((w) => w.ids))];
    find(ids).then(
      (all) => {
        for (const w of batch) {
          const mine = new Map<string, R>();
          for (const id of w.ids) {
            const r = all.get(id);
            if (r !== undefined) mine.set(id, r);
          }
          w.resolve(mine);
        }
      },
      (err) => batch.forEach((w) => w.reject(err)),
    );
  };

  const drain = () => {
    scheduled = false;
    const batch = waiting;
    waiting = [];
    pendingIds = 0;
    run(batch);
  };

  return (ids) => {
    if (ids.length === 0) return Promise.resolve(new Map());
    return new Promise<Map<string, R>>((resolve, reject) => {
      if (pendingIds + ids.length > maxIdsPerQuery && waiting.length) {
        // This wave is big enough: send what is gathered now, start the next one.
        const batch = waiting;
        waiting = [];
        pendingIds = 0;
        run(batch);
      }
      waiting.push({ ids, resolve, reject });
      pendingIds += ids.length;
      if (!scheduled) {
        scheduled = true;
        setImmediate(drain);
      }
    });
  };
}
