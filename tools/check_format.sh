#!/usr/bin/env bash
# Fails, listing the files, when a tracked C++/CUDA source is not clang-formatted.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check_format: clang-format is not installed" >&2; exit 1; }
files=$(git ls-files '*.h' '*.cc' '*.cu' '*.cuh')
bad=()
for f in $files; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "check_format: not clang-formatted (run 'make format'): ${bad[*]}" >&2
  exit 1
fi
echo "check_format: $(echo "$files" | wc -w) files formatted"
