#!/usr/bin/env bash
# The image's start command: put the served models' weights in the cache, then become the
# server. Arguments go to `python -m server` (--host, --port); settings come from VIDSERVE_*.
#
# Why fetch here when the server would fetch on its own: a host that cannot download fails
# at once, with the fetcher's instructions (what to download, where to put it) and a non-zero
# exit that a restart policy sees, instead of a live server whose /readyz never turns ready.
#
# It needs only a `python` on PATH with vidserve installed, so it runs outside Docker too
# (tests/deploy/test_deploy.py starts it that way).
set -euo pipefail

log() { echo "entrypoint: $*" >&2; }

# Models the server will load that have no explicit file in VIDSERVE_WEIGHTS, one a line.
# Settings that do not validate print nothing: the server then reports them in full (exit 2).
models_to_fetch() {
    python -c '
from server.settings import Settings
settings = Settings()
print("\n".join(m for m in settings.models if m not in settings.weights))
' 2>/dev/null || true
}

# The cache root exactly as the fetcher and the server resolve it (VIDSERVE_CACHE_DIR).
cache_dir() {
    python -c 'from models.weights.fetch import cache_dir; print(cache_dir())'
}

# Weights baked into the image (BAKE_WEIGHTS) sit outside the cache, so a volume mounted on
# the cache cannot hide them. Link each into the cache unless the cache has a file of that
# name; the fetcher then verifies it like any cached file and downloads nothing. A link left
# dangling by an image without that file is replaced (ln -f), or refetched by the fetcher.
link_baked_weights() {
    local baked="${VIDSERVE_BAKED_WEIGHTS:-}/weights"
    [[ -n "${VIDSERVE_BAKED_WEIGHTS:-}" && -d "${baked}" ]] || return 0
    local target
    target="$(cache_dir)/weights"
    mkdir -p "${target}"
    local file
    for file in "${baked}"/*; do
        [[ -f "${file}" && ! -e "${target}/${file##*/}" ]] || continue
        ln -sf "${file}" "${target}/${file##*/}"
        log "using baked ${file##*/}"
    done
}

fetch_weights() {
    local quiet=()
    [[ -t 2 ]] || quiet=(--quiet)  # progress bars only on a terminal, not in docker logs
    local model
    for model in $(models_to_fetch); do
        # Verifies a cached file (size, sha256 when pinned) and downloads only when needed.
        local path
        if ! path="$(python -m models fetch "${quiet[@]}" "${model}")"; then
            log "cannot get the weights of ${model} (the reason is above); not starting"
            exit 1
        fi
        log "${model}: ${path}"
    done
}

link_baked_weights
fetch_weights
# exec: the server replaces this shell, so SIGTERM reaches uvicorn and it shuts down in order.
exec python -m server "$@"
