import { KeyState, type KeyAdminServer } from "../../gen/fieldvault/v1/key_admin";
import type { KeyLifecycle } from "../../services/key-lifecycle";
import type { KeyState as DomainState } from "../../storage/postgres/key-store";
import { type CallHooks, serverStream, unary } from "./call";

const TO_WIRE: Record<DomainState, KeyState> = {
  active: KeyState.KEY_STATE_ACTIVE,
  decrypt_only: KeyState.KEY_STATE_DECRYPT_ONLY,
  disabled: KeyState.KEY_STATE_DISABLED,
  destroyed: KeyState.KEY_STATE_DESTROYED,
};
const FROM_WIRE: Partial<Record<KeyState, DomainState>> = Object.fromEntries(
  Object.entries(TO_WIRE).map(([k, v]) => [v, k as DomainState]),
);

/** KeyAdmin: decode → call the key lifecycle service → encode. No policy, SQL or crypto here. */
export function keyAdminHandlers(hooks: CallHooks, svc: KeyLifecycle): KeyAdminServer {
  return {
    listKeys: unary(hooks, "ListKeys", async (ctx, req) => ({
      categories: (await svc.listKeys(ctx, { category: req.category })).map((c) => ({
        category: c.category,
        activeVersion: c.activeVersion,
        cryptoperiodSeconds: c.cryptoperiodSeconds,
        versions: c.versions.map((v) => ({
          version: v.version,
          state: TO_WIRE[v.state],
          createdAt: v.createdAt,
          ageSeconds: v.ageSeconds,
          tokens: v.tokens,
          pastCryptoperiod: v.pastCryptoperiod,
        })),
      })),
    })),
    rotateKey: unary(hooks, "RotateKey", async (ctx, req) => {
      const r = await svc.rotate(ctx, { category: req.category });
      return { category: r.category, activeVersion: r.activeVersion };
    }),
    rewrap: serverStream(hooks, "Rewrap", async (ctx, req, write, cancelled) => {
      await svc.rewrap(ctx, { category: req.category, batchSize: req.batchSize }, (p) => write({ done: p.done, remaining: p.remaining }), cancelled);
    }),
    setKeyVersionState: unary(hooks, "SetKeyVersionState", async (ctx, req) => {
      const r = await svc.setState(ctx, { category: req.category, version: req.version, state: FROM_WIRE[req.state] ?? "" });
      return { category: r.category, version: r.version, state: TO_WIRE[r.state] };
    }),
    destroyKeyVersion: unary(hooks, "DestroyKeyVersion", async (ctx, req) =>
      svc.destroy(ctx, { category: req.category, version: req.version, approvalId: req.approvalId, cryptoShred: req.cryptoShred }),
    ),
    rotateRootKey: unary(hooks, "RotateRootKey", async (ctx, req) => svc.rotateRoot(ctx, { newRootKeyId: req.newRootKeyId })),
  };
}
