import * as pkcs11js from "pkcs11js";
import { OpenError } from "./aead";
import { random } from "./random";
import { type RootKey, RootKeyUnavailableError } from "./root-key";
import { sodium } from "./sodium";

/**
 * Root keys kept in a PKCS#11 module (an HSM, or SoftHSM2 for development). The key is an AES-256
 * secret key object that is sensitive and not extractable; wrapping runs inside the module with
 * CKM_AES_GCM. One session per token is opened at start and reused; calls into it are serialised.
 */

/** What the provider needs; which environment variable each comes from is config's business. */
export interface Pkcs11Settings {
  library: string;
  tokenLabel: string;
  pin: string;
  /** First active, the others unwrap only (the order is the caller's; this module treats them alike). */
  keyLabels: readonly string[];
}

export type Pkcs11Setting = "library" | "tokenLabel" | "pin" | "keyLabel";

/** A start-up problem, tagged with the setting that causes it. The message never carries the PIN. */
export class Pkcs11SetupError extends Error {
  constructor(
    readonly setting: Pkcs11Setting,
    message: string,
  ) {
    super(message);
    this.name = "Pkcs11SetupError";
  }
}

/** Blob: format byte ‖ 96-bit IV ‖ ciphertext ‖ 128-bit GCM tag. */
export const FORMAT_PKCS11_AES_GCM = 0x02;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const KCV_AAD = Buffer.from("fieldvault pkcs11 key check value");
/** Longest wait for one wrap or unwrap inside the module. */
const CALL_TIMEOUT_MS = 10_000;

type Handle = Buffer;

const codeName = (err: unknown): string => {
  const e = err as { message?: string; code?: number };
  return /^CKR_[A-Z0-9_]+$/.test(e.message ?? "") ? e.message! : e.code ? `CKR 0x${e.code.toString(16)}` : "module error";
};
const codeOf = (err: unknown): number | undefined => (err as { code?: number }).code;

// ---- the module: loaded and initialised once per process, finalised with its last user ----------

const modules = new Map<string, { p: pkcs11js.PKCS11; users: number }>();

/**
 * Async calls run on libuv's worker threads (serialised, but not always the same thread), so ask the
 * module to use OS locking; a module that cannot (CKR_CANT_LOCK) is initialised without arguments.
 */
function initialise(p: pkcs11js.PKCS11): void {
  try {
    p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (err) {
    if (codeOf(err) !== pkcs11js.CKR_CANT_LOCK) throw err;
    p.C_Initialize();
  }
}

function acquireModule(library: string): pkcs11js.PKCS11 {
  const m = modules.get(library);
  if (m) {
    m.users++;
    return m.p;
  }
  const p = new pkcs11js.PKCS11();
  try {
    p.load(library);
  } catch (err) {
    throw new Pkcs11SetupError("library", `cannot load the PKCS#11 module ${library}: ${(err as Error).message.split("\n")[0]}`);
  }
  try {
    initialise(p);
  } catch (err) {
    if (codeOf(err) !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      p.close();
      throw new Pkcs11SetupError("library", `the PKCS#11 module ${library} failed to initialise: ${codeName(err)}`);
    }
  }
  modules.set(library, { p, users: 1 });
  return p;
}

/** Finalises and initialises the module again, only when this process has exactly one user of it. */
function reinitialiseModule(library: string): boolean {
  const m = modules.get(library);
  if (!m || m.users !== 1) return false;
  try {
    m.p.C_Finalize();
  } catch {
    /* not initialised, or broken: initialise anyway */
  }
  try {
    initialise(m.p);
    return true;
  } catch {
    return false;
  }
}

function releaseModule(library: string): void {
  const m = modules.get(library);
  if (!m || --m.users > 0) return;
  modules.delete(library);
  try {
    m.p.C_Finalize();
  } catch {
    /* the module may already be broken */
  }
  try {
    m.p.close();
  } catch {
    /* ditto */
  }
}

// ---- steps shared by the provider, `hsm create-key` and `hsm status` -----------------------------

export interface TokenInfo {
  label: string;
  serial: string;
  model: string;
  manufacturer: string;
}

function findSlot(p: pkcs11js.PKCS11, s: Pick<Pkcs11Settings, "library" | "tokenLabel">): { slot: Handle; token: TokenInfo } {
  let slots: Handle[];
  try {
    slots = p.C_GetSlotList(true);
  } catch (err) {
    throw new Pkcs11SetupError("library", `the PKCS#11 module ${s.library} cannot list its slots: ${codeName(err)}`);
  }
  const found: { slot: Handle; token: TokenInfo }[] = [];
  const labels: string[] = [];
  for (const slot of slots) {
    try {
      const t = p.C_GetTokenInfo(slot);
      const token = { label: t.label.trim(), serial: t.serialNumber.trim(), model: t.model.trim(), manufacturer: t.manufacturerID.trim() };
      if (token.label) labels.push(token.label);
      if (token.label === s.tokenLabel) found.push({ slot, token });
    } catch {
      /* a slot without a usable token */
    }
  }
  if (found.length === 0) {
    const known = labels.length ? `tokens found: ${labels.map((l) => `"${l}"`).join(", ")}` : "the module has no initialised token";
    throw new Pkcs11SetupError("tokenLabel", `no token labelled "${s.tokenLabel}" in ${s.library} (${known})`);
  }
  if (found.length > 1) throw new Pkcs11SetupError("tokenLabel", `${found.length} tokens are labelled "${s.tokenLabel}"; labels must be unique`);
  return found[0]!;
}

function login(p: pkcs11js.PKCS11, session: Handle, s: Pick<Pkcs11Settings, "tokenLabel" | "pin">): void {
  try {
    p.C_Login(session, pkcs11js.CKU_USER, s.pin);
  } catch (err) {
    const code = codeOf(err);
    if (code === pkcs11js.CKR_USER_ALREADY_LOGGED_IN) return;
    if (code === pkcs11js.CKR_PIN_INCORRECT) throw new Pkcs11SetupError("pin", `token "${s.tokenLabel}" refused the PIN (CKR_PIN_INCORRECT)`);
    if (code === pkcs11js.CKR_PIN_LOCKED) throw new Pkcs11SetupError("pin", `token "${s.tokenLabel}": the user PIN is locked (CKR_PIN_LOCKED)`);
    throw new Pkcs11SetupError("pin", `login to token "${s.tokenLabel}" failed: ${codeName(err)}`);
  }
}

function openSession(p: pkcs11js.PKCS11, slot: Handle, rw: boolean): Handle {
  try {
    return p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | (rw ? pkcs11js.CKF_RW_SESSION : 0));
  } catch (err) {
    throw new Pkcs11SetupError("tokenLabel", `cannot open a session on the token: ${codeName(err)}`);
  }
}

function findKeys(p: pkcs11js.PKCS11, session: Handle, label: string): Handle[] {
  p.C_FindObjectsInit(session, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_LABEL, value: label },
  ]);
  try {
    return p.C_FindObjects(session, 10);
  } finally {
    p.C_FindObjectsFinal(session);
  }
}

export interface KeyAttributes {
  aes: boolean;
  bytes: number;
  sensitive: boolean;
  extractable: boolean;
  encrypt: boolean;
  decrypt: boolean;
  token: boolean;
}

export function readKeyAttributes(p: pkcs11js.PKCS11, session: Handle, key: Handle): KeyAttributes {
  const a = p.C_GetAttributeValue(session, key, [
    { type: pkcs11js.CKA_KEY_TYPE },
    { type: pkcs11js.CKA_VALUE_LEN },
    { type: pkcs11js.CKA_SENSITIVE },
    { type: pkcs11js.CKA_EXTRACTABLE },
    { type: pkcs11js.CKA_ENCRYPT },
    { type: pkcs11js.CKA_DECRYPT },
    { type: pkcs11js.CKA_TOKEN },
  ]);
  const num = (i: number) => a[i]!.value.readUIntLE(0, Math.min(6, a[i]!.value.length));
  const bool = (i: number) => a[i]!.value.length > 0 && a[i]!.value[0] !== 0;
  return {
    aes: num(0) === pkcs11js.CKK_AES,
    bytes: num(1),
    sensitive: bool(2),
    extractable: bool(3),
    encrypt: bool(4),
    decrypt: bool(5),
    token: bool(6),
  };
}

/** Why a key object may not be a root key, or undefined when it may. */
export function keyProblem(label: string, a: KeyAttributes): string | undefined {
  if (!a.aes || a.bytes !== KEY_BYTES) return `key "${label}" is not an AES-256 key`;
  if (a.extractable) return `key "${label}" is extractable (CKA_EXTRACTABLE true): a root key must never leave the module; make one with fieldvault hsm create-key`;
  if (!a.sensitive) return `key "${label}" is not sensitive (CKA_SENSITIVE false): a root key must never leave the module; make one with fieldvault hsm create-key`;
  if (!a.token) return `key "${label}" is a session object (CKA_TOKEN false)`;
  if (!a.encrypt || !a.decrypt) return `key "${label}" may not encrypt and decrypt (CKA_ENCRYPT/CKA_DECRYPT)`;
  return undefined;
}

function gcm(iv: Buffer, aad: Uint8Array): pkcs11js.Mechanism {
  const parameter: pkcs11js.GcmParams = { type: pkcs11js.CK_PARAMS_AES_GCM, iv, ivBits: IV_BYTES * 8, aad: Buffer.from(aad), tagBits: TAG_BYTES * 8 };
  return { mechanism: pkcs11js.CKM_AES_GCM, parameter };
}

/**
 * The key's id: a hash of its check value (one zero block sealed with a fixed all-zero IV and a
 * fixed AAD; a random IV meets that IV with probability 2^-96), so it names the key material
 * itself. It says nothing secret, stays the same when the key is relabelled or restored into
 * another device or cluster member, and differs for a new key made under an old label.
 */
function keyId(p: pkcs11js.PKCS11, session: Handle, key: Handle, label: string): string {
  let kcv: Buffer;
  try {
    p.C_EncryptInit(session, gcm(Buffer.alloc(IV_BYTES), KCV_AAD), key);
    kcv = p.C_Encrypt(session, Buffer.alloc(16), Buffer.alloc(16 + TAG_BYTES));
  } catch (err) {
    throw new Pkcs11SetupError("keyLabel", `key "${label}" cannot seal with CKM_AES_GCM and a caller-supplied 96-bit IV: ${codeName(err)}`);
  }
  const h = sodium.crypto_generichash(8, sodium.from_string("fieldvault pkcs11 root key id"), new Uint8Array(kcv));
  return "pkcs11:" + sodium.to_hex(h);
}

function findKey(p: pkcs11js.PKCS11, session: Handle, label: string, tokenLabel: string): Handle {
  const found = findKeys(p, session, label);
  if (found.length === 0) throw new Pkcs11SetupError("keyLabel", `no secret key labelled "${label}" in token "${tokenLabel}"; make one with fieldvault hsm create-key --label ${label}`);
  if (found.length > 1) throw new Pkcs11SetupError("keyLabel", `${found.length} secret keys are labelled "${label}" in token "${tokenLabel}"; labels must be unique`);
  const problem = keyProblem(label, readKeyAttributes(p, session, found[0]!));
  if (problem) throw new Pkcs11SetupError("keyLabel", problem);
  return found[0]!;
}

// ---- the provider -------------------------------------------------------------------------------

interface Entry {
  label: string;
  id: string;
  handle: Handle;
}

/** One logged-in session on one token, shared by that token's root keys; every call is serialised. */
class TokenSession {
  private queue: Promise<unknown> = Promise.resolve();
  private session: Handle | undefined;
  private closed = false;

  constructor(
    private readonly p: pkcs11js.PKCS11,
    private readonly s: Pkcs11Settings,
    readonly token: TokenInfo,
    session: Handle,
    readonly entries: Entry[],
  ) {
    this.session = session;
  }

  /**
   * Runs `fn` alone on the session, reopening it first if an earlier call lost it. A call the module
   * does not answer within CALL_TIMEOUT_MS fails as unavailable (a rotation must not hold its
   * database transaction, shared with the access log, open on a hung HSM); its session is dropped.
   */
  run<T>(id: string, fn: (p: pkcs11js.PKCS11, session: Handle, key: Handle) => Promise<T>): Promise<T> {
    const next = this.queue.then(async () => {
      if (this.closed) throw new RootKeyUnavailableError(id, "the PKCS#11 session is closed");
      const session = this.session ?? this.reopen(id);
      const entry = this.entries.find((e) => e.id === id)!;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          if (this.session === session) this.session = undefined; // abandoned, not closed: a call may still run on it
          reject(new RootKeyUnavailableError(id, `the PKCS#11 module did not answer within ${CALL_TIMEOUT_MS} ms`));
        }, CALL_TIMEOUT_MS);
      });
      try {
        return await Promise.race([fn(this.p, session, entry.handle), timeout]);
      } finally {
        clearTimeout(timer);
      }
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** The module failed: drop the session; the next call tries a fresh one. */
  lost(): void {
    const old = this.session;
    this.session = undefined;
    if (old) {
      try {
        this.p.C_CloseSession(old);
      } catch {
        /* already gone */
      }
    }
  }

  /**
   * A fresh session, login and key handles; each key must still have the same id. If the token is
   * not found and no one else in this process uses the module, the module is finalised and
   * initialised again first (modules such as SoftHSM2 only rescan their tokens then).
   */
  private reopen(id: string): Handle {
    try {
      try {
        return this.openAgain();
      } catch (first) {
        if (!reinitialiseModule(this.s.library)) throw first;
        return this.openAgain();
      }
    } catch (err) {
      throw new RootKeyUnavailableError(id, `the PKCS#11 session could not be reopened: ${err instanceof Pkcs11SetupError ? err.message : codeName(err)}`);
    }
  }

  private openAgain(): Handle {
    const { slot } = findSlot(this.p, this.s);
    const session = openSession(this.p, slot, false);
    try {
      login(this.p, session, this.s);
      const handles = this.entries.map((e) => {
        const handle = findKey(this.p, session, e.label, this.s.tokenLabel);
        if (keyId(this.p, session, handle, e.label) !== e.id) throw new Pkcs11SetupError("keyLabel", `key "${e.label}" is no longer the key it was (${e.id})`);
        return handle;
      });
      this.entries.forEach((e, i) => (e.handle = handles[i]!));
    } catch (err) {
      try {
        this.p.C_CloseSession(session);
      } catch {
        /* already gone */
      }
      throw err;
    }
    this.session = session;
    return session;
  }

  async close(): Promise<void> {
    await this.queue;
    this.closed = true;
    this.lost();
    releaseModule(this.s.library);
  }
}

function pkcs11RootKey(t: TokenSession, entry: Entry): RootKey {
  const id = entry.id;
  const fail = (err: unknown): never => {
    if (err instanceof OpenError || err instanceof RootKeyUnavailableError) throw err;
    t.lost();
    throw new RootKeyUnavailableError(id, codeName(err));
  };
  return {
    id,
    wrap: (plaintext, aad) =>
      t
        .run(id, async (p, session, key) => {
          const iv = Buffer.from(random(IV_BYTES));
          p.C_EncryptInit(session, gcm(iv, aad), key);
          const ct = await p.C_EncryptAsync(session, Buffer.from(plaintext), Buffer.alloc(plaintext.length + TAG_BYTES));
          const blob = new Uint8Array(1 + IV_BYTES + ct.length);
          blob[0] = FORMAT_PKCS11_AES_GCM;
          blob.set(iv, 1);
          blob.set(ct, 1 + IV_BYTES);
          return blob;
        })
        .catch(fail),
    unwrap: (blob, aad) => {
      if (blob.length < 1 + IV_BYTES + TAG_BYTES || blob[0] !== FORMAT_PKCS11_AES_GCM) return Promise.reject(new OpenError());
      return t
        .run(id, async (p, session, key) => {
          const iv = Buffer.from(blob.subarray(1, 1 + IV_BYTES));
          const ct = Buffer.from(blob.subarray(1 + IV_BYTES));
          try {
            p.C_DecryptInit(session, gcm(iv, aad), key);
            return new Uint8Array(await p.C_DecryptAsync(session, ct, Buffer.alloc(ct.length)));
          } catch (err) {
            const code = codeOf(err);
            if (code === pkcs11js.CKR_ENCRYPTED_DATA_INVALID || code === pkcs11js.CKR_ENCRYPTED_DATA_LEN_RANGE) throw new OpenError();
            // Modules differ in how they report a bad tag (SoftHSM2 says CKR_GENERAL_ERROR): if the
            // session and the key still answer, the blob is at fault; otherwise the module is.
            try {
              p.C_GetAttributeValue(session, key, [{ type: pkcs11js.CKA_CLASS }]);
            } catch {
              throw err;
            }
            throw new OpenError();
          }
        })
        .catch(fail);
    },
  };
}

export interface Pkcs11RootKeys {
  /** In the order of `keyLabels`. */
  readonly keys: readonly RootKey[];
  readonly token: TokenInfo;
  close(): Promise<void>;
}

/** Opens the token, logs in and finds every key label; any problem is a Pkcs11SetupError naming its setting. */
export async function openPkcs11RootKeys(s: Pkcs11Settings): Promise<Pkcs11RootKeys> {
  if (s.keyLabels.length === 0) throw new Pkcs11SetupError("keyLabel", "at least one key label is required");
  const p = acquireModule(s.library);
  let session: Handle | undefined;
  try {
    const { slot, token } = findSlot(p, s);
    session = openSession(p, slot, false);
    login(p, session, s);
    const entries: Entry[] = [];
    for (const label of s.keyLabels) {
      const handle = findKey(p, session, label, s.tokenLabel);
      entries.push({ label, handle, id: keyId(p, session, handle, label) });
    }
    const t = new TokenSession(p, s, token, session, entries);
    return { keys: entries.map((e) => pkcs11RootKey(t, e)), token, close: () => t.close() };
  } catch (err) {
    if (session) {
      try {
        p.C_CloseSession(session);
      } catch {
        /* nothing to close */
      }
    }
    releaseModule(s.library);
    if (err instanceof Pkcs11SetupError) throw err;
    throw new Pkcs11SetupError("library", `the PKCS#11 module failed: ${codeName(err)}`);
  }
}

/** `fieldvault hsm create-key`: generates an AES-256 token key that is sensitive and not extractable. */
export async function createPkcs11Key(s: Omit<Pkcs11Settings, "keyLabels">, label: string): Promise<{ id: string; token: TokenInfo }> {
  if (!label.trim()) throw new Pkcs11SetupError("keyLabel", "a key label is required");
  const p = acquireModule(s.library);
  let session: Handle | undefined;
  try {
    const { slot, token } = findSlot(p, s);
    session = openSession(p, slot, true);
    login(p, session, s);
    if (findKeys(p, session, label).length > 0) throw new Pkcs11SetupError("keyLabel", `token "${s.tokenLabel}" already has a key labelled "${label}"`);
    let key: Handle;
    try {
      key = p.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
        { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
        { type: pkcs11js.CKA_VALUE_LEN, value: KEY_BYTES },
        { type: pkcs11js.CKA_LABEL, value: label },
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_PRIVATE, value: true },
        { type: pkcs11js.CKA_SENSITIVE, value: true },
        { type: pkcs11js.CKA_EXTRACTABLE, value: false },
        { type: pkcs11js.CKA_MODIFIABLE, value: false },
        { type: pkcs11js.CKA_ENCRYPT, value: true },
        { type: pkcs11js.CKA_DECRYPT, value: true },
        { type: pkcs11js.CKA_WRAP, value: false },
        { type: pkcs11js.CKA_UNWRAP, value: false },
        { type: pkcs11js.CKA_SIGN, value: false },
        { type: pkcs11js.CKA_VERIFY, value: false },
        { type: pkcs11js.CKA_DERIVE, value: false },
      ]);
    } catch (err) {
      throw new Pkcs11SetupError("keyLabel", `the token refused to generate the key: ${codeName(err)}`);
    }
    return { id: keyId(p, session, key, label), token };
  } finally {
    if (session) {
      try {
        p.C_CloseSession(session);
      } catch {
        /* nothing to close */
      }
    }
    releaseModule(s.library);
  }
}

export interface Pkcs11Status {
  library: { path: string; ok: boolean; description?: string; manufacturer?: string; cryptoki?: string; problem?: string };
  token?: TokenInfo;
  tokenProblem?: string;
  login?: { ok: boolean; problem?: string };
  keys: { label: string; active: boolean; id?: string; attributes?: KeyAttributes; problem?: string }[];
}

/** `fieldvault hsm status`: each step as far as it gets; never throws for a setting's problem. */
export async function pkcs11Status(s: Pkcs11Settings): Promise<Pkcs11Status> {
  const out: Pkcs11Status = { library: { path: s.library, ok: false }, keys: [] };
  let p: pkcs11js.PKCS11;
  try {
    p = acquireModule(s.library);
  } catch (err) {
    out.library.problem = (err as Error).message;
    return out;
  }
  let session: Handle | undefined;
  try {
    const info = p.C_GetInfo();
    out.library = {
      path: s.library,
      ok: true,
      description: info.libraryDescription.trim(),
      manufacturer: info.manufacturerID.trim(),
      cryptoki: `${info.cryptokiVersion.major}.${info.cryptokiVersion.minor}`,
    };
    let slot: Handle;
    try {
      ({ slot, token: out.token } = findSlot(p, s));
    } catch (err) {
      out.tokenProblem = (err as Error).message;
      return out;
    }
    session = openSession(p, slot, false);
    try {
      login(p, session, s);
      out.login = { ok: true };
    } catch (err) {
      out.login = { ok: false, problem: (err as Error).message };
      return out;
    }
    s.keyLabels.forEach((label, i) => {
      const k: Pkcs11Status["keys"][number] = { label, active: i === 0 };
      try {
        const found = findKeys(p, session!, label);
        if (found.length !== 1) throw new Pkcs11SetupError("keyLabel", found.length ? `${found.length} keys are labelled "${label}"` : `no secret key labelled "${label}"`);
        k.attributes = readKeyAttributes(p, session!, found[0]!);
        k.problem = keyProblem(label, k.attributes);
        if (!k.problem) k.id = keyId(p, session!, found[0]!, label);
      } catch (err) {
        k.problem = err instanceof Pkcs11SetupError ? err.message : codeName(err);
      }
      out.keys.push(k);
    });
    return out;
  } finally {
    if (session) {
      try {
        p.C_CloseSession(session);
      } catch {
        /* nothing to close */
      }
    }
    releaseModule(s.library);
  }
}
