#!/usr/bin/env bash
# The main demo: bring the lab up, reach cn from mn by name through the tunnel, tear down.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m ntma lab demo "$@"
