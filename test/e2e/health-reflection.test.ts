import path from "node:path";
import { ChannelCredentials, credentials as grpcCredentials, loadPackageDefinition, status, type Client, type ServiceError } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import pg from "pg";
import { PG_ADMIN_URL } from "../helpers/backends";
import { BACKENDS, startTestVault, type TestVault } from "../helpers/vault";
// eslint-disable-next-line @typescript-eslint/no-require-imports
const descriptor = require("protobufjs/ext/descriptor") as { FileDescriptorProto: { decode(b: Uint8Array): { name: string; package: string; dependency?: string[]; service?: { name: string; method?: { name: string }[] }[] } } };

const SERVICES = ["fieldvault.v1.TokenService", "fieldvault.v1.KeyAdmin", "fieldvault.v1.AccessLog"];
const loaderOptions = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

/** A Health client the way grpc_health_probe builds one: from grpc/health/v1/health.proto. */
function healthClient(address: string, creds: ChannelCredentials = grpcCredentials.createInsecure()) {
  const def = loadSync("health/v1/health.proto", { ...loaderOptions, includeDirs: [path.resolve(path.dirname(healthProtoPath), "..", "..")] });
  const Ctor = (loadPackageDefinition(def) as any).grpc.health.v1.Health as new (a: string, c: ChannelCredentials) => Client & Record<string, Function>;
  const client = new Ctor(address, creds);
  const check = (service: string) =>
    new Promise<string>((resolve, reject) =>
      client.Check({ service }, { deadline: Date.now() + 5000 }, (err: ServiceError | null, res: { status: string }) => (err ? reject(err) : resolve(res.status))),
    );
  return { client, check };
}

/** A reflection client the way grpcurl uses it: one ServerReflectionInfo stream, one request at a time. */
function reflectionClient(address: string, version: "v1" | "v1alpha") {
  const protoDir = path.dirname(require.resolve("@grpc/reflection/package.json"));
  const def = loadSync(`grpc/reflection/${version}/reflection.proto`, { ...loaderOptions, includeDirs: [path.join(protoDir, "build", "proto")] });
  const Ctor = (loadPackageDefinition(def) as any).grpc.reflection[version].ServerReflection as new (a: string, c: ChannelCredentials) => Client & Record<string, Function>;
  const client = new Ctor(address, grpcCredentials.createInsecure());
  const ask = (req: Record<string, unknown>) =>
    new Promise<any>((resolve, reject) => {
      const stream = client.ServerReflectionInfo({ deadline: Date.now() + 5000 });
      stream.on("data", (res: unknown) => {
        resolve(res);
        stream.end();
      });
      stream.on("error", reject);
      stream.write({ host: "", ...req });
    });
  return { client, ask };
}

describe.each(BACKENDS)("health and reflection on %s", (backend) => {
  let t: TestVault;

  beforeAll(async () => {
    t = await startTestVault(backend, { FIELDVAULT_HEALTH_INTERVAL_MS: "200" });
  });
  afterAll(async () => {
    await t?.stop();
  });

  describe("happy", () => {
    it("answers SERVING for the server and for each service (grpc_health_probe)", async () => {
      const h = healthClient(t.vault.address);
      try {
        for (const service of ["", ...SERVICES]) expect(await h.check(service)).toBe("SERVING");
      } finally {
        h.client.close();
      }
    });

    it.each(["v1", "v1alpha"] as const)("lists services over reflection %s (grpcurl list)", async (version) => {
      const r = reflectionClient(t.vault.address, version);
      try {
        const res = await r.ask({ list_services: "" });
        const names = (res.list_services_response.service as { name: string }[]).map((s) => s.name);
        expect(names).toEqual(expect.arrayContaining([...SERVICES, "grpc.health.v1.Health"]));
      } finally {
        r.client.close();
      }
    });

    it("describes a service without proto files (grpcurl describe fieldvault.v1.TokenService)", async () => {
      const r = reflectionClient(t.vault.address, "v1");
      try {
        const res = await r.ask({ file_containing_symbol: "fieldvault.v1.TokenService" });
        const files = (res.file_descriptor_response.file_descriptor_proto as Buffer[]).map((b) => descriptor.FileDescriptorProto.decode(b));
        const file = files.find((f) => f.service?.some((s) => s.name === "TokenService"));
        expect(file?.package).toBe("fieldvault.v1");
        const methods = file!.service!.find((s) => s.name === "TokenService")!.method!.map((m) => m.name);
        expect(methods).toEqual(["Tokenize", "Detokenize", "InspectTokens", "DeleteTokens", "DeleteSubject", "RequestBreakGlass", "ApproveBreakGlass"]);
        // Every dependency (google.protobuf.Timestamp) comes along, so grpcurl can build every message.
        const names = files.map((f) => f.name);
        const deps = files.flatMap((f) => f.dependency ?? []);
        expect(deps.length).toBeGreaterThan(0);
        for (const d of deps) expect(names).toContain(d);
        expect(files.some((f) => f.package === "google.protobuf")).toBe(true);
        // grpcurl then fetches each import by name.
        for (const d of deps) {
          const byName = await r.ask({ file_by_filename: d });
          const got = (byName.file_descriptor_response.file_descriptor_proto as Buffer[]).map((b) => descriptor.FileDescriptorProto.decode(b).name);
          expect(got[0]).toBe(d);
        }
      } finally {
        r.client.close();
      }
    });
  });

  describe("error", () => {
    it("answers NOT_FOUND for a service it does not have", async () => {
      const h = healthClient(t.vault.address);
      try {
        await expect(h.check("no.such.Service")).rejects.toMatchObject({ code: status.NOT_FOUND });
      } finally {
        h.client.close();
      }
    });

    it("reports an unknown symbol as a reflection error, not a crash", async () => {
      const r = reflectionClient(t.vault.address, "v1");
      try {
        const res = await r.ask({ file_containing_symbol: "no.such.Symbol" });
        expect(res.error_response.error_code).toBe(status.NOT_FOUND);
      } finally {
        r.client.close();
      }
    });
  });
});

const until = async (what: () => Promise<boolean>, timeoutMs = 20000) => {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await what()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("condition not reached in time");
};

describe("health follows PostgreSQL and migrations", () => {
  let t: TestVault;
  let admin: pg.Client;
  const statusNow = async () => {
    const h = healthClient(t.vault.address);
    try {
      return await h.check("fieldvault.v1.TokenService");
    } finally {
      h.client.close();
    }
  };

  beforeAll(async () => {
    t = await startTestVault("postgres", { FIELDVAULT_HEALTH_INTERVAL_MS: "200" });
    admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.query(`ALTER DATABASE ${t.db!.name} ALLOW_CONNECTIONS true`).catch(() => undefined);
    await admin?.end();
    await t?.stop();
  });

  it("goes NOT_SERVING while a migration is missing, and SERVING again once it is back", async () => {
    expect(await statusNow()).toBe("SERVING");
    const latest = (await t.vault.db.query<{ version: number; name: string }>("SELECT version, name FROM schema_migrations ORDER BY version DESC LIMIT 1")).rows[0]!;
    await t.vault.db.query("DELETE FROM schema_migrations WHERE version = $1", [latest.version]);
    await until(async () => (await statusNow()) === "NOT_SERVING");
    const h = healthClient(t.vault.address);
    try {
      for (const s of ["", ...SERVICES]) expect(await h.check(s)).toBe("NOT_SERVING");
    } finally {
      h.client.close();
    }
    await t.vault.db.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [latest.version, latest.name]);
    await until(async () => (await statusNow()) === "SERVING");
  });

  it("goes NOT_SERVING while PostgreSQL refuses connections, and SERVING again after", async () => {
    const name = t.db!.name;
    await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS false`);
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", [name]);
    await until(async () => (await statusNow()) === "NOT_SERVING");
    await admin.query(`ALTER DATABASE ${name} ALLOW_CONNECTIONS true`);
    await until(async () => (await statusNow()) === "SERVING");
  });
});
