# mcp-lens: one image for the proxy (`mcp-lens proxy`, the default) and the bundled Coda MCP
# server (`mcp-lens server`), with the inspector on PATH for `docker exec -it mcp-lens inspector`.
#
#   docker build -t mcp-lens .
#   docker run -v mcp-lens-data:/data -e MCP_LENS_UPSTREAM=http://my-mcp:8081 -p 8080:8080 mcp-lens

# --- build: compile TypeScript and the better-sqlite3 native addon ------------------------------
FROM node:20-bookworm-slim AS build

# better-sqlite3 compiles from source when no prebuilt binary matches: node-gyp needs these.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, so editing the sources does not reinstall them. --ignore-scripts skips the
# package's own `prepare` (a build, before the sources are here); better-sqlite3, the only
# dependency with an install script, is then built explicitly.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund \
 && npm rebuild better-sqlite3

COPY tsconfig.json ./
COPY cli ./cli
COPY common ./common
COPY recording ./recording
COPY analysis ./analysis
COPY store ./store
COPY proxy ./proxy
COPY server ./server
COPY inspector ./inspector
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

# --- runtime: the compiled code and production dependencies only -------------------------------
FROM node:20-bookworm-slim

ENV NODE_ENV=production \
    MCP_LENS_DB=/data/mcp-lens.db \
    MCP_LENS_SERVER_DB=/data/server.db

WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist

# The two commands on PATH (both files start with a `#!/usr/bin/env` node shebang), and /data owned by the
# unprivileged `node` user (uid 1000) before it becomes a volume: a new named volume takes this
# ownership, so the databases can be created without root.
RUN chmod 755 /app/dist/cli/mcp-lens.js /app/dist/inspector/cli.js \
 && ln -s /app/dist/cli/mcp-lens.js /usr/local/bin/mcp-lens \
 && ln -s /app/dist/inspector/cli.js /usr/local/bin/inspector \
 && mkdir -p /data \
 && chown node:node /data

USER node
VOLUME /data

# 8080: the public (proxied) port. 9464: the admin port (/health, /metrics, /live); it listens on
# 127.0.0.1 unless MCP_LENS_ADMIN_HOST says otherwise, so publish it only on purpose.
EXPOSE 8080 9464

# The admin /health answers 200 while the proxy serves. No curl in the slim image: Node's fetch.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.MCP_LENS_ADMIN_PORT||9464)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

CMD ["mcp-lens", "proxy"]
