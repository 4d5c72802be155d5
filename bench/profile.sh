#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# bench/profile.sh - the instruction-count profile behind docs/performance.md.
#
#   profile.sh BENCH PROVIDER_MODULE [PAIRS]
#
# On a throwaway SoftHSM token (bench/token.sh), runs
# `p11ticket-bench --loop WAY PAIRS` under callgrind for three ways (the
# provider with session copies, the bare floor on the same session copies,
# and the floor on public session keys), collecting only inside the
# seal+open loop, and prints instructions per seal+open pair: in total, in
# each PKCS#11 call, and outside the token.  Instruction counts do not
# depend on the machine's load, so the table is stable where timings are
# not.  Needs valgrind and python3.  PAIRS defaults to 2000 (about a minute).
set -euo pipefail

bench=${1:?usage: profile.sh BENCH PROVIDER_MODULE [PAIRS]}
provider=${2:?usage: profile.sh BENCH PROVIDER_MODULE [PAIRS]}
pairs=${3:-2000}
for tool in valgrind callgrind_annotate python3; do
    command -v "$tool" >/dev/null || { echo "profile: $tool not found" >&2; exit 1; }
done

# shellcheck source=bench/token.sh
source "$(dirname "${BASH_SOURCE[0]}")/token.sh"
bench_token "$provider"

ways=(prov-copies floor-session floor-public)
for way in "${ways[@]}"; do
    echo "profile: $way, $pairs pairs under callgrind..." >&2
    if ! valgrind --tool=callgrind --callgrind-out-file="$dir/cg.$way" \
        --toggle-collect=bench_sealopen_loop \
        "$bench" --config "$dir/openssl.cnf" --loop "$way" "$pairs" \
        >"$dir/out.$way" 2>"$dir/err.$way"; then
        cat "$dir/err.$way" >&2
        echo "profile: p11ticket-bench --loop $way failed" >&2
        exit 1
    fi
    callgrind_annotate --inclusive=yes --threshold=100 "$dir/cg.$way" \
        >"$dir/ann.$way" 2>/dev/null
done

# The loop also runs 64 warm-up pairs inside the collected function.
python3 - "$dir" "$((pairs + 64))" "${ways[@]}" <<'PYEOF'
import re, sys

d, n, ways = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
calls = ["C_EncryptInit", "C_Encrypt", "C_DecryptInit", "C_Decrypt",
         "C_SignInit", "C_Sign"]
rows = {}
for w in ways:
    text = open(f"{d}/ann.{w}").read()
    total = re.search(r"^\s*([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text, re.M)
    if total is None:
        sys.exit(f"profile: no totals for {w}")
    r = {"total": int(total.group(1).replace(",", ""))}
    for c in calls:
        m = re.search(r"^\s*([\d,]+) \([^)]*\)\s+\?\?\?:%s \[" % c, text, re.M)
        r[c] = int(m.group(1).replace(",", "")) if m else 0
    r["outside the token"] = r["total"] - sum(r[c] for c in calls)
    rows[w] = r

print(f"instructions per seal+open pair ({n} pairs, callgrind)")
print(f"{'':22}" + "".join(f"{w:>16}" for w in ways))
for key in ["total"] + calls + ["outside the token"]:
    print(f"{key:22}" + "".join(f"{rows[w][key] / n:16,.0f}" for w in ways))
base = rows["floor-session"]["total"]
print(f"{'vs floor-session':22}" +
      "".join(f"{rows[w]['total'] / base:16.3f}" for w in ways))
PYEOF
