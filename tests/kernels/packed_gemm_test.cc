// The packed GEMM (every weight format, every ISA) against plain float64 loops over the values
// the packed weights stand for; packing and quantization error; split invariance.
#include "kernels/cpu/packed_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/packed_weights.h"
#include "moe/base/scratch_buffer.h"
#include "tools/random_normal.h"

namespace moe::kernels {
namespace {

constexpr WeightFormat kFormats[] = {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kInt8,
                                     WeightFormat::kInt4};

// Sum (x - y)^2 / sum y^2; NaN anywhere gives NaN (which fails every bound).
double Nmse(const std::vector<float>& x, const std::vector<double>& y) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return den == 0 ? num : num / den;
}

// The ISAs this CPU runs, each set in turn (the ones it lacks are not listed: see
// CpuIsaTest.ReportsWhatThisCpuRuns for what was detected).
std::vector<std::string> Isas() {
  std::vector<std::string> isas;
  for (CpuIsa isa : RunnableCpuIsas()) isas.emplace_back(CpuIsaName(isa));
  return isas;
}

struct Problem {
  std::vector<float> a;          // [m, k]
  std::vector<float> w;          // [n, k]
  std::vector<uint16_t> a_bf16;  // [m, ld_bf16]
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int32_t> corr;
  int64_t m, n, k, ld_bf16, ld_q, groups;
};

Problem MakeProblem(int64_t m, int64_t n, int64_t k, uint64_t seed) {
  Problem p;
  p.a = RandomNormal(static_cast<size_t>(m * k), seed);
  p.w = RandomNormal(static_cast<size_t>(n * k), seed + 1);
  p.m = m;
  p.n = n;
  p.k = k;
  p.ld_bf16 = RoundUp(k, kBf16Block);
  p.a_bf16.resize(static_cast<size_t>(m * p.ld_bf16));
  ConvertRowsToBf16(p.a.data(), k, m, k, p.a_bf16.data(), p.ld_bf16);
  p.groups = (k + kInt4Group - 1) / kInt4Group;
  p.ld_q = p.groups * kInt4Group;
  p.q.resize(static_cast<size_t>(m * p.ld_q));
  p.scale.resize(static_cast<size_t>(m * p.groups));
  p.corr.resize(static_cast<size_t>(m * p.groups));
  QuantizeRowsInt8(p.a.data(), k, m, k, p.q.data(), p.ld_q, p.scale.data(), p.corr.data(),
                   p.groups);
  return p;
}

// The GEMM of rows [row, row + rows) of p over panels [panel_begin, panel_end) into c.
void RunRows(const Problem& p, const PackedMatrix& w, int64_t row, int64_t rows,
             int64_t panel_begin, int64_t panel_end, float* c, int64_t ldc, bool stream_c = false) {
  PackedGemm({.w = &w,
              .a = p.a.data() + row * p.k,
              .lda = p.k,
              .a_bf16 = p.a_bf16.data() + row * p.ld_bf16,
              .ld_bf16 = p.ld_bf16,
              .qa = {p.q.data() + row * p.ld_q, p.ld_q, p.scale.data() + row * p.groups,
                     p.corr.data() + row * p.groups, p.groups},
              .m = rows,
              .panel_begin = panel_begin,
              .panel_end = panel_end,
              .c = c,
              .ldc = ldc,
              .stream_c = stream_c});
}

// C over every panel, with the output poisoned first.
std::vector<float> RunGemm(const Problem& p, const PackedMatrix& w, int64_t ldc) {
  std::vector<float> c(static_cast<size_t>(p.m * ldc), NAN);
  RunRows(p, w, 0, p.m, 0, w.num_panels, c.data(), ldc);
  return c;
}

// float64 A . W^T with W the packed values and A as the kernels read it (int8 steps for INT4,
// BF16 where the ISA's BF16 kernels take BF16 activations).
std::vector<double> Reference(const Problem& p, const PackedMatrix& w) {
  std::vector<float> values(static_cast<size_t>(p.n * p.k));
  UnpackMatrix(w, values.data());
  const GemmInput input = GemmInputFor(w.format, ActiveCpuIsa());
  std::vector<double> ref(static_cast<size_t>(p.m * p.n));
  for (int64_t i = 0; i < p.m; ++i) {
    for (int64_t j = 0; j < p.n; ++j) {
      double sum = 0;
      for (int64_t kk = 0; kk < p.k; ++kk) {
        const double x = input == GemmInput::kInt8 ? static_cast<double>(p.q[i * p.ld_q + kk]) *
                                                         p.scale[i * p.groups + kk / kInt4Group]
                         : input == GemmInput::kBF16
                             ? double{Bf16ToFloat(p.a_bf16[i * p.ld_bf16 + kk])}
                             : double{p.a[i * p.k + kk]};
        sum += x * values[j * p.k + kk];
      }
      ref[i * p.n + j] = sum;
    }
  }
  return ref;
}

class PackedGemmTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { ASSERT_TRUE(SetCpuIsa(GetParam()).ok()); }
  void TearDown() override { ASSERT_TRUE(SetCpuIsa("auto").ok()); }
};

TEST_P(PackedGemmTest, MatchesFloat64OnThePackedValuesAtOddSizes) {
  for (auto [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 16, 32},
                                                                           {1, 1, 1},
                                                                           {7, 33, 65},
                                                                           {13, 48, 100},
                                                                           {6, 5, 2049},
                                                                           {2, 17, 0},
                                                                           {1, 80, 100},
                                                                           {40, 50, 300},
                                                                           {300, 40, 4000},
                                                                           {33, 130, 520},
                                                                           {2, 100, 33},
                                                                           {40, 50, 4200}}) {
    const Problem p = MakeProblem(m, n, k, static_cast<uint64_t>(m * 1000 + n * 10 + k));
    for (WeightFormat f : kFormats) {
      const PackedMatrix w = PackMatrix(p.w.data(), k, n, k, f);
      // Guard columns past n stay NaN.
      const std::vector<float> c = RunGemm(p, w, n + 3);
      std::vector<float> got(static_cast<size_t>(m * n));
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n + 3; ++j) {
          const float v = c[i * (n + 3) + j];
          if (j < n) {
            got[i * n + j] = v;
          } else {
            EXPECT_TRUE(std::isnan(v)) << "column " << j << " past n was written";
          }
        }
      }
      const double nmse = Nmse(got, Reference(p, w));
      EXPECT_LT(nmse, 1e-11) << WeightFormatName(f) << " m=" << m << " n=" << n << " k=" << k;
    }
  }
}

TEST_P(PackedGemmTest, RowsDoNotDependOnTheRowCountOrThePanelSplit) {
  const Problem p = MakeProblem(100, 160, 300, 7);
  for (WeightFormat f : kFormats) {
    const PackedMatrix w = PackMatrix(p.w.data(), p.k, p.n, p.k, f);
    // All 100 rows (AMX: two passes of three row tiles and one of a pair).
    const std::vector<float> all = RunGemm(p, w, p.n);
    // Rows alone, in pairs (the decode tiles of several panels each), in fives (a partial
    // AVX-512 tile), in seventeens (a full and a one-row AMX tile) and in seventy-twos (AMX:
    // three row tiles, then a pair with a partial tile).
    for (int64_t rows : {1, 2, 5, 17, 72}) {
      for (int64_t i = 0; i + rows <= p.m; i += rows) {
        std::vector<float> c(static_cast<size_t>(rows * p.n));
        RunRows(p, w, i, rows, 0, w.num_panels, c.data(), p.n);
        for (int64_t j = 0; j < rows * p.n; ++j) {
          ASSERT_EQ(c[static_cast<size_t>(j)], all[static_cast<size_t>(i * p.n + j)])
              << WeightFormatName(f) << " rows " << rows << " at " << i << " element " << j;
        }
      }
    }
    for (int64_t i = 0; i < p.m; ++i) {
      // Row i alone, one panel at a time.
      for (int64_t panel = 0; panel < w.num_panels; ++panel) {
        float c[16];
        RunRows(p, w, i, 1, panel, panel + 1, c, 16);
        for (int j = 0; j < 16; ++j) {
          ASSERT_EQ(c[j], all[static_cast<size_t>(i * p.n + panel * 16 + j)])
              << WeightFormatName(f) << " row " << i << " column " << panel * 16 + j;
        }
      }
    }
  }
}

// Many rows over a long k (AMX runs them in chunks of k, keeping partial sums in C; AVX-512
// runs rows whose inputs exceed 1 MiB input block by input block across its panel groups, here
// two; one row runs all of k at once): each row bitwise the same alone. INT8 on AMX: the full
// panel pairs expand each chunk once for all row passes, the partial last panel (all of k, more
// than the tile buffer holds) expands in every pass, a row alone expands block by block.
TEST_P(PackedGemmTest, ChunksOfKGiveTheSameRowsAsOnePass) {
  const Problem p = MakeProblem(300, 100, 4200, 13);
  for (WeightFormat f : kFormats) {
    const PackedMatrix w = PackMatrix(p.w.data(), p.k, p.n, p.k, f);
    const std::vector<float> all = RunGemm(p, w, p.n);
    for (int64_t i = 0; i < p.m; i += 37) {
      std::vector<float> c(static_cast<size_t>(p.n));
      RunRows(p, w, i, 1, 0, w.num_panels, c.data(), p.n);
      for (int64_t j = 0; j < p.n; ++j) {
        ASSERT_EQ(c[static_cast<size_t>(j)], all[static_cast<size_t>(i * p.n + j)])
            << WeightFormatName(f) << " row " << i << " column " << j;
      }
    }
  }
}

// Results written with stream_c (non-temporal stores on AMX where the rows allow) are bitwise
// the stored ones: k in chunks and in one pass, a partial last panel, rows that are not whole
// tiles, c aligned (streamed) and one float off (stored as usual); columns past n untouched.
TEST_P(PackedGemmTest, StreamedOutputIsBitwiseTheStoredOne) {
  struct Shape {
    int64_t m, n, k;
  };
  for (const Shape& shape :
       {Shape{300, 40, 4000}, Shape{37, 64, 100}, Shape{96, 40, 100}, Shape{1, 48, 64}}) {
    const Problem p = MakeProblem(shape.m, shape.n, shape.k, 31);
    const int64_t ldc = RoundUp(p.n, 16) + 16;
    for (WeightFormat f : kFormats) {
      const PackedMatrix w = PackMatrix(p.w.data(), p.k, p.n, p.k, f);
      const std::vector<float> stored = RunGemm(p, w, ldc);
      for (int64_t offset : {0, 1}) {
        ScratchBuffer<float> out;
        out.Reserve(p.m * ldc + offset);
        std::fill(out.data(), out.data() + p.m * ldc + offset, -7.0f);
        float* c = out.data() + offset;
        RunRows(p, w, 0, p.m, 0, w.num_panels, c, ldc, /*stream_c=*/true);
        for (int64_t i = 0; i < p.m; ++i) {
          for (int64_t j = 0; j < ldc; ++j) {
            const float want = j < p.n ? stored[static_cast<size_t>(i * ldc + j)] : -7.0f;
            ASSERT_EQ(c[i * ldc + j], want)
                << WeightFormatName(f) << " m=" << p.m << " k=" << p.k << " offset " << offset
                << " row " << i << " column " << j;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, PackedGemmTest, ::testing::ValuesIn(Isas()),
                         [](const auto& info) { return info.param; });

// What quantization costs on N(0, 1) weights and inputs: relative L2 of one A . W^T against F32.
// Measured: BF16 1.5e-3, INT8 3.9e-3, INT4 8.7e-2 (symmetric int4 steps of a group's range/15 on
// Gaussian weights: about 8.5% rms per weight, plus int8 activations).
TEST(PackedWeightsTest, QuantizationErrorIsWithinTheFormatsBounds) {
  const Problem p = MakeProblem(8, 256, 1024, 3);
  const PackedMatrix exact = PackMatrix(p.w.data(), p.k, p.n, p.k, WeightFormat::kF32);
  const std::vector<double> ref = Reference(p, exact);
  const std::pair<WeightFormat, double> bounds[] = {
      {WeightFormat::kBF16, 3e-3}, {WeightFormat::kInt8, 8e-3}, {WeightFormat::kInt4, 0.1}};
  for (auto [f, bound] : bounds) {
    const PackedMatrix w = PackMatrix(p.w.data(), p.k, p.n, p.k, f);
    const double rel_l2 = std::sqrt(Nmse(RunGemm(p, w, p.n), ref));
    EXPECT_LT(rel_l2, bound) << WeightFormatName(f);
    EXPECT_GT(rel_l2, bound / 10) << WeightFormatName(f) << ": suspiciously exact";
  }
}

// INT4 on uniform random weights (moe init's, and the "random weights"): one GEMM's
// relative L2 against F32 (int8 activations included). Measured 6.2e-2 (a layer of three such
// GEMMs: ~0.106).
TEST(PackedWeightsTest, Int4ErrorOfOneGemmOnUniformWeightsIsBelow8Percent) {
  Problem p = MakeProblem(8, 256, 1024, 21);
  std::mt19937_64 rng(22);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& v : p.w) v = uniform(rng);
  const PackedMatrix exact = PackMatrix(p.w.data(), p.k, p.n, p.k, WeightFormat::kF32);
  const PackedMatrix int4 = PackMatrix(p.w.data(), p.k, p.n, p.k, WeightFormat::kInt4);
  const double rel_l2 = std::sqrt(Nmse(RunGemm(p, int4, p.n), Reference(p, exact)));
  std::printf("INT4 GEMM on uniform weights: relative L2 %.3g\n", rel_l2);
  EXPECT_LT(rel_l2, 8e-2);
  EXPECT_GT(rel_l2, 8e-3) << "suspiciously exact";
}

TEST(PackedWeightsTest, Bf16RoundsToNearestEvenAndKeepsNan) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.00390625f)), 1.0f);       // halfway: rounds to even
  EXPECT_EQ(Bf16ToFloat(FloatToBf16(1.01171875f)), 1.015625f);  // halfway: rounds up to even
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(NAN))));
}

TEST(PackedWeightsTest, Bf16RowsRoundEveryValueAsFloatToBf16AndPadWithZeros) {
  // Halfway cases, NaN, infinities, denormals, signed zero, and N(0, 1) values; 37 inputs per
  // row (a partial vector and padding to 64).
  std::vector<float> x = RandomNormal(3 * 37, 11);
  const float specials[] = {1.00390625f, 1.01171875f, -1.00390625f, NAN,  -NAN,  INFINITY,
                            -INFINITY,   1e-40f,      -3e-39f,      0.0f, -0.0f, 3.4e38f};
  for (size_t i = 0; i < std::size(specials); ++i) x[i * 3] = specials[i];
  std::vector<uint16_t> out(3 * 64, 0xffff);
  ConvertRowsToBf16(x.data(), 37, 3, 37, out.data(), 64);
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t i = 0; i < 64; ++i) {
      const uint16_t want = i < 37 ? FloatToBf16(x[r * 37 + i]) : uint16_t{0};
      ASSERT_EQ(out[r * 64 + i], want) << "row " << r << " input " << i;
    }
  }
}

TEST(PackedWeightsTest, Avx512Int8RowsAreBitwiseThePortableOnes) {
  if (static_cast<int>(DetectedCpuIsa()) < static_cast<int>(CpuIsa::kAvx512)) {
    GTEST_SKIP() << "this CPU runs " << CpuIsaName(DetectedCpuIsa()) << ", not avx512";
  }
  // 4 rows of 77 inputs (two whole groups and a partial one of 13): N(0, 1) values, halfway
  // cases, NaN, infinities, an all-zero group, and a group of denormals whose scale's inverse
  // overflows to infinity.
  constexpr int64_t kM = 4, kK = 77, kLd = 96, kGroups = 3;
  std::vector<float> x = RandomNormal(kM * kK, 13);
  const float specials[] = {NAN, -NAN, INFINITY, -INFINITY, 0.5f, -1.5f, 2.5f, -0.0f, 3.4e38f};
  for (size_t i = 0; i < std::size(specials); ++i) x[i * 5] = specials[i];
  for (int64_t i = 0; i < 32; ++i) x[kK + i] = 0.0f;                       // row 1, group 0
  for (int64_t i = 0; i < 32; ++i) x[2 * kK + 32 + i] = (i % 3) * 1e-45f;  // row 2, group 1
  std::vector<int8_t> q_portable(kM * kLd, 99), q_avx512(kM * kLd, 99);
  std::vector<float> s_portable(kM * kGroups), s_avx512(kM * kGroups);
  std::vector<int32_t> c_portable(kM * kGroups), c_avx512(kM * kGroups);
  PortableQuantizeRowsInt8(x.data(), kK, kM, kK, q_portable.data(), kLd, s_portable.data(),
                           c_portable.data(), kGroups);
  Avx512QuantizeRowsInt8(x.data(), kK, kM, kK, q_avx512.data(), kLd, s_avx512.data(),
                         c_avx512.data(), kGroups);
  EXPECT_EQ(q_avx512, q_portable);
  EXPECT_EQ(c_avx512, c_portable);
  for (size_t i = 0; i < s_portable.size(); ++i) {
    EXPECT_EQ(std::memcmp(&s_avx512[i], &s_portable[i], sizeof(float)), 0)
        << "scale " << i << ": " << s_avx512[i] << " vs " << s_portable[i];
  }
  EXPECT_EQ(s_portable[kGroups], 0.0f);  // the all-zero group
  EXPECT_TRUE(std::isinf(1.0f / s_portable[2 * kGroups + 1]));
}

TEST(PackedWeightsTest, Int4ValuesAreScaledIntegersInMinus8To7) {
  const std::vector<float> w = RandomNormal(3 * 64, 9);
  const PackedMatrix m = PackMatrix(w.data(), 64, 3, 64, WeightFormat::kInt4);
  std::vector<float> values(3 * 64);
  UnpackMatrix(m, values.data());
  for (int64_t col = 0; col < 3; ++col) {
    for (int64_t g = 0; g < 2; ++g) {
      const float scale = m.panel_scale(0)[g * 16 + col];
      ASSERT_GT(scale, 0);
      for (int64_t i = 0; i < 32; ++i) {
        const float q = values[col * 64 + g * 32 + i] / scale;
        EXPECT_NEAR(q, std::nearbyint(q), 1e-4);
        EXPECT_GE(q, -8);
        EXPECT_LE(q, 7);
      }
    }
  }
}

TEST(PackedWeightsTest, ParseNamesTheFlagAndTheValue) {
  EXPECT_EQ(*ParseWeightFormat("int4"), WeightFormat::kInt4);
  const absl::StatusOr<WeightFormat> bad = ParseWeightFormat("fp8");
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "--weight-dtype: unknown weight format 'fp8' (expected f32, bf16, int8 or int4)");
}

TEST(CpuIsaTest, UnknownAndUnsupportedIsasAreRefused) {
  const absl::Status unknown = SetCpuIsa("sse9");
  EXPECT_EQ(unknown.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(unknown.message(),
            "--isa: unknown ISA 'sse9' (expected auto, amx, avx512, avx2 or portable)");
  EXPECT_EQ(ActiveCpuIsa(), DetectedCpuIsa());
  ASSERT_TRUE(SetCpuIsa("portable").ok());
  EXPECT_EQ(ActiveCpuIsa(), CpuIsa::kPortable);
  ASSERT_TRUE(SetCpuIsa("auto").ok());
  EXPECT_EQ(ActiveCpuIsa(), DetectedCpuIsa());
  // Every level above the detected one is refused, naming it and what was detected.
  for (CpuIsa isa : {CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kAmx}) {
    if (static_cast<int>(isa) <= static_cast<int>(DetectedCpuIsa())) continue;
    const absl::Status s = SetCpuIsa(CpuIsaName(isa));
    EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
    EXPECT_NE(s.message().find(CpuIsaName(DetectedCpuIsa())), absl::string_view::npos) << s;
    EXPECT_EQ(ActiveCpuIsa(), DetectedCpuIsa());
  }
  // The runnable list is every level up to the detected one, plainest first.
  const std::vector<CpuIsa> runnable = RunnableCpuIsas();
  ASSERT_FALSE(runnable.empty());
  EXPECT_EQ(runnable.front(), CpuIsa::kPortable);
  EXPECT_EQ(runnable.back(), DetectedCpuIsa());
}

// The AVX-512 F32 and INT4 kernels sum in the AVX2 kernels' order (one FMA chain per output;
// exact integer group sums): bitwise the same outputs.
TEST(CpuIsaTest, Avx512F32AndInt4AreBitwiseTheAvx2Results) {
  if (static_cast<int>(DetectedCpuIsa()) < static_cast<int>(CpuIsa::kAvx512)) {
    GTEST_SKIP() << "this CPU runs " << CpuIsaName(DetectedCpuIsa()) << ", not avx512";
  }
  // The second shape's rows (1.3 MB of F32 inputs) run input block by input block across
  // two panel groups on AVX-512.
  for (const Problem& p : {MakeProblem(23, 70, 333, 17), MakeProblem(80, 100, 4000, 19)}) {
    for (WeightFormat f : {WeightFormat::kF32, WeightFormat::kInt4}) {
      const PackedMatrix w = PackMatrix(p.w.data(), p.k, p.n, p.k, f);
      ASSERT_TRUE(SetCpuIsa("avx2").ok());
      const std::vector<float> avx2 = RunGemm(p, w, p.n);
      ASSERT_TRUE(SetCpuIsa("avx512").ok());
      const std::vector<float> avx512 = RunGemm(p, w, p.n);
      ASSERT_TRUE(SetCpuIsa("auto").ok());
      for (size_t i = 0; i < avx2.size(); ++i) {
        ASSERT_EQ(avx2[i], avx512[i]) << WeightFormatName(f) << " m=" << p.m << " element " << i;
      }
    }
  }
}

}  // namespace
}  // namespace moe::kernels
