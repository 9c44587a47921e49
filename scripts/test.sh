#!/usr/bin/env bash
# The whole suite: lint, unit tests, and the network-namespace tests (root needed for those).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m ruff check ntma tests benchmarks
python3 -m pytest -q -rs "$@"
