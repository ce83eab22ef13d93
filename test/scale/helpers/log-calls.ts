import { Metadata, type ServiceError } from "@grpc/grpc-js";
import type { LogEntry, QueryRequest, VerifyResponse } from "../../../src/gen/fieldvault/v1/access_log";
import { CALLER_HEADER } from "../../../src/transport/grpc/identity";
import type { Clients } from "../../helpers/client";

const md = (caller: string) => {
  const m = new Metadata();
  m.set(CALLER_HEADER, caller);
  return m;
};

/** AccessLog.Query as a stream: every entry, and the trailers the server ended with. */
export function queryLog(c: Clients, req: Partial<QueryRequest>, caller = "ir-analyst"): Promise<{ entries: LogEntry[]; trailers: Metadata }> {
  return new Promise((resolve, reject) => {
    const entries: LogEntry[] = [];
    const full: QueryRequest = { caller: "", token: "", category: "", purpose: "", outcome: "", since: undefined, until: undefined, pageSize: 0, pageToken: "", action: "", ...req };
    const stream = c.log.query(full, md(caller), { deadline: Date.now() + 15_000 });
    stream.on("data", (e: LogEntry) => entries.push(e));
    stream.on("error", reject);
    stream.on("status", (s: { code: number; metadata: Metadata }) => s.code === 0 && resolve({ entries, trailers: s.metadata }));
  });
}

export function verifyLog(c: Clients, caller = "ir-analyst"): Promise<VerifyResponse> {
  return new Promise((resolve, reject) =>
    c.log.verify({ since: undefined, until: undefined }, md(caller), { deadline: Date.now() + 30_000 }, (err: ServiceError | null, res: VerifyResponse) => (err ? reject(err) : resolve(res))),
  );
}
