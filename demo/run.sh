#!/usr/bin/env bash
# `make demo`: prepare the demo's database, then serve it until Ctrl-C.
#
#   demo/run.sh [runserver arguments]          (default: 127.0.0.1:8000)
#
# With REDIS_URL set, the demo uses the Redis channel layer and this script also runs
# `manage.py runworker prog-rocker` in a second process, stopped when the server stops.
# Without it, the in-memory layer, with the workers inside runserver: one process.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
python="${DEMO_PYTHON:-$here/../.venv/bin/python}"
# headrace itself comes from src/: `make demo` installs only its dependencies.
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}"
manage=("$python" "$here/manage.py")

"${manage[@]}" migrate --noinput -v0
"${manage[@]}" demo_user

worker=""
stop_worker() {
    if [ -n "$worker" ] && kill -0 "$worker" 2>/dev/null; then
        kill -TERM "$worker" 2>/dev/null || true
    fi
    if [ -n "$worker" ]; then
        wait "$worker" 2>/dev/null || true
    fi
}
trap stop_worker EXIT

if [ -n "${REDIS_URL:-}" ]; then
    echo "REDIS_URL is set: Redis channel layer; starting the worker process (runworker prog-rocker)"
    "${manage[@]}" runworker prog-rocker &
    worker=$!
fi

# No autoreload by default: Ctrl-C then stops uvicorn gracefully (closing every socket).
[ $# -gt 0 ] || set -- --noreload 127.0.0.1:8000
echo "headrace demo: sign in as demo / demo; Ctrl-C stops everything"
"${manage[@]}" runserver "$@"
