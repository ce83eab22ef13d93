import { readFileSync } from "node:fs";
import path from "node:path";
import YAML from "yaml";
import { z } from "zod";

const name = z.string().min(1).max(128);
const callerSchema = z.strictObject({
  identities: z.array(name).optional(),
  tokenize: z.array(name).default([]),
  detokenize: z.record(name, z.array(name)).default({}),
  /** Categories whose masked view the caller may inspect; "*" means all. */
  inspect: z.array(name).default([]),
  delete: z.array(name).default([]),
  delete_subject: z.boolean().default(false),
  key_admin: z.boolean().default(false),
  log_read: z.boolean().default(false),
  /** AccessLog.SubjectReport: what the vault holds about a data subject and who looked at it (DESIGN §14). */
  subject_report: z.boolean().default(false),
  /** May approve another caller's break-glass request (DESIGN §15). */
  approve_break_glass: z.boolean().default(false),
  detokenize_per_minute: z.number().int().positive().optional(),
  /** Tokenize budget per deterministic category (card_number, passport_number) a minute. */
  tokenize_deterministic_per_minute: z.number().int().positive().optional(),
});
const policySchema = z.strictObject({
  purposes: z.record(name, z.string()),
  never_reveal_for: z.array(name).default([]),
  allow_detokenize_and_log_read: z.boolean().default(false),
  rate_limits: z
    .strictObject({
      detokenize_per_minute: z.number().int().positive().default(600),
      // A deterministic token answers "is this value on file?": the budget bounds how fast a caller
      // may ask (docs/security.md, "deterministic-token oracle").
      tokenize_deterministic_per_minute: z.number().int().positive().default(10_000),
    })
    .default({ detokenize_per_minute: 600, tokenize_deterministic_per_minute: 10_000 }),
  callers: z.record(name, callerSchema),
  /** Break-glass (DESIGN §15): per requesting caller, the categories and purposes it may request, and who approves. */
  break_glass: z
    .record(name, z.strictObject({ categories: z.array(name).min(1), purposes: z.array(name).min(1), approvers: z.array(name).min(1) }))
    .default({}),
});

export type PolicyDocument = z.infer<typeof policySchema>;
type CallerEntry = z.infer<typeof callerSchema>;

export class PolicyError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid policy: ${problems.join("; ")}`);
    this.name = "PolicyError";
  }
}

/** An immutable, validated policy. Every decision about who may do what is made here. */
export class Policy {
  private readonly byIdentity = new Map<string, { name: string; entry: CallerEntry }>();

  private constructor(readonly doc: PolicyDocument) {
    for (const [callerName, entry] of Object.entries(doc.callers)) {
      for (const id of entry.identities ?? [callerName]) this.byIdentity.set(id, { name: callerName, entry });
    }
  }

  /** Validates a parsed document against the known categories; errors name the bad entry. */
  static from(raw: unknown, categories: readonly string[]): Policy {
    const parsed = policySchema.safeParse(raw);
    if (!parsed.success) {
      throw new PolicyError(parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`));
    }
    const doc = parsed.data;
    const problems: string[] = [];
    const known = new Set(categories);
    const purposes = new Set(Object.keys(doc.purposes));
    const seenIdentity = new Map<string, string>();
    for (const p of doc.never_reveal_for) if (!purposes.has(p)) problems.push(`never_reveal_for: undeclared purpose "${p}"`);
    for (const [callerName, c] of Object.entries(doc.callers)) {
      const at = `callers.${callerName}`;
      for (const id of c.identities ?? [callerName]) {
        const other = seenIdentity.get(id);
        if (other) problems.push(`${at}.identities: "${id}" is already used by callers.${other}`);
        seenIdentity.set(id, callerName);
      }
      for (const key of ["tokenize", "delete"] as const) {
        for (const cat of c[key]) if (!known.has(cat)) problems.push(`${at}.${key}: unknown category "${cat}"`);
      }
      for (const cat of c.inspect) if (cat !== "*" && !known.has(cat)) problems.push(`${at}.inspect: unknown category "${cat}"`);
      for (const [cat, ps] of Object.entries(c.detokenize)) {
        if (!known.has(cat)) problems.push(`${at}.detokenize: unknown category "${cat}"`);
        for (const p of ps) {
          if (!purposes.has(p)) problems.push(`${at}.detokenize.${cat}: undeclared purpose "${p}"`);
          if (doc.never_reveal_for.includes(p)) problems.push(`${at}.detokenize.${cat}: purpose "${p}" may reveal nothing`);
        }
      }
      if ((c.log_read || c.subject_report) && Object.keys(c.detokenize).length > 0 && !doc.allow_detokenize_and_log_read) {
        problems.push(`${at}: may not both detokenize and read the access log (set allow_detokenize_and_log_read to allow)`);
      }
    }
    for (const [requester, rule] of Object.entries(doc.break_glass)) {
      const at = `break_glass.${requester}`;
      if (!Object.hasOwn(doc.callers, requester)) problems.push(`${at}: unknown caller "${requester}"`);
      for (const cat of rule.categories) if (!known.has(cat)) problems.push(`${at}.categories: unknown category "${cat}"`);
      for (const p of rule.purposes) {
        if (!purposes.has(p)) problems.push(`${at}.purposes: undeclared purpose "${p}"`);
        if (doc.never_reveal_for.includes(p)) problems.push(`${at}.purposes: purpose "${p}" may reveal nothing`);
      }
      for (const a of rule.approvers) {
        if (a === requester) problems.push(`${at}.approvers: a caller may not approve its own requests`);
        else if (!doc.callers[a]?.approve_break_glass) problems.push(`${at}.approvers: "${a}" is not a caller with approve_break_glass`);
      }
    }
    if (problems.length) throw new PolicyError(problems);
    return new Policy(doc);
  }

  static fromFile(file: string, categories: readonly string[]): Policy {
    let raw: unknown;
    try {
      const text = readFileSync(file, "utf8");
      raw = file.endsWith(".json") ? JSON.parse(text) : YAML.parse(text);
    } catch (e) {
      throw new PolicyError([`${path.basename(file)}: ${(e as Error).message}`]);
    }
    return Policy.from(raw, categories);
  }

  /** The policy's caller name for an authenticated identity, or undefined when unknown. */
  callerName(identity: string): string | undefined {
    return this.byIdentity.get(identity)?.name;
  }

  private entry(identity: string): CallerEntry | undefined {
    return this.byIdentity.get(identity)?.entry;
  }

  isPurpose(purpose: string): boolean {
    return Object.hasOwn(this.doc.purposes, purpose);
  }

  canTokenize(identity: string, category: string): boolean {
    return this.entry(identity)?.tokenize.includes(category) ?? false;
  }

  canDetokenize(identity: string, category: string, purpose: string): boolean {
    if (this.doc.never_reveal_for.includes(purpose)) return false;
    const purposes = this.entry(identity)?.detokenize[category];
    return purposes?.includes(purpose) ?? false;
  }

  canInspect(identity: string, category: string): boolean {
    const cats = this.entry(identity)?.inspect ?? [];
    return cats.includes("*") || cats.includes(category);
  }

  canDelete(identity: string, category: string): boolean {
    return this.entry(identity)?.delete.includes(category) ?? false;
  }

  canDeleteSubject(identity: string): boolean {
    return this.entry(identity)?.delete_subject ?? false;
  }

  isKeyAdmin(identity: string): boolean {
    return this.entry(identity)?.key_admin ?? false;
  }

  canReadLog(identity: string): boolean {
    return this.entry(identity)?.log_read ?? false;
  }

  tokenizeDeterministicPerMinute(identity: string): number {
    return this.entry(identity)?.tokenize_deterministic_per_minute ?? this.doc.rate_limits.tokenize_deterministic_per_minute;
  }

  canSubjectReport(identity: string): boolean {
    return this.entry(identity)?.subject_report ?? false;
  }

  /** The break-glass rule for the identity's policy caller, if it may request break-glass at all. */
  breakGlassRule(identity: string): { categories: readonly string[]; purposes: readonly string[]; approvers: readonly string[] } | undefined {
    const caller = this.callerName(identity);
    return caller === undefined ? undefined : this.doc.break_glass[caller];
  }

  /** Whether `approverIdentity`'s caller has approve_break_glass and is named an approver of `requesterCaller`'s requests. */
  canApproveBreakGlass(approverIdentity: string, requesterCaller: string): boolean {
    const approver = this.callerName(approverIdentity);
    if (approver === undefined || !this.entry(approverIdentity)?.approve_break_glass) return false;
    return this.doc.break_glass[requesterCaller]?.approvers.includes(approver) ?? false;
  }

  detokenizePerMinute(identity: string): number {
    return this.entry(identity)?.detokenize_per_minute ?? this.doc.rate_limits.detokenize_per_minute;
  }
}

