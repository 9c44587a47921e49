#!/usr/bin/env bash
# The long fuzz campaign (protocol v2): every target (the codecs, and the DC, node and RS
# machines started from the fuzz world's state), one million mutated inputs each by default;
# hours on a small machine. One process, niced, so it can run beside other work. The table
# and every crash (with a --repro command) go to stdout and to run/fuzz-<seed>.txt.
#   scripts/fuzz.sh                      # 1,000,000 inputs per target, seed 1
#   INPUTS=200000 SEED=7 scripts/fuzz.sh --target messages. --target dc
set -euo pipefail
cd "$(dirname "$0")/.."
INPUTS="${INPUTS:-1000000}"
SEED="${SEED:-1}"
status=0
mkdir -p run
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" nice -n 10 \
    python3 -m ntma.fuzz --inputs "$INPUTS" --seed "$SEED" "$@" | tee "run/fuzz-$SEED.txt" || status=$?
exit "$status"
