#!/usr/bin/env bash
# expect_fail.sh PATTERN KIT_ARGS...: runs ofa-conform and passes only when the kit
# fails (exit status 1) and its output has a FAIL line matching PATTERN (grep -E), so
# that a test shows the kit catching a deliberately broken stage for the right reason.
set -uo pipefail
pattern=$1
shift
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne 1 ]; then
    echo "expect_fail: ofa-conform exited $rc, expected 1 (a failed check)"
    exit 1
fi
if ! printf '%s\n' "$out" | grep -Eq "^FAIL $pattern"; then
    echo "expect_fail: no line 'FAIL $pattern' in the kit's output"
    exit 1
fi
echo "expect_fail: the kit failed the stage as expected: $(printf '%s\n' "$out" | grep -E "^FAIL $pattern" | head -1)"
