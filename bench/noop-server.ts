/**
 * (a) The floor for single calls: a TokenService on the same proto whose handlers answer at once,
 * with a response of the same shape (one item per field or token) and no work behind it.
 */
import { Server } from "@grpc/grpc-js";
import { type TokenServiceServer, TokenServiceService } from "../src/gen/fieldvault/v1/token_service";
import { benchServerCredentials } from "./lib/tls";

const TOKEN = "tok_000000000000000000000A";
const masked = { display: "B. H.", brand: "", last: "", expired: false };

const handlers: TokenServiceServer = {
  tokenize: (call, cb) =>
    cb(null, { tokens: call.request.fields.map((f) => ({ token: TOKEN, category: f.category, masked, expiresAt: undefined })) }),
  detokenize: (call, cb) =>
    cb(null, {
      results: call.request.tokens.map((t) => ({ token: t, category: "cardholder_name", outcome: { $case: "value" as const, value: "BENCH HOLDER" } })),
    }),
  inspectTokens: (_call, cb) => cb(null, { tokens: [] }),
  deleteTokens: (_call, cb) => cb(null, { deleted: 0 }),
  deleteSubject: (_call, cb) => cb(null, { erased: 0, unlinked: 0 }),
  requestBreakGlass: (_call, cb) => cb(null, { requestId: "", status: "" }),
  approveBreakGlass: (_call, cb) => cb(null, { requestId: "", status: "", expiresAt: undefined }),
};

// Channelz off as in the vault (src/app.ts), so the floor compares like with like.
const server = new Server({ "grpc.max_receive_message_length": 16 * 1024 * 1024, "grpc.enable_channelz": 0 });
server.addService(TokenServiceService, handlers);
server.bindAsync("127.0.0.1:0", benchServerCredentials(), (err, port) => {
  if (err) throw err;
  process.send?.({ ready: true, address: `127.0.0.1:${port}` });
});
process.on("disconnect", () => server.forceShutdown());
process.on("SIGTERM", () => {
  server.forceShutdown();
  process.exit(0);
});
