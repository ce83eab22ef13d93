# fieldvault container image. Multi-stage: build with devDependencies, run with production
# dependencies only, as a non-root user. .ci/prod-smoke.sh runs the SAME commands (marked [B1]…[R5])
# in a clean folder on the CI machine, because Docker cannot run there — keep the two in step.

# ---- build stage -------------------------------------------------------------------------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# [B1] install everything the build needs (buf, ts-proto, typescript are devDependencies); pkcs11js is
# a native addon built by node-gyp, so the slim image needs python3, make and g++ for npm ci
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/* \
 && npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json buf.yaml buf.gen.yaml ./
COPY proto ./proto
COPY src ./src
COPY examples ./examples
# [B2] generate the gRPC code from proto/ and compile to dist/
RUN npm run build

# ---- runtime stage -----------------------------------------------------------------------------
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    FIELDVAULT_MODE=production \
    FIELDVAULT_LISTEN=0.0.0.0:50051 \
    FIELDVAULT_METRICS_LISTEN=0.0.0.0:9464
WORKDIR /app
# [R1] production dependencies only, from the same lock file (build tools only while pkcs11js compiles)
COPY package.json package-lock.json ./
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ \
 && npm ci --omit=dev --no-audit --no-fund && npm cache clean --force \
 && apt-get purge -y python3 make g++ && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
# [R2] the compiled service, the contract (reflection reads proto/) and the default policy
COPY --from=build /app/dist ./dist
COPY proto ./proto
COPY policy ./policy
# [R2b] the CLI on the PATH: `docker exec <container> fieldvault audit verify …`
RUN chmod 755 dist/src/cli/main.js && ln -s /app/dist/src/cli/main.js /usr/local/bin/fieldvault
# [R3] never run as root: the node image's unprivileged user (uid 1000)
USER node
EXPOSE 50051 9464
# [R4] gRPC health (grpc.health.v1.Health/Check); with mTLS it needs FIELDVAULT_HEALTHCHECK_CERT_FILE/_KEY_FILE
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["node", "dist/src/healthcheck.js"]
# [R5] the service; SIGTERM drains in-flight calls, flushes the access log and exits 0
CMD ["node", "dist/src/main.js"]
