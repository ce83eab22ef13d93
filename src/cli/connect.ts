import { readFileSync } from "node:fs";
import { ChannelCredentials, Metadata } from "@grpc/grpc-js";
import type { Command } from "commander";
import { CALLER_HEADER } from "../transport/grpc/identity";

/** Connection options every `fieldvault` command shares. The CLI is a client like any other caller. */
export interface ConnectOptions {
  address: string;
  cert?: string;
  key?: string;
  ca?: string;
  caller?: string;
}

export function addConnectOptions(cmd: Command): Command {
  return cmd
    .option("--address <host:port>", "vault address", process.env.FIELDVAULT_ADDRESS ?? "127.0.0.1:50051")
    .option("--cert <file>", "client certificate (PEM) for mutual TLS", process.env.FIELDVAULT_CLIENT_CERT)
    .option("--key <file>", "client private key (PEM)", process.env.FIELDVAULT_CLIENT_KEY)
    .option("--ca <file>", "CA certificate (PEM) that signed the server", process.env.FIELDVAULT_CLIENT_CA)
    .option("--caller <identity>", "development only: self-asserted identity over plaintext", process.env.FIELDVAULT_CALLER);
}

/** The connection the running command made (for explaining a failure to connect). */
let lastConnection: { address: string; tls: boolean } | undefined;
export const connectionInUse = () => lastConnection;

export function credentials(o: ConnectOptions): ChannelCredentials {
  lastConnection = { address: o.address, tls: !!(o.cert || o.key || o.ca) };
  if (o.cert || o.key || o.ca) {
    if (!o.cert || !o.key || !o.ca) throw new Error("--cert, --key and --ca must be given together");
    return ChannelCredentials.createSsl(readFileSync(o.ca), readFileSync(o.key), readFileSync(o.cert));
  }
  return ChannelCredentials.createInsecure();
}

export function metadata(o: ConnectOptions): Metadata {
  const md = new Metadata();
  if (o.caller && !o.cert) md.set(CALLER_HEADER, o.caller);
  return md;
}
