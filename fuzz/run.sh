#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# fuzz/run.sh [SECONDS] [TARGET...] - build the libFuzzer targets with clang
# and run each for SECONDS (default 60).  Targets: fuzz_label, fuzz_config
# (fuzz/) and fuzz_keyfile (the setup tool's key-file parsers, with its seed
# corpus in tools/p11ticket/corpus/keyfile).
#
# The build goes to $P11T_FUZZ_BUILD (default build-fuzz/ in the source
# tree).  New inputs are collected in BUILD/fuzz-work/TARGET; the seed corpus
# (fuzz/corpus/TARGET, replayed by ctest in ordinary builds) is only read.  A
# crash leaves its reproducer in BUILD/fuzz-artifacts/ and fails the script;
# copy the reproducer into the seed corpus once the bug is fixed so the
# replay test keeps it fixed.
set -euo pipefail

secs=${1:-60}
shift || true
targets=("$@")
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ${#targets[@]} -eq 0 ]; then
  targets=(fuzz_label fuzz_config)
  if [ -f "$root/tools/p11ticket/fuzz_keyfile.c" ]; then
    targets+=(fuzz_keyfile)
  fi
fi

corpus_of() {
  case $1 in
    fuzz_keyfile) echo "$root/tools/p11ticket/corpus/keyfile" ;;
    *) echo "$root/fuzz/corpus/$1" ;;
  esac
}
case $secs in
  ''|*[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

build=${P11T_FUZZ_BUILD:-$root/build-fuzz}
cc=${P11T_FUZZ_CC:-clang} # not $CC: a CI may set CC=gcc
if ! command -v "$cc" >/dev/null; then
  echo "$0: $cc not found; libFuzzer needs clang" >&2
  exit 2
fi

CC=$cc cmake -S "$root" -B "$build" -DP11T_FUZZ=ON -DP11T_BUILD_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"

status=0
for t in "${targets[@]}"; do
  work=$build/fuzz-work/$t
  art=$build/fuzz-artifacts
  mkdir -p "$work" "$art"
  echo "== $t for ${secs}s"
  if ! "$build/bin/$t" -max_total_time="$secs" -max_len=4096 -timeout=10 \
      -print_final_stats=1 -artifact_prefix="$art/$t-" \
      "$work" "$(corpus_of "$t")"; then
    echo "== $t FOUND A CRASH (reproducer in $art)" >&2
    status=1
  fi
done
exit $status
