import { echoToken } from "../../crypto/tokens";
import type { MaskedView } from "../../domain/categories";
import type { TokenFormat as DomainTokenFormat } from "../../domain/token-formats";
import { TokenFormat, type TokenServiceServer } from "../../gen/fieldvault/v1/token_service";
import type { BreakGlass } from "../../services/break-glass";
import type { SubjectRights } from "../../services/subject-rights";
import type { Tokenization } from "../../services/tokenization";
import { type CallHooks, unary } from "./call";

/** The wire enum as the service's name for it; a number the contract does not define is "unknown" (refused there, and logged). */
function tokenFormat(f: TokenFormat | undefined): DomainTokenFormat | "unknown" {
  if (f === undefined || f === TokenFormat.TOKEN_FORMAT_UNSPECIFIED || f === TokenFormat.TOKEN_FORMAT_OPAQUE) return "opaque";
  if (f === TokenFormat.TOKEN_FORMAT_PRESERVING) return "preserving";
  return "unknown";
}

const masked = (m: MaskedView) => ({ display: m.display, brand: m.brand, last: m.last, expired: m.expired });

/** TokenService: decode → call the tokenization service → encode. No policy, SQL or crypto here. */
export function tokenServiceHandlers(
  hooks: CallHooks,
  svc: Tokenization,
  subjects: Pick<SubjectRights, "deleteSubject">,
  breakGlass: Pick<BreakGlass, "request" | "approve">,
): TokenServiceServer {
  return {
    tokenize: unary(hooks, "Tokenize", async (ctx, req) => {
      const fields = req.fields.map((f) => ({ category: f.category, value: f.value, tokenFormat: tokenFormat(f.tokenFormat) }));
      const out = await svc.tokenize(ctx, { fields, ttlSeconds: req.ttlSeconds, subjectRef: req.subjectRef });
      return {
        tokens: out.map((t) => ({ token: t.token, category: t.category, masked: masked(t.masked), expiresAt: t.expiresAt ?? undefined })),
      };
    }),
    detokenize: unary(hooks, "Detokenize", async (ctx, req) => {
      const out = await svc.detokenize(ctx, { tokens: req.tokens, purpose: req.purpose, justification: req.justification, breakGlassId: req.breakGlassId });
      return {
        results: out.map((r) => ({
          token: echoToken(r.token),
          category: r.category,
          outcome: r.ok
            ? { $case: "value" as const, value: r.value }
            : { $case: "error" as const, value: { code: r.code, message: r.message, retryAfterMs: Math.ceil(r.retryAfterMs ?? 0) } },
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
            : { token: echoToken(t.token), category: "", masked: undefined, createdAt: undefined, expiresAt: undefined, keyVersion: 0, error: { code: t.code, message: t.message, retryAfterMs: 0 } },
        ),
      };
    }),
    deleteTokens: unary(hooks, "DeleteTokens", async (ctx, req) => ({ deleted: await svc.erase(ctx, { tokens: req.tokens }) })),
    deleteSubject: unary(hooks, "DeleteSubject", async (ctx, req) => {
      const r = await subjects.deleteSubject(ctx, { subjectRef: req.subjectRef });
      const { statement, signature, keyId } = r.receipt;
      return { erased: r.erased, unlinked: r.unlinked, receipt: { statement: Buffer.from(statement), signature: Buffer.from(signature), keyId } };
    }),
    requestBreakGlass: unary(hooks, "RequestBreakGlass", (ctx, req) =>
      breakGlass.request(ctx, { categories: req.categories, purpose: req.purpose, justification: req.justification, durationSeconds: req.durationSeconds }),
    ),
    approveBreakGlass: unary(hooks, "ApproveBreakGlass", (ctx, req) => breakGlass.approve(ctx, { requestId: req.requestId })),
  };
}
