// Google Benchmark microbenchmarks of the CPU expert kernels: the packed GEMM per weight format
// and row count (one thread; a decode-sized matrix larger than the L3 so that weights stream
// from memory), against the plain MatmulNT. Counters: GFLOP/s and weight GB/s.
//   build/bin/moe_kernel_bench [--benchmark_filter=PackedGemm/int4]
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/packed_gemm.h"
#include "kernels/cpu/packed_weights.h"

namespace moe::kernels {
namespace {

constexpr int64_t kN = 1024;
constexpr int64_t kK = 2048;
// Matrices rotated through so that each pass streams weights the L3 (32 MiB) does not hold.
constexpr int kCopies = 8;

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0, 1);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

void BM_PackedGemm(benchmark::State& state) {
  const auto format = static_cast<WeightFormat>(state.range(0));
  const int64_t m = state.range(1);
  const std::vector<float> w = Random(static_cast<size_t>(kN * kK), 1);
  std::vector<PackedMatrix> packed;
  for (int i = 0; i < kCopies; ++i) packed.push_back(PackMatrix(w.data(), kK, kN, kK, format));
  const std::vector<float> a = Random(static_cast<size_t>(m * kK), 2);
  const int64_t ld_q = kK;
  const int64_t groups = kK / kInt4Group;
  std::vector<int8_t> q(static_cast<size_t>(m * ld_q));
  std::vector<float> scale(static_cast<size_t>(m * groups));
  std::vector<int32_t> corr(static_cast<size_t>(m * groups));
  QuantizeRowsInt8(a.data(), kK, m, kK, q.data(), ld_q, scale.data(), corr.data(), groups);
  std::vector<float> c(static_cast<size_t>(m * kN));
  int i = 0;
  for (auto _ : state) {
    const PackedMatrix& b = packed[static_cast<size_t>(i++ % kCopies)];
    PackedGemm({.w = &b,
                .a = a.data(),
                .lda = kK,
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
  const std::vector<float> w = Random(static_cast<size_t>(kN * kK), 1);
  const std::vector<float> a = Random(static_cast<size_t>(m * kK), 2);
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
    for (int m : {1, 2, 6, 48}) b->Args({f, m});
  }
}

BENCHMARK(BM_PackedGemm)->Apply(Args)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MatmulNT)->Arg(1)->Arg(48)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace moe::kernels

BENCHMARK_MAIN();
