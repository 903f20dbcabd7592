// Google Benchmark: how much of one core's memory stream hides behind its own compute, with no
// GEMM code involved. Each step streams 1 KiB from a 1 GiB buffer (demand loads, summed; or the
// same loads with each line prefetched into L2 8 KiB ahead, as the kernels stream panels) and/or
// runs `groups` compute groups: AVX-512 (16 independent FMAs, as in the F32 kernels) or AMX (the
// BF16 kernel's inner step: two A and two B tiles loaded from a 512 KiB L2-resident buffer and
// four TDPBF16PS). Every iteration times the stream alone, the compute alone and both
// interleaved; `hidden` = (stream + compute - both) / min(stream, compute): 1 when the shorter
// one hides entirely behind the longer (the roofline's max), 0 when they add up (noisy when the
// shorter is a few ns: see `added_ns` = both - the longer, per step). The reported time is the
// interleaved phase's; each iteration also runs the other two (about 3x the wall time).
// What it shows holds for this pattern: the compute interleaved with the stream per 1 KiB.
//   build/bin/moe_overlap_bench [--benchmark_filter=BM_Overlap/1/]
//
// NOTE: GCC 12's _mm512_reduce_add_ps starts from an undefined vector, which -Wuninitialized
// reports once inlined (as -Wmaybe-uninitialized does in the kernels).
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "kernels/cpu/amx_tile_config.h"
#include "kernels/cpu/cpu_isa.h"
#include "moe/base/tensor.h"
#include "tools/bench_clock.h"

namespace moe::kernels {
namespace {

constexpr int64_t kStreamBytes = int64_t{1} << 30;  // larger than any last-level cache
constexpr int64_t kTileBytes = int64_t{512} << 10;  // tiles' source: in L2
constexpr int64_t kStep = 1024;                     // bytes streamed per step
constexpr int64_t kSteps = 64 * 1024;               // 64 MiB per timed phase
constexpr int64_t kPrefetchAhead = 8192;            // prefetched stream: into L2, 8 KiB ahead

enum Kind : int { kFma = 0, kAmx = 1 };
enum Phase : int { kStreamOnly = 1, kComputeOnly = 2, kBoth = 3 };

// Only the functions that run AVX-512 and AMX instructions are compiled for them, so that the
// binary starts (and reports a skipped row) on CPUs without them.
#define MOE_OVERLAP_TARGET __attribute__((target("avx2,fma,avx512f,amx-tile,amx-bf16")))

// `kPhase` of kSteps steps from stream offset `offset`; returns a value that depends on every
// load so that the compiler keeps them.
template <Kind kKind, bool kPrefetch, int kPhase>
MOE_OVERLAP_TARGET float Run(const uint8_t* stream, int64_t offset, const uint8_t* tiles,
                             int groups) {
  __m512 sum = _mm512_setzero_ps();
  __m512 acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_set1_ps(1.0f + static_cast<float>(i) * 1e-3f);
  const __m512 x = _mm512_set1_ps(0.999f);
  const __m512 y = _mm512_set1_ps(1e-4f);
  for (int64_t s = 0; s < kSteps; ++s) {
    if constexpr ((kPhase & kStreamOnly) != 0) {
      const uint8_t* p = stream + (offset + s * kStep) % kStreamBytes;
      const uint8_t* ahead = stream + (offset + s * kStep + kPrefetchAhead) % kStreamBytes;
      // One add chain: ~4 cycles per line, far below the memory's ~6 ns per line.
      for (int64_t j = 0; j < kStep; j += 64) {
        if constexpr (kPrefetch) {
          _mm_prefetch(reinterpret_cast<const char*>(ahead + j), _MM_HINT_T1);
        }
        sum = _mm512_add_ps(sum, _mm512_load_ps(reinterpret_cast<const float*>(p + j)));
      }
    }
    if constexpr ((kPhase & kComputeOnly) != 0) {
      for (int g = 0; g < groups; ++g) {
        if constexpr (kKind == kFma) {
          for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
        } else {
          const uint8_t* t = tiles + ((s * groups + g) * 4096) % kTileBytes;
          _tile_loadd(4, t, 64);
          _tile_loadd(6, t + 1024, 64);
          _tile_dpbf16ps(0, 4, 6);
          _tile_loadd(7, t + 2048, 64);
          _tile_dpbf16ps(1, 4, 7);
          _tile_loadd(5, t + 3072, 64);
          _tile_dpbf16ps(2, 5, 6);
          _tile_dpbf16ps(3, 5, 7);
        }
      }
    }
  }
  for (int i = 0; i < 16; ++i) sum = _mm512_add_ps(sum, acc[i]);
  return _mm512_reduce_add_ps(sum);
}

template <Kind kKind, bool kPrefetch>
MOE_OVERLAP_TARGET double Seconds(int phase, const uint8_t* stream, int64_t offset,
                                  const uint8_t* tiles, int groups, float* sink) {
  const auto t0 = tools::Clock::now();
  if (phase == kStreamOnly)
    *sink += Run<kKind, kPrefetch, kStreamOnly>(stream, offset, tiles, groups);
  if (phase == kComputeOnly)
    *sink += Run<kKind, kPrefetch, kComputeOnly>(stream, offset, tiles, groups);
  if (phase == kBoth) *sink += Run<kKind, kPrefetch, kBoth>(stream, offset, tiles, groups);
  return tools::Seconds(t0);
}

// Tiles 0-3 (the accumulators) zeroed, 4-7 (A and B) 16 rows of 64 bytes.
MOE_OVERLAP_TARGET void StartTiles() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  LoadTileConfig(cfg);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
}

MOE_OVERLAP_TARGET void EndTiles() { _tile_release(); }

void BM_Overlap(benchmark::State& state) {
  const auto kind = static_cast<Kind>(state.range(0));
  const int groups = static_cast<int>(state.range(1));
  const bool prefetch = state.range(2) != 0;
  const CpuIsa isa = DetectedCpuIsa();
  if (kind == kAmx && isa != CpuIsa::kAmx) return state.SkipWithError("no AMX on this CPU");
  if (kind == kFma && isa != CpuIsa::kAmx && isa != CpuIsa::kAvx512) {
    return state.SkipWithError("no AVX-512 on this CPU");
  }
  const auto stream_memory = AlignedAlloc(static_cast<size_t>(kStreamBytes));
  const auto tile_memory = AlignedAlloc(static_cast<size_t>(kTileBytes));
  auto* stream = static_cast<uint8_t*>(stream_memory.get());
  auto* tiles = static_cast<uint8_t*>(tile_memory.get());
  // Written, so that every page is backed by its own memory (untouched pages would all read
  // the one zero page, from cache); 0x01010101 is a normal float (~2.4e-38), no denormal stalls.
  std::memset(stream, 1, static_cast<size_t>(kStreamBytes));
  // BF16 1.0 everywhere: finite sums however many steps run.
  for (int64_t i = 0; i < kTileBytes; i += 2) {
    tiles[i] = 0x80;
    tiles[i + 1] = 0x3f;
  }
  if (kind == kAmx) StartTiles();
  double stream_s = 0, compute_s = 0, both_s = 0;
  float sink = 0;
  int64_t offset = 0;
  for (auto _ : state) {
    const auto run = kind == kFma ? (prefetch ? Seconds<kFma, true> : Seconds<kFma, false>)
                                  : (prefetch ? Seconds<kAmx, true> : Seconds<kAmx, false>);
    stream_s += run(kStreamOnly, stream, offset, tiles, groups, &sink);
    offset += kSteps * kStep;
    compute_s += run(kComputeOnly, stream, offset, tiles, groups, &sink);
    const double both = run(kBoth, stream, offset, tiles, groups, &sink);
    both_s += both;
    offset += kSteps * kStep;
    state.SetIterationTime(both);
  }
  if (kind == kAmx) EndTiles();
  benchmark::DoNotOptimize(sink);
  const double n = static_cast<double>(state.iterations()) * kSteps;
  state.counters["stream_ns"] = stream_s / n * 1e9;
  state.counters["compute_ns"] = compute_s / n * 1e9;
  state.counters["both_ns"] = both_s / n * 1e9;
  state.counters["stream_GB/s"] = static_cast<double>(kStep) * n / stream_s * 1e-9;
  state.counters["hidden"] = (stream_s + compute_s - both_s) / std::min(stream_s, compute_s);
  state.counters["added_ns"] = (both_s - std::max(stream_s, compute_s)) / n * 1e9;
  state.SetLabel(std::string(kind == kFma ? "fma" : "amx") + " x" + std::to_string(groups) +
                 (prefetch ? ", prefetched stream" : ", loaded stream"));
}

BENCHMARK(BM_Overlap)
    ->ArgsProduct({{kFma, kAmx}, {1, 2, 4, 8, 16, 32}, {0, 1}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace moe::kernels

BENCHMARK_MAIN();
