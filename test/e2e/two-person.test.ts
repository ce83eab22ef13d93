import { status } from "@grpc/grpc-js";
import { clients, type Clients, codeOf } from "../helpers/client";
import { keyApi } from "../helpers/key-admin";
import { issueClientCertificate, TLS_ENV } from "../helpers/tls";
import { startTestVault, type TestVault } from "../helpers/vault";

/**
 * Issue 10.4: two-person rules compare policy callers, not identity strings. An attacker holding
 * two credentials of one policy caller (a SPIFFE certificate and a CN-only certificate, or two
 * spellings of the development header) must not count as two people.
 */
describe("two-person key destruction compares policy callers (mutual TLS, postgres)", () => {
  let t: TestVault;
  const certs: ReturnType<typeof issueClientCertificate>[] = [];
  const open: Clients[] = [];
  const asCert = (name: string, uri?: string | null) => {
    const c = issueClientCertificate(name, { uri });
    certs.push(c);
    const cl = clients(t.vault.address, c.credentials);
    open.push(cl);
    return keyApi(cl, undefined);
  };

  beforeAll(async () => {
    t = await startTestVault("postgres", TLS_ENV);
  });
  afterAll(async () => {
    for (const c of open) c.close();
    await t?.stop();
    for (const c of certs) c.cleanup();
  });

  it("refuses a CN-only certificate of the caller that filed the request with a SPIFFE certificate; a second caller approves", async () => {
    const spiffe = asCert("sec-admin-1"); // URI SAN spiffe://ego/sec-admin-1
    const cnOnly = asCert("sec-admin-1", null); // CN=sec-admin-1, no SAN
    const second = asCert("sec-admin-2");
    await spiffe.rotate("card_expiry");
    const req = await spiffe.destroy({ category: "card_expiry", version: 1 });
    expect(req.approvalId).toMatch(/^dr_/);

    const refused = await codeOf(cnOnly.destroy({ category: "card_expiry", version: 1, approvalId: req.approvalId }));
    expect(refused.code).toBe(status.PERMISSION_DENIED);
    expect(refused.details).toContain("second key administrator");

    const { rows } = await t.vault.db.query<{ requested_by: string; requester_caller: string; approved_by: string | null }>(
      "SELECT requested_by, requester_caller, approved_by FROM destroy_requests WHERE id = $1",
      [req.approvalId],
    );
    expect(rows[0]).toEqual({ requested_by: "spiffe://ego/sec-admin-1", requester_caller: "sec-admin-1", approved_by: null });
    const denials = await t.vault.db.query<{ caller: string; outcome: string }>(
      "SELECT caller, outcome FROM access_log WHERE action = 'key_destroy' AND outcome = 'denied'",
      [],
    );
    expect(denials.rows).toEqual([{ caller: "sec-admin-1", outcome: "denied" }]);

    const done = await second.destroy({ category: "card_expiry", version: 1, approvalId: req.approvalId });
    expect(done.status).toBe("DESTROYED");
    const after = await t.vault.db.query<{ approver_caller: string }>("SELECT approver_caller FROM destroy_requests WHERE id = $1", [req.approvalId]);
    expect(after.rows[0]!.approver_caller).toBe("sec-admin-2");
  });
});

describe("two-person key destruction compares policy callers (development header, embedded)", () => {
  let t: TestVault;
  beforeAll(async () => {
    t = await startTestVault("embedded");
  });
  afterAll(async () => t?.stop());

  it("refuses the header sec-admin-1 approving what spiffe://ego/sec-admin-1 filed", async () => {
    const filer = keyApi(t.clients, "spiffe://ego/sec-admin-1");
    await filer.rotate("card_expiry");
    const req = await filer.destroy({ category: "card_expiry", version: 1 });
    const refused = await codeOf(keyApi(t.clients, "sec-admin-1").destroy({ category: "card_expiry", version: 1, approvalId: req.approvalId }));
    expect(refused.code).toBe(status.PERMISSION_DENIED);
    const done = await keyApi(t.clients, "spiffe://ego/sec-admin-2").destroy({ category: "card_expiry", version: 1, approvalId: req.approvalId });
    expect(done.status).toBe("DESTROYED");
  });
});
