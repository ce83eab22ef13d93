/**
 * The booking service: passport numbers of a booking's travellers, revealed for an airline manifest.
 *
 *   npx tsx examples/booking-manifest.ts        # against `npm start` (development, plaintext)
 *
 * With mutual TLS set FIELDVAULT_ADDRESS=localhost:50051 and FIELDVAULT_CLIENT_CERT / _KEY / _CA
 * (e.g. keys-dev/booking-service.pem, .key and keys-dev/ca.pem). Exits non-zero on any failure.
 */
import { FieldVaultClient, FieldVaultError, optionsFromEnv } from "../src/sdk";

interface Traveller {
  name: string;
  passport: string;
  dateOfBirth: string;
}

/** What the booking database keeps per traveller: tokens and masked views. */
interface StoredTraveller {
  name: string;
  passportToken: string;
  passportMasked: string;
  dobToken: string;
  subjectRef: string;
}

function check(condition: unknown, what: string): asserts condition {
  if (!condition) throw new Error(`check failed: ${what}`);
}

/** Stand-in for the airline's API (APIS/PNR): receives real passport numbers; never prints them. */
function sendToAirline(flight: string, rows: { name: string; passport: string; dateOfBirth: string }[]): number {
  for (const r of rows) if (!/^[A-Z0-9]{5,9}$/.test(r.passport) || !/^\d{4}-\d{2}-\d{2}$/.test(r.dateOfBirth)) throw new Error("airline rejected the manifest");
  return rows.length;
}

async function book(vault: FieldVaultClient, bookingId: string, travellers: Traveller[]): Promise<StoredTraveller[]> {
  const stored: StoredTraveller[] = [];
  for (const [i, t] of travellers.entries()) {
    const subjectRef = `traveller-${bookingId}-${i}`;
    const [passport, dob] = await vault.tokenize(
      [
        { category: "passport_number", value: t.passport },
        { category: "date_of_birth", value: t.dateOfBirth },
      ],
      { subjectRef },
    );
    check(passport && dob, "two tokens per traveller");
    stored.push({ name: t.name, passportToken: passport.token, passportMasked: passport.masked.display, dobToken: dob.token, subjectRef });
  }
  return stored;
}

async function main(): Promise<void> {
  const vault = new FieldVaultClient({ ...optionsFromEnv("booking-service"), deadlineMs: 10_000 });
  const bookingId = `bk${Date.now().toString(36)}`;
  const travellers: Traveller[] = [
    { name: "Nguyen Van An", passport: "c1234567", dateOfBirth: "1984-02-29" },
    { name: "Tran Thi Binh", passport: "C 7654321", dateOfBirth: "1990-11-05" },
    { name: "Le Minh Chau", passport: "B0098765", dateOfBirth: "2015-06-17" },
  ];
  try {
    const stored = await book(vault, bookingId, travellers);
    console.log(`booking ${bookingId}: ${stored.length} travellers stored as tokens`);
    for (const s of stored) console.log(`  ${s.name.padEnd(16)} passport ${s.passportMasked}`);

    // Check-in closes: reveal for the airline manifest, one call for the whole booking.
    const tokens = stored.flatMap((s) => [s.passportToken, s.dobToken]);
    const values = await vault.reveal(tokens, { purpose: "airline_manifest", justification: `manifest VN123 ${bookingId}` });
    const rows = stored.map((s, i) => ({ name: s.name, passport: values[2 * i]!, dateOfBirth: values[2 * i + 1]! }));
    travellers.forEach((t, i) => {
      check(rows[i]!.passport === t.passport.toUpperCase().replace(/\s+/g, ""), `passport of traveller ${i} normalised and revealed`);
      check(rows[i]!.dateOfBirth === t.dateOfBirth, `date of birth of traveller ${i}`);
    });
    console.log(`manifest VN123: sent ${sendToAirline("VN123", rows)} passengers to the airline`);

    // The same passport in another booking is the same token.
    const [again] = await vault.tokenize([{ category: "passport_number", value: "C1234567" }]);
    check(again?.token === stored[0]!.passportToken, "deterministic passport token");

    // Customer support may not see passports; marketing may see nothing.
    const refused = await vault.detokenize([stored[0]!.passportToken], { purpose: "customer_support" });
    check(refused[0] && !refused[0].ok && refused[0].code === "PERMISSION_DENIED", "customer_support may not reveal passports");
    console.log("passport reveal for customer_support refused: PERMISSION_DENIED");

    // The youngest traveller asks to be forgotten: their values are erased unless someone else still holds them.
    const erased = await vault.deleteSubject(stored[2]!.subjectRef);
    check(erased.erased === 2, "both of the traveller's values erased");
    const gone = await vault.detokenize([stored[2]!.passportToken], { purpose: "airline_manifest" });
    check(gone[0] && !gone[0].ok && gone[0].code === "NOT_FOUND", "erased passport is gone");
    console.log(`traveller 3 erased (${erased.erased} values); later reveals answer NOT_FOUND`);
    console.log("booking-manifest: OK");
  } finally {
    vault.close();
  }
}

main().catch((err: unknown) => {
  const e = err as Error;
  console.error(`booking-manifest: FAILED: ${e instanceof FieldVaultError ? `${e.codeName} ${e.explanation ?? e.details}` : e.message}`);
  process.exitCode = 1;
});
