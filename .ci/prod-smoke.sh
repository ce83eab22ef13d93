#!/usr/bin/env bash
# Production-mode smoke test: the Dockerfile's stages, run without Docker (Docker cannot run on the
# CI machine). Each step is marked with the Dockerfile step it mirrors ([B1]…[R5]); keep them in step.
#
# Builds in a clean folder (build stage), installs production dependencies into another clean folder
# (runtime stage), then starts `node dist/src/main.js` in production mode as a non-root user against
# the machine's PostgreSQL (a fresh database) and Redis (its own key prefix), over mutual TLS with the
# development certificates and a freshly generated (non-development) root key and signing key. It runs
# the HEALTHCHECK command, makes a tokenize → detokenize call over mTLS with the SDK from dist/, reads
# /metrics, stops the service with SIGTERM (expects exit 0 and a sealed log), and drops the database.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PG_ADMIN_URL="${FIELDVAULT_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
REDIS_URL="${FIELDVAULT_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
WORK="$(mktemp -d /tmp/fieldvault-smoke.XXXXXX)"
BUILD="$WORK/build" APP="$WORK/app" SECRETS="$WORK/secrets"
SUFFIX="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
DB_NAME="fv_smoke_$SUFFIX"
REDIS_PREFIX="fvsmoke:$SUFFIX:"
PID=""
say() { echo "prod-smoke: $*"; }

# Runs node inside the runtime folder (its node_modules: pg, ioredis, the built SDK).
app_node() { (cd "$APP" && node "$@"); }

cleanup() {
  local rc=$?
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; fi
  if [ -d "$APP/node_modules/pg" ]; then
    app_node -e '
      const pg = require("pg"); const { Redis } = require("ioredis");
      const [adminUrl, db, redisUrl, prefix] = process.argv.slice(1);
      (async () => {
        const c = new pg.Client({ connectionString: adminUrl }); await c.connect();
        await c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`); await c.end();
        const r = new Redis(redisUrl); const keys = await r.keys(prefix + "*"); if (keys.length) await r.del(...keys); r.disconnect();
      })().catch((e) => { console.error("prod-smoke: cleanup:", e.message); process.exit(1); });
    ' "$PG_ADMIN_URL" "$DB_NAME" "$REDIS_URL" "$REDIS_PREFIX" || true
  fi
  rm -rf "$WORK"
  if [ "$rc" -eq 0 ]; then say "PASSED"; else say "FAILED (rc=$rc)"; tail -n 30 "$WORK.log" 2>/dev/null || true; fi
  rm -f "$WORK.log"
  exit "$rc"
}
trap cleanup EXIT

# ---- build stage (Dockerfile: FROM … AS build) ---------------------------------------------------
mkdir -p "$BUILD" "$APP" "$SECRETS"
# COPY package.json package-lock.json ./
cp "$REPO/package.json" "$REPO/package-lock.json" "$BUILD/"
say "[B1] npm ci (build stage)"
(cd "$BUILD" && npm ci --no-audit --no-fund --loglevel=error)
# COPY tsconfig.json tsconfig.build.json buf.yaml buf.gen.yaml ./ ; COPY proto src examples (src/gen is in .dockerignore)
cp "$REPO/tsconfig.json" "$REPO/tsconfig.build.json" "$REPO/buf.yaml" "$REPO/buf.gen.yaml" "$BUILD/"
cp -r "$REPO/proto" "$REPO/examples" "$BUILD/"
tar -C "$REPO" --exclude=src/gen -cf - src | tar -C "$BUILD" -xf -
say "[B2] npm run build"
(cd "$BUILD" && npm run build --silent)

# ---- runtime stage (Dockerfile: FROM … AS runtime) -----------------------------------------------
# [R1] COPY package.json package-lock.json ./ ; RUN npm ci --omit=dev
cp "$REPO/package.json" "$REPO/package-lock.json" "$APP/"
say "[R1] npm ci --omit=dev (runtime stage)"
(cd "$APP" && npm ci --omit=dev --no-audit --no-fund --loglevel=error && npm cache clean --force --loglevel=error)
# [R2] COPY --from=build /app/dist ./dist ; COPY proto ./proto ; COPY policy ./policy
cp -r "$BUILD/dist" "$APP/dist"
cp -r "$REPO/proto" "$REPO/policy" "$APP/"
# [R2b] chmod 755 dist/src/cli/main.js (the image links it as /usr/local/bin/fieldvault); it must run as a command
chmod 755 "$APP/dist/src/cli/main.js"
(cd "$APP" && ./dist/src/cli/main.js --help >/dev/null) || { say "[R2b] the CLI does not run as a command"; exit 1; }
if [ -d "$APP/node_modules/typescript" ] || [ -d "$APP/node_modules/jest" ]; then say "devDependencies leaked into the runtime folder"; exit 1; fi
if [ -e "$APP/keys-dev" ] || [ -e "$APP/src" ]; then say "the runtime folder must hold only dist/, proto/, policy/"; exit 1; fi

# ---- secrets and dependencies (what an orchestrator provides) -------------------------------------
openssl rand -base64 32 > "$SECRETS/root.key"
openssl rand -base64 32 > "$SECRETS/signing.key"
for f in ca.pem server.pem server.key payment-service.pem payment-service.key; do cp "$REPO/keys-dev/$f" "$SECRETS/$f"; done
free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
PORT="$(free_port)" METRICS_PORT="$(free_port)"
app_node -e '
  const pg = require("pg"); const c = new pg.Client({ connectionString: process.argv[1] });
  c.connect().then(() => c.query(`CREATE DATABASE ${process.argv[2]}`)).then(() => c.end());
' "$PG_ADMIN_URL" "$DB_NAME"
DB_URL="$(node -e 'const u=new URL(process.argv[1]);u.pathname="/"+process.argv[2];console.log(u.toString())' "$PG_ADMIN_URL" "$DB_NAME")"

# [R3] USER node — run as an unprivileged user when CI runs as root.
RUN_AS=()
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  chmod -R a+rX "$WORK"
  RUN_AS=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
fi

# The runtime image's ENV plus what compose.yaml sets.
export NODE_ENV=production FIELDVAULT_MODE=production
export FIELDVAULT_LISTEN="127.0.0.1:$PORT" FIELDVAULT_METRICS_LISTEN="127.0.0.1:$METRICS_PORT"
export FIELDVAULT_DATABASE_URL="$DB_URL" FIELDVAULT_REDIS_URL="$REDIS_URL" FIELDVAULT_REDIS_PREFIX="$REDIS_PREFIX"
export FIELDVAULT_ROOT_KEY_FILE="$SECRETS/root.key" FIELDVAULT_SIGNING_KEY_FILE="$SECRETS/signing.key"
export FIELDVAULT_TLS_CERT_FILE="$SECRETS/server.pem" FIELDVAULT_TLS_KEY_FILE="$SECRETS/server.key" FIELDVAULT_TLS_CA_FILE="$SECRETS/ca.pem"
export FIELDVAULT_HEALTHCHECK_CERT_FILE="$SECRETS/payment-service.pem" FIELDVAULT_HEALTHCHECK_KEY_FILE="$SECRETS/payment-service.key"
export FIELDVAULT_SHUTDOWN_GRACE_MS=10000
# The smoke test runs on keys-dev/ certificates, which production refuses unless explicitly allowed
# (loudly logged); a real deployment mints its own (docs/operations.md).
export FIELDVAULT_ALLOW_DEV_MATERIAL=true

say "[R5] node dist/src/main.js (production, mTLS) on 127.0.0.1:$PORT"
(cd "$APP" && exec "${RUN_AS[@]}" node dist/src/main.js) > "$WORK.log" 2>&1 &
PID=$!

say "[R4] HEALTHCHECK: node dist/src/healthcheck.js"
ok=""
for _ in $(seq 1 120); do
  if ! kill -0 "$PID" 2>/dev/null; then say "the service exited during start-up"; exit 1; fi
  if app_node dist/src/healthcheck.js >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.5
done
[ -n "$ok" ] || { say "health never reported SERVING"; exit 1; }
app_node dist/src/healthcheck.js fieldvault.v1.TokenService

say "tokenize → detokenize over mTLS with the SDK from dist/"
FIELDVAULT_ADDRESS="localhost:$PORT" FIELDVAULT_CLIENT_CA="$SECRETS/ca.pem" \
FIELDVAULT_CLIENT_CERT="$SECRETS/payment-service.pem" FIELDVAULT_CLIENT_KEY="$SECRETS/payment-service.key" app_node -e '
  const { FieldVaultClient, optionsFromEnv } = require("./dist/src/sdk");
  (async () => {
    const vault = new FieldVaultClient(optionsFromEnv("unused"));
    const [pan, cvv] = await vault.tokenize([{ category: "card_number", value: "4000 0566 5566 5556" }, { category: "card_cvv", value: "321" }]);
    if (pan.masked.last !== "5556") throw new Error("masked view is wrong");
    const values = await vault.reveal([pan.token, cvv.token], { purpose: "payment_authorization", justification: "prod-smoke" });
    if (values[0] !== "4000056655665556" || values[1] !== "321") throw new Error("revealed values differ");
    // A plaintext caller asserting an identity is refused in production.
    const plain = new FieldVaultClient({ address: "127.0.0.1:" + process.env.FIELDVAULT_LISTEN.split(":")[1], caller: "payment-service", deadlineMs: 3000, retry: { attempts: 1 } });
    const refused = await plain.inspect([pan.token]).then(() => false, () => true);
    plain.close(); vault.close();
    if (!refused) throw new Error("a plaintext call was accepted in production mode");
    console.log("prod-smoke: round trip OK (" + pan.masked.display + "), plaintext refused");
  })().catch((e) => { console.error("prod-smoke:", e.message); process.exit(1); });
'

say "GET /metrics"
app_node -e '
  fetch(process.argv[1]).then((r) => r.text()).then((t) => {
    for (const s of [`fieldvault_rpc_total{method="Tokenize",code="OK"} 1`, "fieldvault_db_up 1", "fieldvault_detokenize_items_total{"]) {
      if (!t.includes(s)) { console.error("prod-smoke: /metrics lacks " + s); process.exit(1); }
    }
    if (t.includes("4000056655665556")) { console.error("prod-smoke: a value in /metrics"); process.exit(1); }
  });
' "http://127.0.0.1:$METRICS_PORT/metrics"

say "SIGTERM"
kill -TERM "$PID"
rc=0; wait "$PID" || rc=$?
PID=""
[ "$rc" -eq 0 ] || { say "exit code $rc after SIGTERM"; exit 1; }
grep -q '"fieldvault stopped"' "$WORK.log" || { say "no 'fieldvault stopped' line"; exit 1; }
app_node -e '
  const pg = require("pg"); const c = new pg.Client({ connectionString: process.argv[1] });
  c.connect().then(() => c.query(`SELECT (SELECT max(chain_seq) FROM access_log) AS head, (SELECT max(chain_seq) FROM log_checkpoints) AS sealed`)).then(({ rows }) => {
    c.end();
    if (!rows[0].head || String(rows[0].head) !== String(rows[0].sealed)) { console.error("prod-smoke: the access log was not sealed on shutdown", rows[0]); process.exit(1); }
  });
' "$DB_URL"
