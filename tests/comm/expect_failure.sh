#!/usr/bin/env bash
# Usage: expect_failure.sh {nonzero|any} REGEX COMMAND...
# Runs COMMAND, prints its output, and passes when the output matches REGEX (and, with
# "nonzero", when COMMAND failed). For fault tests whose mpirun must fail with a clear message.
set -u
expect=$1
pattern=$2
shift 2
start=$(date +%s)
out=$("$@" 2>&1)
rc=$?
echo "$out"
echo "expect_failure: exit status ${rc} after $(($(date +%s) - start)) s"
if [ "$expect" = nonzero ] && [ "$rc" -eq 0 ]; then
  echo "expect_failure: FAIL: expected a non-zero exit status"
  exit 1
fi
if ! grep -Eq -- "$pattern" <<<"$out"; then
  echo "expect_failure: FAIL: the output does not match /${pattern}/"
  exit 1
fi
echo "expect_failure: ok"
