import { readdirSync } from "node:fs";
import path from "node:path";
import type { Server } from "@grpc/grpc-js";
import { loadSync, type PackageDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { protoPath as healthProtoPath } from "grpc-health-check";
import { FileDescriptorProto, type IDescriptorProto, type IFileDescriptorProto } from "protobufjs/ext/descriptor";
import { fromRoot } from "../../config/paths";

/** The vault's own contract, found from src/ and dist/ alike. */
export const PROTO_DIR = fromRoot("proto");

/** Every .proto file under proto/, relative to it (fieldvault/v1/token_service.proto, …). */
export function protoFiles(dir = PROTO_DIR): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const e of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".proto")) out.push(p);
    }
  };
  walk("");
  return out.sort();
}

/**
 * proto-loader describes each package as one synthetic file but lists no imports, so a client that
 * links descriptors (grpcurl) cannot resolve `.google.protobuf.Timestamp`. This fills in each
 * file's `dependency` from the type names its fields and methods use.
 */
function declareDependencies(files: IFileDescriptorProto[]): void {
  const owner = new Map<string, string>();
  const index = (file: string, scope: string, msgs: IDescriptorProto[] | null | undefined, enums: { name?: string | null }[] | null | undefined) => {
    for (const e of enums ?? []) owner.set(`.${scope}${e.name}`, file);
    for (const m of msgs ?? []) {
      owner.set(`.${scope}${m.name}`, file);
      index(file, `${scope}${m.name}.`, m.nestedType, m.enumType);
    }
  };
  for (const f of files) index(f.name!, f.package ? `${f.package}.` : "", f.messageType, f.enumType);
  for (const f of files) {
    const used = new Set<string>();
    const visit = (msgs: IDescriptorProto[] | null | undefined) => {
      for (const m of msgs ?? []) {
        for (const field of m.field ?? []) if (field.typeName) used.add(field.typeName);
        visit(m.nestedType);
      }
    };
    visit(f.messageType);
    for (const s of f.service ?? []) for (const m of s.method ?? []) used.add(m.inputType ?? "").add(m.outputType ?? "");
    const deps = new Set(f.dependency ?? []);
    for (const t of used) {
      const o = owner.get(t.startsWith(".") ? t : `.${t}`);
      if (o && o !== f.name) deps.add(o);
    }
    f.dependency = [...deps].sort();
  }
}

/** The package definition reflection describes: proto/ plus grpc.health.v1, with imports declared. */
export function reflectedPackage(): PackageDefinition {
  const healthRoot = path.resolve(path.dirname(healthProtoPath), "..", "..");
  const pkg = loadSync([...protoFiles(), "health/v1/health.proto"], {
    includeDirs: [PROTO_DIR, healthRoot],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const decoded = new Map<string, IFileDescriptorProto>();
  for (const def of Object.values(pkg)) {
    for (const bin of (def as { fileDescriptorProtos?: Buffer[] }).fileDescriptorProtos ?? []) {
      const f = FileDescriptorProto.decode(bin) as IFileDescriptorProto;
      if (f.name && !decoded.has(f.name)) decoded.set(f.name, f);
    }
  }
  declareDependencies([...decoded.values()]);
  const encoded = new Map([...decoded].map(([name, f]) => [name, Buffer.from(FileDescriptorProto.encode(f).finish())]));
  for (const def of Object.values(pkg)) {
    const d = def as { fileDescriptorProtos?: Buffer[] };
    if (!d.fileDescriptorProtos) continue;
    d.fileDescriptorProtos = d.fileDescriptorProtos.map((bin) => encoded.get((FileDescriptorProto.decode(bin) as IFileDescriptorProto).name ?? "") ?? bin);
  }
  return pkg;
}

/** Server reflection (v1 and v1alpha), so `grpcurl list` / `describe` work without proto files. */
export function addReflection(server: Server): void {
  new ReflectionService(reflectedPackage()).addToServer(server);
}
