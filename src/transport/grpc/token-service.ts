import { echoToken } from "../../crypto/tokens";
import type { MaskedView } from "../../domain/categories";
import { VaultError } from "../../domain/errors";
import type { TokenServiceServer } from "../../gen/fieldvault/v1/token_service";
import type { Tokenization } from "../../services/tokenization";
import { type CallHooks, unary } from "./call";

const masked = (m: MaskedView) => ({ display: m.display, brand: m.brand, last: m.last, expired: m.expired });

/** TokenService: decode → call the tokenization service → encode. No policy, SQL or crypto here. */
export function tokenServiceHandlers(hooks: CallHooks, svc: Tokenization): TokenServiceServer {
  return {
    tokenize: unary(hooks, "Tokenize", async (ctx, req) => {
      const out = await svc.tokenize(ctx, { fields: req.fields, ttlSeconds: req.ttlSeconds, subjectRef: req.subjectRef });
      return {
        tokens: out.map((t) => ({ token: t.token, category: t.category, masked: masked(t.masked), expiresAt: t.expiresAt ?? undefined })),
      };
    }),
    detokenize: unary(hooks, "Detokenize", async (ctx, req) => {
      const out = await svc.detokenize(ctx, { tokens: req.tokens, purpose: req.purpose, justification: req.justification });
      return {
        results: out.map((r) => ({
          token: echoToken(r.token),
          category: r.category,
          outcome: r.ok
            ? { $case: "value" as const, value: r.value }
            : { $case: "error" as const, value: { code: r.code, message: r.message } },
        })),
      };
    }),
    inspectTokens: unary(hooks, "InspectTokens", async (ctx, req) => {
      const out = await svc.inspect(ctx, { tokens: req.tokens });
      return {
        tokens: out.map((t) =>
          t.ok
            ? {
                token: t.token,
                category: t.category,
                masked: masked(t.masked),
                createdAt: t.createdAt,
                expiresAt: t.expiresAt ?? undefined,
                keyVersion: t.keyVersion,
                error: undefined,
              }
            : { token: echoToken(t.token), category: "", masked: undefined, createdAt: undefined, expiresAt: undefined, keyVersion: 0, error: { code: t.code, message: t.message } },
        ),
      };
    }),
    deleteTokens: unary(hooks, "DeleteTokens", async (ctx, req) => ({ deleted: await svc.erase(ctx, { tokens: req.tokens }) })),
    deleteSubject: unary(hooks, "DeleteSubject", async (ctx, req) => svc.eraseSubject(ctx, { subjectRef: req.subjectRef })),
    // Break-glass (DESIGN §15) is being built in services/break-glass.ts; until then it is refused.
    requestBreakGlass: unary(hooks, "RequestBreakGlass", async () => {
      throw new VaultError("UNIMPLEMENTED", "break-glass is not available yet");
    }),
    approveBreakGlass: unary(hooks, "ApproveBreakGlass", async () => {
      throw new VaultError("UNIMPLEMENTED", "break-glass is not available yet");
    }),
  };
}
