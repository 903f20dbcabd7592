#!/usr/bin/env bash
# Builds the libFuzzer target tools/fuzz/safetensors_header_fuzz.cc into OUT_DIR with clang++
# (ASan + UBSan), compiling the sources it needs directly. Rebuilds only when a source changed.
#   tools/fuzz/build_fuzzer.sh OUT_DIR    build OUT_DIR/safetensors_header_fuzz
#   tools/fuzz/build_fuzzer.sh --check    exit 0 when clang++ and libFuzzer are usable
# Needs the Debian packages clang and libclang-rt-14-dev: MOE_SETUP_EXTRA=fuzz tools/setup.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cxx=${MOE_FUZZ_CXX:-clang++}

check_toolchain() {
  if ! command -v "$cxx" >/dev/null 2>&1; then
    echo "build_fuzzer.sh: $cxx not found (install: MOE_SETUP_EXTRA=fuzz tools/setup.sh," \
         "Debian packages clang libclang-rt-14-dev)" >&2
    return 1
  fi
  local probe
  probe=$(mktemp -d)
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
    >"$probe/probe.cc"
  if ! "$cxx" -fsanitize=fuzzer "$probe/probe.cc" -o "$probe/probe" >"$probe/log" 2>&1; then
    echo "build_fuzzer.sh: $cxx cannot link libFuzzer (-fsanitize=fuzzer); install the Debian" \
         "package libclang-rt-14-dev (MOE_SETUP_EXTRA=fuzz tools/setup.sh). Linker said:" >&2
    tail -n 3 "$probe/log" >&2
    rm -rf "$probe"
    return 1
  fi
  rm -rf "$probe"
}

if [ "${1:-}" = --check ]; then
  check_toolchain
  exit $?
fi
out=${1:?usage: tools/fuzz/build_fuzzer.sh OUT_DIR | --check}
check_toolchain

mkdir -p "$out/obj"
out=$(cd "$out" && pwd)
binary="$out/safetensors_header_fuzz"
sources=("$root"/tools/fuzz/safetensors_header_fuzz.cc "$root"/moe/checkpoint/safetensors*.cc
         "$root"/moe/base/*.cc)
inputs=("${sources[@]}" "$root"/moe/checkpoint/safetensors*.h "$root"/moe/base/*.h "$0")
if [ -x "$binary" ] && [ -z "$(find "${inputs[@]}" -newer "$binary" 2>/dev/null)" ]; then
  echo "build_fuzzer.sh: $binary is up to date"
  exit 0
fi

if pkg-config --exists absl_status absl_statusor absl_strings absl_str_format 2>/dev/null; then
  read -r -a absl_libs <<<"$(pkg-config --libs absl_status absl_statusor absl_strings \
                             absl_str_format)"
else  # the Debian 20220623 libraries a Status / StrCat / StrFormat user needs
  absl_libs=()
  for lib in statusor status cord cordz_info cord_internal cordz_functions cordz_handle \
             exponential_biased synchronization graphcycles_internal stacktrace symbolize \
             debugging_internal demangle_internal malloc_internal time time_zone civil_time \
             str_format_internal strings strings_internal int128 throw_delegate \
             raw_logging_internal base spinlock_wait log_severity; do
    absl_libs+=("-labsl_$lib")
  done
fi

flags=(-std=c++17 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -I"$root")
echo "build_fuzzer.sh: compiling ${#sources[@]} sources with $cxx"
objects=()
pids=()
for src in "${sources[@]}"; do
  obj="$out/obj/$(basename "$src" .cc).o"
  objects+=("$obj")
  "$cxx" "${flags[@]}" -c "$src" -o "$obj" &
  pids+=($!)
  # at most nproc compiles at once
  while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do sleep 0.2; done
done
for pid in "${pids[@]}"; do wait "$pid"; done
"$cxx" "${flags[@]}" "${objects[@]}" "${absl_libs[@]}" -lpthread -o "$binary.tmp"
mv "$binary.tmp" "$binary"
echo "build_fuzzer.sh: built $binary"
