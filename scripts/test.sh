#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# scripts/test.sh - build p11ticket and run the whole test suite twice:
#   1. a normal build with warnings as errors (-DP11T_WERROR=ON);
#   2. an AddressSanitizer + UndefinedBehaviorSanitizer build
#      (-DP11T_SANITIZE=ON) of everything, the same tests again.
#   3. a ThreadSanitizer build (-DP11T_TSAN=ON) running the multi-threaded
#      C tests (label "threads") and the end-to-end tests against the
#      threaded p11ticket-server (label "e2e");
#   4. only with P11T_TEST_VALGRIND=1: the end-to-end scripts once more,
#      against build 1, with p11ticket-server and p11ticket under valgrind
#      (slow: several minutes).
#   5. as root, unless P11T_NO_APT=1: the Debian packages (tests/package.sh:
#      dpkg-buildpackage, lintian, install, a ticket round trip, removal).
# On Debian 12 as root it first installs the dependencies (P11T_NO_APT=1
# skips that).  Build trees: build/werror, build/sanitize and build/tsan.
#
# The last line is the sum of all runs: "total: N passed, N failed".
# A build that fails counts as one failed test.  Exit status 0 only if every
# build succeeds and every test passes.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/install-deps.sh
. scripts/install-deps.sh
p11t_install_deps

jobs=${P11T_JOBS:-2}
total_pass=0
total_fail=0

# run_suite NAME CMAKE_ARGS...: configure, build, ctest; adds to the totals.
# ctest_args (an array, normally empty) is passed to ctest.
ctest_args=()
run_suite() {
    local name=$1 dir=$root/build/$1 log rc=0
    shift
    echo
    echo "=== $name: configure and build ($*)"
    mkdir -p "$dir"
    if ! cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$dir/cmake.log" 2>&1; then
        cat "$dir/cmake.log"
        echo "=== $name: configure FAILED"
        total_fail=$((total_fail + 1))
        return 0
    fi
    if ! cmake --build "$dir" -j "$jobs"; then
        echo "=== $name: build FAILED"
        total_fail=$((total_fail + 1))
        return 0
    fi
    echo "=== $name: ctest"
    log=$dir/ctest.log
    (cd "$dir" && ctest --output-on-failure -j "$jobs" "${ctest_args[@]}") 2>&1 |
        tee "$log" || rc=$?
    local line pass fail all
    line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1) || true
    if [[ "$line" =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
        fail=${BASH_REMATCH[1]}
        all=${BASH_REMATCH[2]}
        pass=$((all - fail))
    else
        echo "=== $name: ctest ran no test (exit status $rc)"
        pass=0
        fail=1
    fi
    if ((rc != 0 && fail == 0)); then
        echo "=== $name: ctest exited with status $rc"
        fail=1
    fi
    echo "=== $name: $pass passed, $fail failed"
    total_pass=$((total_pass + pass))
    total_fail=$((total_fail + fail))
}

mkdir -p build
run_suite werror -DP11T_WERROR=ON -DP11T_SANITIZE=OFF

# Sanitizer run.  Only our own ASan-built executables load the provider; the
# openssl CLI used as a client runs with OPENSSL_CONF=/dev/null.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if [[ -f "$root/tests/lsan.supp" ]]; then
    export LSAN_OPTIONS=suppressions=$root/tests/lsan.supp:print_suppressions=0
fi
# The fresh-clone demo (label demo) builds its own tree: once is enough.
ctest_args=(-LE demo)
run_suite sanitize -DP11T_WERROR=ON -DP11T_SANITIZE=ON
ctest_args=()
unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS

# ThreadSanitizer run of the multi-threaded tests and of the end-to-end
# tests (p11ticket-server is threaded): a data race fails them.
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
ctest_args=(-L 'threads|e2e')
run_suite tsan -DP11T_WERROR=ON -DP11T_TSAN=ON
ctest_args=()
unset TSAN_OPTIONS

runs="werror + sanitize + tsan builds"
if [[ "${P11T_TEST_VALGRIND:-0}" == 1 && -x "$root/build/werror/bin/p11ticket-server" ]]; then
    runs+=" + valgrind"
    echo
    echo "=== valgrind: end-to-end tests with the server and the tool under valgrind"
    vpass=0
    vfail=0
    for script in "$root"/tests/e2e/*.sh; do
        t=$(basename "$script" .sh)
        [[ $t == *_lib ]] && continue # helpers, not tests
        if P11T_VALGRIND=1 P11T_BUILD=$root/build/werror timeout 900 bash "$script" \
            >"$root/build/valgrind-$t.log" 2>&1; then
            echo "    valgrind $t: passed"
            vpass=$((vpass + 1))
        else
            echo "    valgrind $t: FAILED"
            tail -n 40 "$root/build/valgrind-$t.log"
            vfail=$((vfail + 1))
        fi
    done
    echo "=== valgrind: $vpass passed, $vfail failed"
    total_pass=$((total_pass + vpass))
    total_fail=$((total_fail + vfail))
fi

# The Debian packages (tests/package.sh): build from a copy of the tree,
# lintian, install, a ticket round trip with installed paths only, removal;
# about 20 s.  It needs root and the packages install-deps.sh installs.
if [[ "$(id -u)" == 0 && "${P11T_NO_APT:-0}" != 1 ]]; then
    runs+=" + package"
    echo
    echo "=== package: tests/package.sh"
    if P11T_JOBS=$jobs bash "$root/tests/package.sh" >"$root/build/package.log" 2>&1; then
        echo "=== package: 1 passed, 0 failed"
        total_pass=$((total_pass + 1))
    else
        tail -n 40 "$root/build/package.log"
        echo "=== package: 0 passed, 1 failed (log: build/package.log)"
        total_fail=$((total_fail + 1))
    fi
fi

echo
echo "$runs, all tests:"
echo "total: $total_pass passed, $total_fail failed"
((total_fail == 0))
