#!/usr/bin/env bash
# Set everything up, check style with ruff and types with mypy, then run the whole test suite.
# Extra arguments go to pytest (e.g. ./test.sh tests/layout -x).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
echo "[test] ruff check" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "[test] mypy" >&2
.venv/bin/python -m mypy
.venv/bin/python -m mypy --strict game/core
echo "[test] pytest" >&2
exec .venv/bin/python -m pytest "$@"
