#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# bench/run_quick.sh - the CI smoke run of p11ticket-bench (ctest bench_quick).
#
#   run_quick.sh BENCH PROVIDER_MODULE [--full] [p11ticket-bench options]
#
# Creates a throwaway SoftHSM token with random PINs under mktemp -d, writes
# an openssl.cnf with the p11ticket provider section, runs
# `p11ticket-bench --quick` against it (the whole benchmark with --full) and
# checks that the last line of its output is one JSON object holding every
# required key.  It does not judge
# the targets: the numbers of a 30-second run on a shared CI machine are a
# smoke signal, not a verdict.
set -euo pipefail

bench=${1:?usage: run_quick.sh BENCH PROVIDER_MODULE [--full] [options]}
provider=${2:?usage: run_quick.sh BENCH PROVIDER_MODULE [--full] [options]}
shift 2
length=--quick
if [[ ${1:-} == --full ]]; then
    length=
    shift
fi

# shellcheck source=bench/token.sh
source "$(dirname "${BASH_SOURCE[0]}")/token.sh"
bench_token "$provider"

rc=0
"$bench" --config "$dir/openssl.cnf" $length "$@" | tee "$dir/out" || rc=$?
if ((rc != 0)); then
    echo "run_quick: p11ticket-bench exited with $rc" >&2
    exit 1
fi

last=$(tail -n 1 "$dir/out")
required=(tls13_resume_ratio tls12_resume_ratio tls13_full_ratio
          seal_open_vs_floor ring100_vs_ring2 procs2_speedup
          floor_token_us floor_session_us inmem_us prov_us)
if command -v python3 >/dev/null 2>&1; then
    python3 -c '
import json, math, sys
obj = json.loads(sys.argv[1])
missing = [k for k in sys.argv[2:] if not isinstance(obj.get(k), (int, float))]
if missing:
    sys.exit("run_quick: missing or non-numeric keys: " + " ".join(missing))
' "$last" "${required[@]}"
else
    [[ $last == \{*\} ]] || { echo "run_quick: last line is not a JSON object" >&2; exit 1; }
    for k in "${required[@]}"; do
        [[ $last =~ \"$k\":-?[0-9] ]] || { echo "run_quick: no numeric $k" >&2; exit 1; }
    done
fi
echo "run_quick: ok (the last line is JSON with every required key)"
