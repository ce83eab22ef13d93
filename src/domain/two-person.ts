import { denied } from "./errors";
import type { Policy } from "./policy";

/**
 * Two-person rules compare policy callers, never identity strings: `spiffe://ego/sec-admin-1`,
 * a CN-only certificate `sec-admin-1` and the development header `sec-admin-1` are one caller
 * (DESIGN §15; Vault Control Groups compare principals, not credentials).
 */
export function policyCaller(policy: Pick<Policy, "callerName">, identity: string): string {
  const name = policy.callerName(identity);
  if (name === undefined) throw denied(`caller ${identity} is not in the policy`);
  return name;
}

/** Refuses when the approver is the same policy caller as the requester. */
export function requireSecondCaller(requesterCaller: string, approverCaller: string, refusal: string): void {
  if (requesterCaller === approverCaller) throw denied(refusal);
}
