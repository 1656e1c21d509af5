#!/usr/bin/env bash
# Set everything up, then run the main job: the game on the embedded default scene in a window,
# or, where there is no display, headless (screenshots and a summary under out/).
# Extra arguments go to `latent-reach` (e.g. ./run.sh run --scene scenes/digits.toml).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
exec .venv/bin/latent-reach "$@"
