#!/usr/bin/env bash
# Sets up everything Latent Reach needs, idempotently; re-running it when nothing changed takes
# about a second. Sourced by ./run.sh and ./test.sh.
#
#  1. Debian packages for offscreen OpenGL through EGL (Mesa), for windows through GLX (Mesa's
#     llvmpipe where there is no GPU), and for the real-window tests (tests/desktop: a virtual X
#     display, input through the X server, screenshots), installed when missing and when allowed
#     (root or password-less sudo; set LATENT_REACH_NO_APT=1 to never touch apt).
#  2. A virtual environment in .venv with torch==2.13.0 installed FIRST (the CPU build on these
#     machines; the package's own range is satisfied by it, so pip never pulls a CUDA build),
#     then the package itself (editable) with its dependencies and the dev tools.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[setup] %s\n' "$*" >&2; }

EGL_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libx11-6)
# GLX for an onscreen window (also on Xvfb); Xvfb, xdotool (XTEST input) and xwd (x11-apps:
# screenshots) for tests/desktop, which skip without them.
DESKTOP_PACKAGES=(libglx-mesa0 xvfb xdotool x11-apps)
if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${EGL_PACKAGES[@]}" "${DESKTOP_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ -n "${LATENT_REACH_NO_APT:-}" ]; then
      log "missing Debian packages ${missing[*]} (LATENT_REACH_NO_APT set: not installing; offscreen rendering may fail, real-window tests skip)"
    elif [ "$(id -u)" = 0 ]; then
      log "installing ${missing[*]}"
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      log "installing ${missing[*]} with sudo"
      sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
      sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      log "missing Debian packages ${missing[*]}; install them (apt-get install ${missing[*]}) for offscreen rendering and the real-window tests"
    fi
  fi
fi

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi

stamp_file=.venv/.setup-stamp
stamp="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp_file" 2>/dev/null || true)" != "$stamp" ]; then
  log "installing torch==2.13.0 (CPU) first"
  .venv/bin/python -m pip install -q torch==2.13.0
  log "installing latent-reach and its dependencies"
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$stamp" > "$stamp_file"
fi
