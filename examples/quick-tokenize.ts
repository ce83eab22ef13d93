/** Tokenize a card and reveal it for payment_authorization against a development vault. */
import { ChannelCredentials, Metadata } from "@grpc/grpc-js";
import { TokenServiceClient, type TokenizeResponse, type DetokenizeResponse } from "../src/gen/fieldvault/v1/token_service";

const address = process.env.FIELDVAULT_ADDRESS ?? "127.0.0.1:50051";
const client = new TokenServiceClient(address, ChannelCredentials.createInsecure());
const md = new Metadata();
md.set("x-fieldvault-caller", "payment-service");

async function main(): Promise<void> {
  const tok = await new Promise<TokenizeResponse>((res, rej) =>
    client.tokenize({ fields: [{ category: "card_number", value: "4111 1111 1111 1111" }], ttlSeconds: 0, subjectRef: "" }, md, (e, r) => (e ? rej(e) : res(r))),
  );
  const t = tok.tokens[0]!;
  console.log(`token ${t.token} (${t.masked?.display})`);
  const det = await new Promise<DetokenizeResponse>((res, rej) =>
    client.detokenize({ tokens: [t.token], purpose: "payment_authorization", justification: "quick start" }, md, (e, r) => (e ? rej(e) : res(r))),
  );
  const r = det.results[0]!;
  console.log(r.outcome?.$case === "value" ? `value ${r.outcome.value}` : `error ${JSON.stringify(r.outcome)}`);
  client.close();
}

main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
