#!/usr/bin/env bash
# The ctest entry safetensors_header_fuzz_run: builds the safetensors header fuzzer into OUT_DIR
# and fuzzes it for a bounded time, seeded with tools/fuzz/corpus. Fails when the fuzzer finds a
# crash, or when clang++ / libFuzzer are missing and cannot be installed (never skips silently).
#   tools/fuzz/run_fuzz_test.sh OUT_DIR [SECONDS]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:?usage: tools/fuzz/run_fuzz_test.sh OUT_DIR [SECONDS]}
seconds=${2:-20}

if ! "$root/tools/fuzz/build_fuzzer.sh" --check 2>/dev/null; then
  echo "run_fuzz_test.sh: clang++/libFuzzer missing; running MOE_SETUP_EXTRA=fuzz tools/setup.sh"
  if ! MOE_SETUP_EXTRA=fuzz "$root/tools/setup.sh"; then
    echo "run_fuzz_test.sh: FAILED: could not install clang and libclang-rt-14-dev" >&2
    exit 1
  fi
  "$root/tools/fuzz/build_fuzzer.sh" --check  # prints why when still unusable
fi
"$root/tools/fuzz/build_fuzzer.sh" "$out"

# New inputs go to a scratch corpus in OUT_DIR; the committed seeds stay untouched.
mkdir -p "$out/corpus" "$out/artifacts"
echo "run_fuzz_test.sh: fuzzing for ${seconds}s"
if ! "$out/safetensors_header_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
     -max_len=4096 -print_final_stats=1 -artifact_prefix="$out/artifacts/" \
     "$out/corpus" "$root/tools/fuzz/corpus"; then
  echo "run_fuzz_test.sh: FAILED: the fuzzer found a crash; reproducer in $out/artifacts:" >&2
  ls -l "$out/artifacts" >&2
  exit 1
fi
echo "run_fuzz_test.sh: no crash"
