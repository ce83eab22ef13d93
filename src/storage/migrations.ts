import type { Db } from "./db";

/** Versioned schema changes, applied in order at start-up under an advisory lock. Never edit one that shipped. */
export const MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: "keys, tokens, subjects",
    sql: `
      CREATE TABLE kek_versions (
        category text NOT NULL,
        version integer NOT NULL,
        state text NOT NULL CHECK (state IN ('active', 'decrypt_only', 'disabled', 'destroyed')),
        wrapped_key bytea,
        root_key_id text,
        created_at timestamptz NOT NULL DEFAULT now(),
        state_changed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (category, version),
        CHECK ((state = 'destroyed') = (wrapped_key IS NULL))
      );
      CREATE UNIQUE INDEX kek_versions_one_active ON kek_versions (category) WHERE state = 'active';

      CREATE TABLE vault_secrets (
        name text PRIMARY KEY,
        wrapped bytea NOT NULL,
        root_key_id text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      );

      CREATE TABLE tokens (
        id text PRIMARY KEY,
        category text NOT NULL,
        kek_version integer NOT NULL,
        wrapped_dek bytea NOT NULL,
        ciphertext bytea NOT NULL,
        fingerprint bytea,
        masked jsonb NOT NULL,
        held_without_subject boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz
      );
      CREATE UNIQUE INDEX tokens_category_fingerprint ON tokens (category, fingerprint) WHERE fingerprint IS NOT NULL;
      CREATE INDEX tokens_category_kek_version ON tokens (category, kek_version);

      CREATE TABLE token_subjects (
        subject_ref text NOT NULL,
        token_id text NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
        PRIMARY KEY (subject_ref, token_id)
      );
      CREATE INDEX token_subjects_token ON token_subjects (token_id);
    `,
  },
  {
    version: 2,
    name: "append-only access log and signed checkpoints",
    sql: `
      CREATE TABLE access_log (
        seq bigserial PRIMARY KEY,
        chain_id text NOT NULL,
        chain_seq bigint NOT NULL,
        at timestamptz NOT NULL,
        caller text NOT NULL,
        auth text NOT NULL,
        peer text NOT NULL,
        action text NOT NULL,
        category text NOT NULL,
        token text NOT NULL,
        purpose text NOT NULL,
        justification text NOT NULL,
        outcome text NOT NULL,
        request_id text NOT NULL,
        instance_id text NOT NULL,
        detail text NOT NULL,
        prev_hash bytea NOT NULL,
        hash bytea NOT NULL,
        UNIQUE (chain_id, chain_seq)
      );
      CREATE INDEX access_log_caller_at ON access_log (caller, at DESC, seq DESC);
      CREATE INDEX access_log_token_at ON access_log (token, at DESC, seq DESC) WHERE token <> '';
      CREATE INDEX access_log_at ON access_log (at DESC, seq DESC);

      CREATE TABLE log_checkpoints (
        id bigserial PRIMARY KEY,
        chain_id text NOT NULL,
        chain_seq bigint NOT NULL,
        hash bytea NOT NULL,
        at timestamptz NOT NULL,
        key_id text NOT NULL,
        signature bytea NOT NULL
      );
      CREATE INDEX log_checkpoints_chain ON log_checkpoints (chain_id, chain_seq);

      CREATE FUNCTION fieldvault_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        RAISE EXCEPTION 'fieldvault: % is append-only', TG_TABLE_NAME;
      END $$;
      CREATE TRIGGER access_log_append_only BEFORE UPDATE OR DELETE ON access_log
        FOR EACH ROW EXECUTE FUNCTION fieldvault_append_only();
      CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON access_log
        FOR EACH STATEMENT EXECUTE FUNCTION fieldvault_append_only();
      CREATE TRIGGER log_checkpoints_append_only BEFORE UPDATE OR DELETE ON log_checkpoints
        FOR EACH ROW EXECUTE FUNCTION fieldvault_append_only();
      CREATE TRIGGER log_checkpoints_no_truncate BEFORE TRUNCATE ON log_checkpoints
        FOR EACH STATEMENT EXECUTE FUNCTION fieldvault_append_only();
    `,
  },
  {
    version: 3,
    name: "two-person key destruction requests",
    sql: `
      CREATE TABLE destroy_requests (
        id text PRIMARY KEY,
        category text NOT NULL,
        version integer NOT NULL,
        crypto_shred boolean NOT NULL,
        requested_by text NOT NULL,
        requested_at timestamptz NOT NULL DEFAULT now(),
        approved_by text,
        approved_at timestamptz
      );
    `,
  },
  {
    version: 10,
    name: "checkpoints v2: numbered per signing key, chained to their predecessor",
    // Existing rows stay version 1 (no number, no predecessor) and keep verifying as before.
    // ADD COLUMN with a constant default rewrites no row, so the append-only triggers do not fire.
    sql: `
      ALTER TABLE log_checkpoints
        ADD COLUMN version smallint NOT NULL DEFAULT 1,
        ADD COLUMN number bigint,
        ADD COLUMN prev_checkpoint bytea,
        ADD COLUMN closed boolean NOT NULL DEFAULT false;
      CREATE INDEX log_checkpoints_key_number ON log_checkpoints (key_id, number) WHERE version = 2;
    `,
  },
  {
    version: 20,
    name: "consumed CVV markers (single use that does not trust Redis)",
    sql: `
      CREATE TABLE cvv_consumed (
        token text PRIMARY KEY,
        consumed_at timestamptz NOT NULL DEFAULT now()
      );
      CREATE INDEX cvv_consumed_at ON cvv_consumed (consumed_at);
    `,
  },
  {
    version: 21,
    name: "metadata MACs on token rows and KEK states",
    sql: `
      ALTER TABLE tokens ADD COLUMN meta_mac bytea;
      ALTER TABLE kek_versions ADD COLUMN state_mac bytea;
    `,
  },
  {
    version: 30,
    name: "two-person rules by policy caller",
    sql: `
      ALTER TABLE destroy_requests ADD COLUMN requester_caller text;
      ALTER TABLE destroy_requests ADD COLUMN approver_caller text;
    `,
  },
  {
    version: 31,
    name: "subject links record the policy caller that made them",
    sql: `
      ALTER TABLE token_subjects ADD COLUMN caller text NOT NULL DEFAULT '';
      ALTER TABLE token_subjects DROP CONSTRAINT token_subjects_pkey;
      ALTER TABLE token_subjects ADD PRIMARY KEY (subject_ref, token_id, caller);
    `,
  },
  {
    version: 32,
    name: "break-glass grants",
    sql: `
      CREATE TABLE break_glass_grants (
        id text PRIMARY KEY,
        requester_caller text NOT NULL,
        requested_by text NOT NULL,
        categories text[] NOT NULL,
        purpose text NOT NULL,
        justification text NOT NULL,
        duration_seconds integer NOT NULL CHECK (duration_seconds > 0),
        requested_at timestamptz NOT NULL,
        approver_caller text,
        approved_by text,
        approved_at timestamptz,
        expires_at timestamptz,
        CHECK ((approver_caller IS NULL) = (approved_at IS NULL)),
        CHECK (approver_caller IS NULL OR approver_caller <> requester_caller)
      );
    `,
  },
  {
    version: 40,
    name: "format-preserving card tokens (aliases of a token row)",
    sql: `
      CREATE TABLE token_aliases (
        token_id text PRIMARY KEY REFERENCES tokens (id) ON DELETE CASCADE,
        alias text NOT NULL UNIQUE,
        range_key text NOT NULL
      );
      CREATE INDEX token_aliases_range ON token_aliases (range_key);
    `,
  },
  {
    version: 41,
    name: "expired-token purge index",
    sql: `CREATE INDEX tokens_expires_at ON tokens (expires_at) WHERE expires_at IS NOT NULL;`,
  },
];

const MIGRATION_LOCK = 0x66766d67; // "fvmg"

/** Applies pending migrations; safe with several instances starting at once. Returns the versions applied. */
export async function migrate(db: Db): Promise<number[]> {
  return db.withAdvisoryLock(MIGRATION_LOCK, async (session) => {
    // Only create the bookkeeping table when missing: a least-privilege role without CREATE on the
    // schema can then start against an already-migrated database.
    const { rows: exists } = await session.query<{ t: string | null }>("SELECT to_regclass('schema_migrations')::text AS t", []);
    if (!exists[0]?.t) {
      await session.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
        version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    }
    const { rows } = await session.query<{ version: number }>("SELECT version FROM schema_migrations");
    const done = new Set(rows.map((r) => r.version));
    const applied: number[] = [];
    for (const m of MIGRATIONS) {
      if (done.has(m.version)) continue;
      await session.query("BEGIN");
      try {
        await session.query(m.sql);
        await session.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [m.version, m.name]);
        await session.query("COMMIT");
      } catch (err) {
        await session.query("ROLLBACK").catch(() => undefined);
        throw err;
      }
      applied.push(m.version);
    }
    return applied;
  });
}

export async function schemaVersion(db: Db): Promise<number> {
  const { rows } = await db.query<{ v: number | null }>("SELECT max(version) AS v FROM schema_migrations");
  return rows[0]?.v ?? 0;
}
