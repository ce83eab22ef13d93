/**
 * Run as a child process (SoftHSM reads SOFTHSM2_CONF from the real environment):
 *   node --import tsx test/helpers/pkcs11-probe.ts <key-label>
 * with FIELDVAULT_PKCS11_LIBRARY, _TOKEN_LABEL and _PIN set. Prints one JSON object of what it saw,
 * for test/e2e/hsm-root-key.test.ts to assert on. It tries what an attacker holding the PIN would
 * try, with pkcs11js directly, then exercises the vault's PKCS#11 root key.
 */
import * as pkcs11js from "pkcs11js";
import { aad, OpenError } from "../../src/crypto/aead";
import { openPkcs11RootKeys } from "../../src/crypto/pkcs11-root-key";
import { readySodium } from "../../src/crypto/sodium";

const label = process.argv[2]!;
const library = process.env.FIELDVAULT_PKCS11_LIBRARY!;
const tokenLabel = process.env.FIELDVAULT_PKCS11_TOKEN_LABEL!;
const pin = process.env.FIELDVAULT_PKCS11_PIN!;

const refusal = (fn: () => unknown): string => {
  try {
    fn();
    return "allowed";
  } catch (err) {
    return (err as Error).message;
  }
};

function attacker(): Record<string, unknown> {
  const p = new pkcs11js.PKCS11();
  p.load(library);
  p.C_Initialize();
  try {
    const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trim() === tokenLabel)!;
    const session = p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    p.C_Login(session, pkcs11js.CKU_USER, pin);
    p.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_LABEL, value: label }]);
    const found = p.C_FindObjects(session, 5);
    p.C_FindObjectsFinal(session);
    const key = found[0]!;
    const attrs = p.C_GetAttributeValue(session, key, [
      { type: pkcs11js.CKA_CLASS },
      { type: pkcs11js.CKA_KEY_TYPE },
      { type: pkcs11js.CKA_VALUE_LEN },
      { type: pkcs11js.CKA_SENSITIVE },
      { type: pkcs11js.CKA_EXTRACTABLE },
      { type: pkcs11js.CKA_ALWAYS_SENSITIVE },
      { type: pkcs11js.CKA_NEVER_EXTRACTABLE },
      { type: pkcs11js.CKA_TOKEN },
    ]);
    const n = (i: number) => attrs[i]!.value.readUIntLE(0, Math.min(6, attrs[i]!.value.length));
    const wrapping = p.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_TOKEN, value: false },
      { type: pkcs11js.CKA_WRAP, value: true },
    ]);
    const out = {
      objects: found.length,
      class: n(0) === pkcs11js.CKO_SECRET_KEY ? "secret" : n(0),
      keyType: n(1) === pkcs11js.CKK_AES ? "AES" : n(1),
      valueLen: n(2),
      sensitive: n(3) === 1,
      extractable: n(4) === 1,
      alwaysSensitive: n(5) === 1,
      neverExtractable: n(6) === 1,
      token: n(7) === 1,
      readValue: refusal(() => p.C_GetAttributeValue(session, key, [{ type: pkcs11js.CKA_VALUE }])),
      makeExtractable: refusal(() => p.C_SetAttributeValue(session, key, [{ type: pkcs11js.CKA_EXTRACTABLE, value: true }])),
      makeNotSensitive: refusal(() => p.C_SetAttributeValue(session, key, [{ type: pkcs11js.CKA_SENSITIVE, value: false }])),
      wrapOut: refusal(() => p.C_WrapKey(session, { mechanism: pkcs11js.CKM_AES_KEY_WRAP }, wrapping, key, Buffer.alloc(64))),
    };
    p.C_CloseSession(session);
    return out;
  } finally {
    p.C_Finalize();
    p.close();
  }
}

async function rootKey(): Promise<Record<string, unknown>> {
  const opened = await openPkcs11RootKeys({ library, tokenLabel, pin, keyLabels: [label] });
  try {
    const key = opened.keys[0]!;
    const secret = Uint8Array.from({ length: 32 }, (_, i) => i * 7);
    const ad = aad("kek", "card_number", 1, key.id);
    const a = await key.wrap(secret, ad);
    const b = await key.wrap(secret, ad);
    const same = (x: Uint8Array) => Buffer.from(x).equals(Buffer.from(secret));
    const flip = (blob: Uint8Array, i: number) => {
      const c = Uint8Array.from(blob);
      c[i]! ^= 1;
      return c;
    };
    const outcome = async (blob: Uint8Array, d: Uint8Array) => {
      try {
        return same(await key.unwrap(blob, d)) ? "opened" : "wrong plaintext";
      } catch (err) {
        return err instanceof OpenError ? "OpenError" : `other: ${(err as Error).message}`;
      }
    };
    const tampered = {
      tag: await outcome(flip(a, a.length - 1), ad),
      iv: await outcome(flip(a, 3), ad),
      ciphertext: await outcome(flip(a, 20), ad),
      truncated: await outcome(a.subarray(0, a.length - 1), ad),
      otherAad: await outcome(a, aad("kek", "card_number", 2, key.id)),
      otherFormat: await outcome(Uint8Array.from([1, ...a.subarray(1)]), ad),
      empty: await outcome(new Uint8Array(0), ad),
    };
    const afterRefusals = await outcome(b, ad);
    const many = await Promise.all(Array.from({ length: 50 }, () => key.wrap(secret, ad).then((w) => key.unwrap(w, ad))));
    return {
      id: key.id,
      format: a[0],
      length: a.length,
      freshIv: !Buffer.from(a.subarray(1, 13)).equals(Buffer.from(b.subarray(1, 13))),
      roundTrip: await outcome(a, ad),
      tampered,
      afterRefusals,
      concurrentOk: many.filter(same).length,
    };
  } finally {
    await opened.close();
  }
}

(async () => {
  await readySodium();
  const a = attacker();
  const r = await rootKey();
  process.stdout.write(JSON.stringify({ attacker: a, rootKey: r }) + "\n");
})().catch((err) => {
  process.stderr.write(`probe failed: ${(err as Error).message}\n`);
  process.exit(1);
});
