// Google Benchmark microbenchmarks of the CPU expert kernels: the packed GEMM per weight format
// and row count (one thread; a decode-sized matrix larger than the L3 so that weights stream
// from memory), against the plain MatmulNT. Counters: GFLOP/s and weight GB/s.
//   build/bin/moe_kernel_bench [--benchmark_filter=PackedGemm/int4]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/packed_gemm.h"
#include "kernels/cpu/packed_weights.h"
#include "tools/random_normal.h"

namespace moe::kernels {
namespace {

constexpr int64_t kN = 1024;
constexpr int64_t kK = 2048;
// Copies of the matrix rotated through: together at least 1 GiB, so that each pass streams
// weights that no last-level cache holds (up to 320 MiB on current Xeons).
constexpr int64_t kRotationBytes = int64_t{1} << 30;

// A copy of a packed matrix in fresh memory.
PackedMatrix Clone(const PackedMatrix& m) {
  PackedMatrix c;
  c.format = m.format;
  c.n = m.n;
  c.k = m.k;
  c.num_panels = m.num_panels;
  c.panel_bytes = m.panel_bytes;
  c.panel_scales = m.panel_scales;
  const size_t data_bytes = static_cast<size_t>(m.num_panels * m.panel_bytes);
  const size_t scale_bytes = static_cast<size_t>(m.num_panels * m.panel_scales) * sizeof(float);
  c.data = AlignedAlloc(std::max<size_t>(1, data_bytes));
  c.scales = AlignedAlloc(std::max<size_t>(1, scale_bytes));
  std::memcpy(c.data.get(), m.data.get(), data_bytes);
  std::memcpy(c.scales.get(), m.scales.get(), scale_bytes);
  return c;
}

void BM_PackedGemm(benchmark::State& state) {
  const auto format = static_cast<WeightFormat>(state.range(0));
  const int64_t m = state.range(1);
  const std::vector<float> w = RandomNormal(static_cast<size_t>(kN * kK), 1);
  std::vector<PackedMatrix> packed;
  packed.push_back(PackMatrix(w.data(), kK, kN, kK, format));
  const int64_t copies = CeilDiv(kRotationBytes, packed[0].StreamBytes());
  for (int64_t i = 1; i < copies; ++i) packed.push_back(Clone(packed[0]));
  const std::vector<float> a = RandomNormal(static_cast<size_t>(m * kK), 2);
  const int64_t ld16 = kK + 32;
  std::vector<uint16_t> a16(static_cast<size_t>(m * ld16));
  ConvertRowsToBf16(a.data(), kK, m, kK, a16.data(), ld16);
  const int64_t ld_q = kK;
  const int64_t groups = kK / kInt4Group;
  std::vector<int8_t> q(static_cast<size_t>(m * ld_q));
  std::vector<float> scale(static_cast<size_t>(m * groups));
  std::vector<int32_t> corr(static_cast<size_t>(m * groups));
  QuantizeRowsInt8(a.data(), kK, m, kK, q.data(), ld_q, scale.data(), corr.data(), groups);
  std::vector<float> c(static_cast<size_t>(m * kN));
  int i = 0;
  for (auto _ : state) {
    const PackedMatrix& b = packed[static_cast<size_t>(i++ % copies)];
    PackedGemm({.w = &b,
                .a = a.data(),
                .lda = kK,
                .a_bf16 = a16.data(),
                .ld_bf16 = ld16,
                .qa = {q.data(), ld_q, scale.data(), corr.data(), groups},
                .m = m,
                .panel_begin = 0,
                .panel_end = b.num_panels,
                .c = c.data(),
                .ldc = kN});
    benchmark::DoNotOptimize(c.data());
  }
  const double passes = static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * kN * kK * passes * 1e-9, benchmark::Counter::kIsRate);
  state.counters["GB/s"] = benchmark::Counter(
      static_cast<double>(packed[0].StreamBytes()) * passes * 1e-9, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(WeightFormatName(format)));
}

void BM_MatmulNT(benchmark::State& state) {
  const int64_t m = state.range(0);
  const std::vector<float> w = RandomNormal(static_cast<size_t>(kN * kK), 1);
  const std::vector<float> a = RandomNormal(static_cast<size_t>(m * kK), 2);
  std::vector<float> c(static_cast<size_t>(m * kN));
  for (auto _ : state) {
    MatmulNT({.a = a.data(),
              .lda = kK,
              .b = w.data(),
              .ldb = kK,
              .c = c.data(),
              .ldc = kN,
              .m = m,
              .n = kN,
              .k = kK});
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * m * kN * kK * static_cast<double>(state.iterations()) * 1e-9,
                         benchmark::Counter::kIsRate);
}

void Args(benchmark::internal::Benchmark* b) {
  for (int f = 0; f < 4; ++f) {
    for (int m : {1, 2, 6, 16, 48, 96}) b->Args({f, m});
  }
}

BENCHMARK(BM_PackedGemm)->Apply(Args)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MatmulNT)->Arg(1)->Arg(48)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace moe::kernels

BENCHMARK_MAIN();
