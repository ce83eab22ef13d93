import type { Metadata, ServiceError } from "@grpc/grpc-js";
import type { Command } from "commander";
import {
  type DestroyKeyVersionRequest,
  type DestroyKeyVersionResponse,
  KeyAdminClient,
  KeyState,
  keyStateToJSON,
  type ListKeysRequest,
  type ListKeysResponse,
  type RewrapProgress,
  type RotateKeyRequest,
  type RotateKeyResponse,
  type RotateRootKeyRequest,
  type RotateRootKeyResponse,
  type SetKeyVersionStateRequest,
  type SetKeyVersionStateResponse,
} from "../gen/fieldvault/v1/key_admin";
import { readFileSync } from "node:fs";
import { rootKeyId } from "../crypto/root-key";
import { readySodium, sodium } from "../crypto/sodium";
import { addConnectOptions, type ConnectOptions, credentials, metadata } from "./connect";

type Unary<Req, Res> = (req: Req, md: Metadata, cb: (err: ServiceError | null, res: Res) => void) => unknown;

function connect(o: ConnectOptions): { client: KeyAdminClient; md: Metadata } {
  return { client: new KeyAdminClient(o.address, credentials(o)), md: metadata(o) };
}

async function unary<Req, Res>(o: ConnectOptions, pick: (c: KeyAdminClient) => unknown, req: Req): Promise<Res> {
  const { client, md } = connect(o);
  try {
    const method = pick(client) as Unary<Req, Res>;
    return await new Promise<Res>((resolve, reject) => method.call(client, req, md, (err, res) => (err ? reject(err) : resolve(res))));
  } finally {
    client.close();
  }
}

const out = (line = "") => process.stdout.write(line + "\n");
const stateName = (s: KeyState) => keyStateToJSON(s).replace("KEY_STATE_", "").toLowerCase();

function version(v: string): number {
  const n = Number(v.replace(/^v/, ""));
  if (!Number.isInteger(n) || n < 1) throw new Error(`not a key version: ${v}`);
  return n;
}

function age(seconds: number): string {
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
}

function printKeys(res: ListKeysResponse): void {
  const rows = [["CATEGORY", "VERSION", "STATE", "CREATED", "AGE", "TOKENS", "CRYPTOPERIOD"]];
  const overdue: string[] = [];
  for (const c of res.categories) {
    for (const v of c.versions) {
      if (v.pastCryptoperiod) overdue.push(`${c.category} v${v.version}`);
      rows.push([
        c.category,
        `v${v.version}`,
        stateName(v.state),
        v.createdAt ? v.createdAt.toISOString().slice(0, 19) + "Z" : "",
        age(v.ageSeconds),
        String(v.tokens),
        v.pastCryptoperiod ? `PAST (${age(c.cryptoperiodSeconds)})` : v.state === KeyState.KEY_STATE_ACTIVE ? `ok (${age(c.cryptoperiodSeconds)})` : "",
      ]);
    }
  }
  for (const line of table(rows)) out(line);
  if (overdue.length) out(`\n${overdue.length} active version(s) past their cryptoperiod: ${overdue.join(", ")} — run: fieldvault keys rotate <category>`);
}

/** A progress line: a bar on a terminal (redrawn with \r), plain lines at most once a second otherwise. */
function progressPrinter(stream: NodeJS.WriteStream) {
  const started = performance.now();
  let lastPlain = 0;
  let drew = false;
  const render = (p: RewrapProgress) => {
    const total = p.done + p.remaining;
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0 ? Math.round(p.done / seconds) : 0;
    const pct = total ? Math.floor((p.done / total) * 100) : 100;
    return { total, seconds, rate, pct };
  };
  return {
    update(p: RewrapProgress) {
      const r = render(p);
      if (stream.isTTY) {
        const width = 30;
        const filled = Math.round((r.pct / 100) * width);
        stream.write(`\r[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${String(r.pct).padStart(3)}%  ${p.done}/${r.total}  ${r.rate}/s   `);
        drew = true;
      } else if (performance.now() - lastPlain >= 1000 || p.remaining === 0) {
        lastPlain = performance.now();
        stream.write(`rewrap: ${p.done}/${r.total} (${r.pct}%) ${r.rate}/s\n`);
      }
    },
    finish(p: RewrapProgress) {
      const r = render(p);
      if (drew) stream.write("\n");
      return r;
    },
  };
}

/** `fieldvault keys …`: the security engineer's key lifecycle commands (KeyAdmin over gRPC). */
export function registerKeys(program: Command): void {
  const keys = program.command("keys").description("key lifecycle: list, rotate, rewrap, retire, destroy, rotate the root key");

  addConnectOptions(
    keys
      .command("list")
      .argument("[category]", "only this category")
      .option("--json", "print the response as JSON")
      .description("each category's key versions: state, age, tokens still under them, cryptoperiod"),
  ).action(async (category: string | undefined, o: ConnectOptions & { json?: boolean }) => {
    const res = await unary<ListKeysRequest, ListKeysResponse>(o, (c) => c.listKeys, { category: category ?? "" });
    if (o.json) out(JSON.stringify(res, null, 2));
    else printKeys(res);
  });

  addConnectOptions(
    keys.command("rotate").argument("<category>").description("append a new active version; the old one becomes decrypt_only"),
  ).action(async (category: string, o: ConnectOptions) => {
    const res = await unary<RotateKeyRequest, RotateKeyResponse>(o, (c) => c.rotateKey, { category });
    out(`${res.category}: active version is now v${res.activeVersion} (v${res.activeVersion - 1} is decrypt_only)`);
    out(`next: fieldvault keys rewrap ${res.category}`);
  });

  addConnectOptions(
    keys
      .command("rewrap")
      .argument("<category>")
      .option("--batch-size <n>", "tokens per transaction (default 500)", (v) => Number(v))
      .description("re-wrap data keys from older versions onto the active one (values are not re-encrypted)"),
  ).action(async (category: string, o: ConnectOptions & { batchSize?: number }) => {
    const { client, md } = connect(o);
    const bar = progressPrinter(process.stderr);
    let last: RewrapProgress = { done: 0, remaining: 0 };
    try {
      await new Promise<void>((resolve, reject) => {
        const stream = client.rewrap({ category, batchSize: o.batchSize ?? 0 }, md);
        stream.on("data", (p: RewrapProgress) => {
          last = p;
          bar.update(p);
        });
        stream.on("error", reject);
        stream.on("end", () => resolve());
        process.once("SIGINT", () => stream.cancel());
      });
    } finally {
      client.close();
    }
    const r = bar.finish(last);
    out(`${category}: rewrapped ${last.done} data keys in ${r.seconds.toFixed(1)}s (${r.rate}/s); ${last.remaining} remaining`);
    if (last.remaining > 0) out("the run stopped early; run the same command again to finish");
  });

  addConnectOptions(
    keys
      .command("state")
      .argument("<category>")
      .argument("<version>")
      .argument("<state>", "decrypt_only | disabled | enabled (= decrypt_only)")
      .description("retire (disabled) or re-enable (decrypt_only) a non-active version"),
  ).action(async (category: string, v: string, state: string, o: ConnectOptions) => {
    const target =
      state === "disabled" ? KeyState.KEY_STATE_DISABLED : state === "decrypt_only" || state === "enabled" ? KeyState.KEY_STATE_DECRYPT_ONLY : undefined;
    if (target === undefined) throw new Error(`state must be decrypt_only, disabled or enabled, not ${state}`);
    const res = await unary<SetKeyVersionStateRequest, SetKeyVersionStateResponse>(o, (c) => c.setKeyVersionState, { category, version: version(v), state: target });
    out(`${res.category} v${res.version}: ${stateName(res.state)}`);
  });

  addConnectOptions(
    keys
      .command("destroy")
      .argument("<category>")
      .argument("<version>")
      .option("--crypto-shred", "destroy even though tokens remain: their values become unrecoverable")
      .description("file a request to destroy a version's key material (a second administrator approves)"),
  ).action(async (category: string, v: string, o: ConnectOptions & { cryptoShred?: boolean }) => {
    const n = version(v);
    const res = await unary<DestroyKeyVersionRequest, DestroyKeyVersionResponse>(o, (c) => c.destroyKeyVersion, { category, version: n, approvalId: "", cryptoShred: !!o.cryptoShred });
    out(`${res.status}: destroy ${category} v${n}${o.cryptoShred ? " (crypto-shred)" : ""} — approval id ${res.approvalId}`);
    out(`a different key administrator runs: fieldvault keys approve ${category} ${n} ${res.approvalId}${o.cryptoShred ? " --crypto-shred" : ""}`);
  });

  addConnectOptions(
    keys
      .command("approve")
      .argument("<category>")
      .argument("<version>")
      .argument("<approval-id>")
      .option("--crypto-shred", "must match the request")
      .description("approve another administrator's destroy request: the key material is deleted"),
  ).action(async (category: string, v: string, approvalId: string, o: ConnectOptions & { cryptoShred?: boolean }) => {
    const n = version(v);
    const res = await unary<DestroyKeyVersionRequest, DestroyKeyVersionResponse>(o, (c) => c.destroyKeyVersion, { category, version: n, approvalId, cryptoShred: !!o.cryptoShred });
    out(`${res.status}: ${category} v${n}${res.tokensShredded ? ` (${res.tokensShredded} token(s) crypto-shredded)` : ""}`);
  });

  keys
    .command("root-key-id")
    .argument("[file]", "a root key file (base64); omit to read FIELDVAULT_ROOT_KEY")
    .description("print the id of a root key (offline; the id reveals nothing about the key)")
    .action(async (file: string | undefined) => {
      await readySodium();
      const texts = file ? [readFileSync(file, "utf8")] : (process.env.FIELDVAULT_ROOT_KEY ?? "").split(",").filter(Boolean);
      if (texts.length === 0) throw new Error("give a key file or set FIELDVAULT_ROOT_KEY");
      for (const t of texts) out(rootKeyId(sodium.from_base64(t.trim(), sodium.base64_variants.ORIGINAL)));
    });

  addConnectOptions(
    keys
      .command("rotate-root")
      .argument("<new-root-key-id>", "id of a root key every instance already loads (rk_…)")
      .description("re-wrap every key version and vault secret under another root key"),
  ).action(async (id: string, o: ConnectOptions) => {
    const res = await unary<RotateRootKeyRequest, RotateRootKeyResponse>(o, (c) => c.rotateRootKey, { newRootKeyId: id });
    out(`root key is now ${res.rootKeyId}: ${res.keksRewrapped} key version(s) re-wrapped`);
    out("the previous root key is no longer needed once every instance runs with the new one");
  });
}
