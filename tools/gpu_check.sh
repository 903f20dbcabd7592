#!/usr/bin/env bash
# One call verifies the CUDA backend on a GPU machine: configure and build for the GPU it finds
# (nvidia-smi's compute capability; sm_90a on Hopper), run every `gpu`-labelled ctest and the
# NCCL tests (ctest -R '[Nn]ccl'), an end-to-end `moe run --backend cuda` against the CPU
# backend and the GPU bench, and write one report file.
#
#   tools/gpu_check.sh [REPORT]      REPORT defaults to $OUT/gpu_report.txt (./gpu_report.txt
#                                    when OUT is unset)
#
# Environment: BUILD_DIR (default <repo>/build-gpu), JOBS (default: all cores), SKIP_BENCH=1,
# BENCH_TOKENS (default the bench's own: 1,8,16,32,64,4096), BENCH_REPEATS (default 5),
# DEPS_DIR: a folder of .deb files (Abseil, Protobuf, GoogleTest, nlohmann-json, Open MPI and
# their libraries, from `apt-get download` on a Debian 12 machine) unpacked into a private
# prefix first, for a GPU machine without those packages and without network access.
# Exit status: 0 when every step passed, 1 otherwise (the report says which failed).
set -u -o pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
report=${1:-${OUT:-.}/gpu_report.txt}
build=${BUILD_DIR:-$root/build-gpu}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 4)}
failures=()

mkdir -p "$(dirname "$report")"
: >"$report"

log() { printf '%s\n' "$*" | tee -a "$report"; }
section() {
  log ""
  log "== $* =="
}
# step NAME CMD...: runs CMD with its output appended to the report (and echoed), records a
# failure when it exits non-zero.
step() {
  local name=$1
  shift
  section "$name"
  log "\$ $*"
  local start rc
  start=$(date +%s)
  "$@" 2>&1 | tee -a "$report"
  rc=${PIPESTATUS[0]}
  log "-- $name: exit $rc after $(($(date +%s) - start)) s"
  if [ "$rc" -ne 0 ]; then failures+=("$name (exit $rc)"); fi
  return "$rc"
}
finish() {
  section "summary"
  if [ ${#failures[@]} -eq 0 ]; then
    log "PASS: every step passed"
    exit 0
  fi
  log "FAIL: ${#failures[@]} step(s) failed:"
  for f in "${failures[@]}"; do log "  - $f"; done
  exit 1
}

section "machine"
log "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
log "host: $(hostname 2>/dev/null || echo unknown)"
log "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  "$(git -C "$root" status --porcelain 2>/dev/null | grep -q . && echo '(with local changes)')"
if ! command -v nvidia-smi >/dev/null 2>&1; then
  log "nvidia-smi not found: no NVIDIA GPU to check here"
  failures+=("no GPU (nvidia-smi missing)")
  finish
fi
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1 |
  tee -a "$report"
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ')
if [ -z "$cap" ]; then
  failures+=("nvidia-smi reports no GPU")
  finish
fi
arch=${cap//./}
# Hopper's wgmma/TMA kernels need the arch-specific target.
if [ "$arch" = "90" ]; then arch=90a; fi
log "compute capability $cap -> CMAKE_CUDA_ARCHITECTURES=$arch"
log "nvcc: $(nvcc --version 2>/dev/null | tail -n 1 || echo 'not on PATH')"
log "cmake: $(cmake --version 2>/dev/null | head -n 1 || echo 'not found')"

if [ -n "${DEPS_DIR:-}" ]; then
  prefix=/tmp/moe-deps
  mkdir -p "$prefix"
  for deb in "$DEPS_DIR"/*.deb; do dpkg -x "$deb" "$prefix"; done
  export CMAKE_PREFIX_PATH="$prefix/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PATH="$prefix/usr/bin:$PATH"
  debs=("$DEPS_DIR"/*.deb)
  log "unpacked ${#debs[@]} packages from $DEPS_DIR into $prefix"
fi

generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
step "configure" cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" || finish
step "build" cmake --build "$build" -j "$jobs" || finish
if [ ! -e "$build/libmoe_kernels_cuda.a" ]; then
  log "the build has no CUDA kernels library: was the CUDA toolkit found?"
  failures+=("no CUDA build")
fi

# GPU tests: each must run, not skip, now that a GPU is visible.
step "gpu tests (ctest -L gpu)" ctest --test-dir "$build" -L gpu --output-on-failure \
  --timeout 600
skipped=$(ctest --test-dir "$build" -L gpu 2>&1 | grep -c '(Skipped)' || true)
if [ "$skipped" != "0" ]; then
  log "$skipped gpu-labelled test(s) skipped although a GPU is visible:"
  ctest --test-dir "$build" -L gpu 2>&1 | grep '(Skipped)' | tee -a "$report"
  failures+=("$skipped gpu test(s) skipped")
fi
step "host-side CUDA tests" "$build/bin/cuda_host_test"
step "moe --backend cuda command-line tests" "$build/bin/cuda_cli_test"
step "NCCL tests (ctest -R [Nn]ccl)" ctest --test-dir "$build" -R '[Nn]ccl' --output-on-failure \
  --timeout 600

# End to end: `moe run` on the CPU and on the GPU, same weights and input, compared in Python.
moe="$build/bin/moe"
work=$(mktemp -d)
# shellcheck disable=SC2317  # called through step
e2e() {
  "$moe" init --config olmoe-1b-7b --weights "$work/w.safetensors" --seed 3 &&
    python3 - "$work/in.safetensors" <<'PY' &&
import sys, numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(5)
save_file({"hidden_states": rng.standard_normal((37, 2048)).astype(np.float32)}, sys.argv[1])
PY
    "$moe" run --config olmoe-1b-7b --weights "$work/w.safetensors" --input "$work/in.safetensors" \
      --output "$work/cpu.safetensors" &&
    "$moe" run --backend cuda --config olmoe-1b-7b --weights "$work/w.safetensors" \
      --input "$work/in.safetensors" --output "$work/gpu.safetensors" &&
    python3 - "$work/cpu.safetensors" "$work/gpu.safetensors" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file
cpu, gpu = load_file(sys.argv[1]), load_file(sys.argv[2])
ids_equal = np.array_equal(cpu["topk_ids"], gpu["topk_ids"])
ref, out = cpu["output"].astype(np.float64), gpu["output"].astype(np.float64)
nmse = float(((out - ref) ** 2).sum() / (ref ** 2).sum())
print(f"topk_ids equal: {ids_equal}; output NMSE vs CPU: {nmse:.3e} (bound 5e-4, BF16 experts)")
sys.exit(0 if ids_equal and np.isfinite(out).all() and nmse < 5e-4 else 1)
PY
}
step "moe run --backend cuda vs cpu (olmoe-1b-7b, 37 tokens)" e2e
rm -rf "$work"

if [ "${SKIP_BENCH:-0}" != "1" ]; then
  bench=("$moe" bench --backend cuda --repeats "${BENCH_REPEATS:-5}")
  if [ -n "${BENCH_TOKENS:-}" ]; then bench+=(--tokens "$BENCH_TOKENS"); fi
  step "GPU bench (DeepSeek-V3 experts)" "${bench[@]}"
fi
finish
