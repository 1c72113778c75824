#!/usr/bin/env bash
# Set up the benchmark's peers and tools. Idempotent: re-running only fills what is missing.
#
#   bench/setup.sh           full: bench/.env (a venv with the Python peers, the load
#                            generator and roomcast from this repo) and an ActionHero 29
#                            project in bench/.peers/actionhero (needs node + npm)
#   bench/setup.sh --quick   only what `run.py --quick` needs beyond the dev venv
#                            (picows, websockets, psutil, orjson, uvloop), installed into
#                            the interpreter named by $PYTHON (default: python3)
#
# Registries used: PyPI (pip), npm (npx/npm), and Debian (apt-get, for redis-server only).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BENCH_DIR")"
PYTHON="${PYTHON:-python3}"
ACTIONHERO_VERSION="${ACTIONHERO_VERSION:-29.3.5}"

GENERATOR_PKGS=(picows "websockets>=14" psutil orjson uvloop)
PEER_PKGS=("python-socketio>=5,<6" "uvicorn>=0.30" "redis>=5" py-spy pyinstrument)

say() { printf '[bench setup] %s\n' "$*"; }

if [[ "${1:-}" == "--quick" ]]; then
    say "installing the load generator's packages into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "${GENERATOR_PKGS[@]}"
    "$PYTHON" -c 'import picows, websockets, psutil; print("[bench setup] picows", picows.__version__ if hasattr(picows, "__version__") else "", "websockets", websockets.__version__)'
    exit 0
fi

# --- the bench-only Python environment -----------------------------------------------------
if [[ ! -x "$BENCH_DIR/.env/bin/python" ]]; then
    say "creating bench/.env"
    "$PYTHON" -m venv "$BENCH_DIR/.env"
    "$BENCH_DIR/.env/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
fi
ENV_PY="$BENCH_DIR/.env/bin/python"
say "installing Python peers and tools into bench/.env"
"$ENV_PY" -m pip install --quiet --disable-pip-version-check "${GENERATOR_PKGS[@]}" "${PEER_PKGS[@]}"

if [[ -f "$REPO_DIR/pyproject.toml" ]]; then
    say "installing roomcast from the repo (editable) into bench/.env"
    if ! "$ENV_PY" -m pip install --quiet --disable-pip-version-check -e "$REPO_DIR[speed]"; then
        say "WARNING: roomcast did not install; its targets will be skipped"
    fi
else
    say "no pyproject.toml at the repo root yet: roomcast targets will be skipped"
fi

# --- redis-server (ActionHero always needs it; the cluster scenario too) --------------------
if ! command -v redis-server >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "installing redis-server from Debian"
        apt-get install -y --no-install-recommends redis-server >/dev/null 2>&1 \
            || { apt-get update >/dev/null && apt-get install -y --no-install-recommends redis-server >/dev/null; }
    else
        say "WARNING: redis-server not found: ActionHero and the cluster scenario will be skipped"
    fi
fi

# --- ActionHero 29, made by its own generator -----------------------------------------------
AH_DIR="$BENCH_DIR/.peers/actionhero"
if ! command -v npx >/dev/null 2>&1; then
    say "WARNING: node/npm not found: the ActionHero peer will be skipped"
    exit 0
fi
mkdir -p "$AH_DIR"
if [[ ! -f "$AH_DIR/package.json" ]]; then
    say "generating an ActionHero $ACTIONHERO_VERSION project in bench/.peers/actionhero"
    (cd "$AH_DIR" && npx --yes "actionhero@$ACTIONHERO_VERSION" generate >/dev/null)
fi
if [[ ! -d "$AH_DIR/node_modules/@types/formidable" || ! -d "$AH_DIR/node_modules/actionhero" ]]; then
    # the generated project does not compile without @types/formidable
    say "npm install (plus the @types/formidable dev dependency)"
    (cd "$AH_DIR" && npm install --no-audit --no-fund --loglevel=error --save-dev @types/formidable >/dev/null)
fi
# Bench configuration: a starting chat room (plus rooms r0..r<N-1> when $AH_BENCH_ROOMS=N, for
# the rooms and churn scenarios), the websocket server, bound to loopback on $PORT.
# The file name sorts after the generated config files, so it is merged last.
cat > "$AH_DIR/src/config/zz_bench.ts.new" <<'EOF'
// roomcast bench overrides: loaded last (the file name sorts after the generated configs).
const benchRooms: Record<string, Record<string, never>> = { defaultRoom: {} };
for (let i = 0; i < parseInt(process.env.AH_BENCH_ROOMS || "0", 10); i++) {
  benchRooms[`r${i}`] = {};
}
export const DEFAULT = {
  general: () => ({
    startingChatRooms: benchRooms,
    serverToken: process.env.AH_SERVER_TOKEN || "roomcast-bench",
  }),
  web: () => ({
    enabled: true,
    bindIP: "127.0.0.1",
    port: parseInt(process.env.PORT || "8080", 10),
  }),
  websocket: () => ({ enabled: true }),
};
EOF
if ! cmp -s "$AH_DIR/src/config/zz_bench.ts.new" "$AH_DIR/src/config/zz_bench.ts" 2>/dev/null \
        || [[ ! -f "$AH_DIR/dist/server.js" || ! -f "$AH_DIR/dist/config/zz_bench.js" ]]; then
    mv "$AH_DIR/src/config/zz_bench.ts.new" "$AH_DIR/src/config/zz_bench.ts"
    say "building the ActionHero project"
    (cd "$AH_DIR" && npm run build --silent >/dev/null)
else
    rm -f "$AH_DIR/src/config/zz_bench.ts.new"
fi
say "ActionHero $(cd "$AH_DIR" && node -p 'require("actionhero/package.json").version') ready"
say "done: run  bench/.env/bin/python bench/run.py"
