// Google Benchmark: one expert's GEMM with its weights streaming from memory ("cold") against
// the same GEMM on cached weights ("hot") and a plain read of the same bytes, all in the same
// iteration, for our packed GEMM and for oneDNN's matmul on weights it packed itself (F32:
// its AVX-512 kernels, BF16: AMX where the CPU has it). The shapes are the expert GEMMs of the
// rows where `moe bench --compare` sits furthest under its roofline (OLMoE F32 at T = 128:
// 16 rows per expert; BF16 at T = 512: 64 rows), and Mixtral F32 at T = 128 (32 rows) beside
// them. It tells whether the vendor library gets closer to max(compute, stream) on this
// machine than we do; counters:
//   cold_us, hot_us, read_us  one GEMM from memory, the same from the caches, the read alone
//   pct_roof = 100 * max(hot, read) / cold   (the roofline's overlap: 100 when hidden)
//   pct_serial = 100 * (hot + read) / cold   (100 when compute and stream add up)
//   cold_GB/s, hot_GFLOP/s
// Threads: OpenMP's (OMP_NUM_THREADS; ours splits the panels evenly, oneDNN its own way).
// Cold calls rotate through copies of the weights totalling >= 1 GiB; each iteration times
// one cold pass over every copy, as many hot calls on one copy, then the read (its time is
// the benchmark's).
//   build/bin/moe_cold_gemm_bench [--benchmark_filter=ours]
//
// NOTE: GCC 12's _mm512_reduce_add_ps starts from an undefined vector, which -Wuninitialized
// reports once inlined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/packed_gemm.h"
#include "kernels/cpu/packed_weights.h"
#include "moe/base/tensor.h"
#include "tools/bench_clock.h"
#include "tools/random_normal.h"

#if MOE_HAVE_DNNL
#include <dnnl.hpp>
#endif

namespace moe::kernels {
namespace {

constexpr int64_t kRotationBytes = int64_t{1} << 30;  // larger than any last-level cache

enum Impl : int { kOurs = 0, kOneDnn = 1 };

// The operands of one expert GEMM C[m, n] = A[m, k] . W[n, k]^T and a way to run it on copy i
// of the weights.
struct Gemm {
  int64_t weight_bytes = 0;  // bytes one call streams
  int copies = 0;
  std::string name;  // "ours (amx)", "oneDNN (brg:avx512_core_amx_bf16)"
  std::function<void(int)> run;
  std::vector<const void*> weights;  // per copy, what the read pass streams
};

// The read alone: one word of every cache line of each copy's `bytes`, the lines split evenly
// over the OpenMP threads.
uint32_t ReadAll(const std::vector<const void*>& weights, int64_t bytes) {
  uint32_t sink = 0;
#pragma omp parallel reduction(+ : sink)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t lines = bytes / 64;
    const int64_t begin = lines * t / nt, end = lines * (t + 1) / nt;
    uint32_t s = 0;
    for (const void* w : weights) {
      const uint32_t* p = static_cast<const uint32_t*>(w);
      for (int64_t i = begin; i < end; ++i) s += p[i * 16];
    }
    sink += s;
  }
  return sink;
}

struct Ours {
  std::vector<PackedMatrix> pool;
  std::vector<float> a, c;
  std::vector<uint16_t> a16;
  int64_t m = 0, ld16 = 0;

  Ours(WeightFormat format, int64_t m_rows, int64_t n, int64_t k, Gemm& g) : m(m_rows) {
    const std::vector<float> w = RandomNormal(static_cast<size_t>(n * k), 1);
    a = RandomNormal(static_cast<size_t>(m * k), 2);
    ld16 = RoundUp(k, kBf16Block);
    a16.resize(static_cast<size_t>(m * ld16));
    ConvertRowsToBf16(a.data(), k, m, k, a16.data(), ld16);
    c.resize(static_cast<size_t>(m * RoundUp(n, kPanelWidth)));
    pool.push_back(PackMatrix(w.data(), k, n, k, format));
    g.name = "ours (" + std::string(CpuIsaName(ActiveCpuIsa())) + ")";
    g.weight_bytes = pool[0].StreamBytes();
    g.copies = static_cast<int>(CeilDiv(kRotationBytes, g.weight_bytes));
    for (int i = 1; i < g.copies; ++i) pool.push_back(PackMatrix(w.data(), k, n, k, format));
    for (const PackedMatrix& p : pool) g.weights.push_back(p.data.get());
    const int64_t ldc = RoundUp(n, kPanelWidth);
    g.run = [this, k, ldc](int i) {
      const PackedMatrix& b = pool[static_cast<size_t>(i)];
#pragma omp parallel
      {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int64_t begin = b.num_panels * t / nt, end = b.num_panels * (t + 1) / nt;
        PackedGemm({.w = &b,
                    .a = a.data(),
                    .lda = k,
                    .a_bf16 = a16.data(),
                    .ld_bf16 = ld16,
                    .qa = {},
                    .m = m,
                    .panel_begin = begin,
                    .panel_end = end,
                    .c = c.data() + begin * kPanelWidth,
                    .ldc = ldc});
      }
    };
  }
};

#if MOE_HAVE_DNNL
struct OneDnn {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::optional<dnnl::matmul> matmul;
  std::optional<dnnl::memory> src, dst;
  std::vector<std::unique_ptr<void, AlignedFree>> buffers;
  std::vector<dnnl::memory> weights;  // on `buffers`

  OneDnn(WeightFormat format, int64_t m, int64_t n, int64_t k, Gemm& g) {
    using dnnl::memory;
    const memory::data_type dt =
        format == WeightFormat::kBF16 ? memory::data_type::bf16 : memory::data_type::f32;
    const memory::desc ad({m, k}, dt, memory::format_tag::ab);
    const memory::desc bd({k, n}, dt, memory::format_tag::any);  // oneDNN picks its packing
    const memory::desc cd({m, n}, memory::data_type::f32, memory::format_tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(ad, bd, cd), engine);
    matmul.emplace(pd);
    g.name = std::string("oneDNN (") + pd.impl_info_str() + ")";
    std::vector<float> a = RandomNormal(static_cast<size_t>(m * k), 2);
    memory a32({{m, k}, memory::data_type::f32, memory::format_tag::ab}, engine, a.data());
    src.emplace(ad, engine);
    dnnl::reorder(a32, *src).execute(stream, a32, *src);
    dst.emplace(cd, engine);
    std::vector<float> w = RandomNormal(static_cast<size_t>(n * k), 1);
    memory w32({{k, n}, memory::data_type::f32, memory::format_tag::ba}, engine, w.data());
    g.weight_bytes = static_cast<int64_t>(pd.weights_desc().get_size());
    g.copies = static_cast<int>(CeilDiv(kRotationBytes, g.weight_bytes));
    for (int i = 0; i < g.copies; ++i) {
      // On our allocation (2 MiB pages, as our packed weights), so that both read alike.
      buffers.push_back(AlignedAlloc(pd.weights_desc().get_size()));
      weights.emplace_back(pd.weights_desc(), engine, buffers.back().get());
      dnnl::reorder(w32, weights.back()).execute(stream, w32, weights.back());
      g.weights.push_back(weights.back().get_data_handle());
    }
    stream.wait();
    g.run = [this](int i) {
      matmul->execute(stream, {{DNNL_ARG_SRC, *src},
                               {DNNL_ARG_WEIGHTS, weights[static_cast<size_t>(i)]},
                               {DNNL_ARG_DST, *dst}});
      stream.wait();
    };
  }
};
#endif

void BM_ColdGemm(benchmark::State& state) {
  const auto format = static_cast<WeightFormat>(state.range(0));
  const int64_t m = state.range(1), n = state.range(2), k = state.range(3);
  const auto impl = static_cast<Impl>(state.range(4));
  Gemm g;
  std::unique_ptr<Ours> ours;
#if MOE_HAVE_DNNL
  std::unique_ptr<OneDnn> onednn;
#endif
  if (impl == kOurs) {
    ours = std::make_unique<Ours>(format, m, n, k, g);
  } else {
#if MOE_HAVE_DNNL
    try {
      onednn = std::make_unique<OneDnn>(format, m, n, k, g);
    } catch (const dnnl::error& e) {
      return state.SkipWithError((std::string("oneDNN: ") + e.what()).c_str());
    }
#else
    return state.SkipWithError("built without oneDNN (install libdnnl-dev)");
#endif
  }
  for (int i = 0; i < g.copies; ++i) g.run(i);  // warm-up: page in every copy
  double cold_s = 0, hot_s = 0, read_s = 0;
  uint32_t sink = 0;
  for (auto _ : state) {
    auto start = tools::Clock::now();
    for (int i = 0; i < g.copies; ++i) g.run(i);
    const double cold = tools::Seconds(start);
    cold_s += cold;
    state.SetIterationTime(cold);
    start = tools::Clock::now();
    for (int i = 0; i < g.copies; ++i) g.run(0);
    hot_s += tools::Seconds(start);
    start = tools::Clock::now();
    sink += ReadAll(g.weights, g.weight_bytes);
    read_s += tools::Seconds(start);
  }
  benchmark::DoNotOptimize(sink);
  const double calls = static_cast<double>(state.iterations()) * g.copies;
  const double cold = cold_s / calls, hot = hot_s / calls, read = read_s / calls;
  state.counters["cold_us"] = cold * 1e6;
  state.counters["hot_us"] = hot * 1e6;
  state.counters["read_us"] = read * 1e6;
  state.counters["pct_roof"] = 100 * std::max(hot, read) / cold;
  state.counters["pct_serial"] = 100 * (hot + read) / cold;
  state.counters["cold_GB/s"] = static_cast<double>(g.weight_bytes) / cold * 1e-9;
  state.counters["hot_GFLOP/s"] = 2.0 * static_cast<double>(m * n * k) / hot * 1e-9;
  state.SetLabel(std::string(WeightFormatName(format)) + " " + g.name);
}

// {format, rows, n, k, impl}: OLMoE's gate+up (2048 x 2048) and down (2048 x 1024) projections
// at 16 (F32, T = 128) and 64 rows (BF16, T = 512); a 2048-output slice of Mixtral's gate+up
// (k = 4096) at 32 rows (F32, T = 128).
void Args(benchmark::internal::Benchmark* b) {
  const int f32 = static_cast<int>(WeightFormat::kF32);
  const int bf16 = static_cast<int>(WeightFormat::kBF16);
  for (int impl : {kOurs, kOneDnn}) {
    b->Args({f32, 16, 2048, 2048, impl});
    b->Args({f32, 16, 2048, 1024, impl});
    b->Args({bf16, 64, 2048, 2048, impl});
    b->Args({bf16, 64, 2048, 1024, impl});
    b->Args({f32, 32, 2048, 4096, impl});
  }
}

BENCHMARK(BM_ColdGemm)
    ->Apply(Args)
    ->ArgNames({"fmt", "m", "n", "k", "impl"})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace moe::kernels

BENCHMARK_MAIN();
