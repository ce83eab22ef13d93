import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import YAML from "yaml";
import { tempDir } from "./temp";
import type {
  DestroyKeyVersionResponse,
  ListKeysResponse,
  RewrapProgress,
  RewrapRequest,
  RotateKeyResponse,
  RotateRootKeyResponse,
  SetKeyVersionStateResponse,
} from "../../src/gen/fieldvault/v1/key_admin";
import { fromRoot } from "../../src/config/paths";
import { CALLER_HEADER } from "../../src/transport/grpc/identity";
import { call, type Clients } from "./client";

export interface RewrapRun {
  messages: RewrapProgress[];
  /** OK, or CANCELLED when the client cancelled it. */
  code: number;
}

/** KeyAdmin calls as one identity (development caller header). */
export function keyApi(c: Clients, caller: string | undefined) {
  const k = c.keys;
  return {
    list: (category = "") => call(k, k.listKeys as never, caller, { category }) as Promise<ListKeysResponse>,
    rotate: (category: string) => call(k, k.rotateKey as never, caller, { category }) as Promise<RotateKeyResponse>,
    setState: (category: string, version: number, state: number) =>
      call(k, k.setKeyVersionState as never, caller, { category, version, state }) as Promise<SetKeyVersionStateResponse>,
    destroy: (req: { category: string; version: number; approvalId?: string; cryptoShred?: boolean }) =>
      call(k, k.destroyKeyVersion as never, caller, {
        category: req.category,
        version: req.version,
        approvalId: req.approvalId ?? "",
        cryptoShred: req.cryptoShred ?? false,
      }) as Promise<DestroyKeyVersionResponse>,
    rotateRoot: (newRootKeyId: string) => call(k, k.rotateRootKey as never, caller, { newRootKeyId }) as Promise<RotateRootKeyResponse>,
    /** Runs a Rewrap stream to its end; `onMessage` may return true to cancel it there. */
    rewrap: (req: RewrapRequest, onMessage?: (p: RewrapProgress, n: number) => boolean | void) =>
      new Promise<RewrapRun>((resolve, reject) => {
        const md = new Metadata();
        if (caller) md.set(CALLER_HEADER, caller);
        const messages: RewrapProgress[] = [];
        const stream = k.rewrap(req, md);
        let cancelled = false;
        stream.on("data", (p: RewrapProgress) => {
          messages.push(p);
          if (!cancelled && onMessage?.(p, messages.length)) {
            cancelled = true;
            stream.cancel();
          }
        });
        stream.on("error", (err: ServiceError) => (err.code === status.CANCELLED && cancelled ? resolve({ messages, code: err.code }) : reject(err)));
        stream.on("end", () => resolve({ messages, code: status.OK }));
      }),
  };
}

/** The default policy with a detokenize budget large enough for bulk checks. */
export function bulkPolicyFile(): string {
  const doc = YAML.parse(readFileSync(fromRoot("policy", "default.yaml"), "utf8")) as { rate_limits: { detokenize_per_minute: number } };
  doc.rate_limits.detokenize_per_minute = 10_000_000;
  const file = path.join(tempDir("fv-policy-"), "policy.yaml");
  writeFileSync(file, YAML.stringify(doc));
  return file;
}

/** Polls `check` until it returns true or `ms` pass; returns whether it did. */
export async function eventually(check: () => Promise<boolean> | boolean, ms: number, everyMs = 20): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= end) return false;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
