// The grouped GEMM on the GPU: the reference kernel and the Hopper kernel against a float64 CPU
// computation on the exact inputs the GPU sees (bf16-rounded, or FP8 codes dequantized with their
// block scales), plus the GPU FP8 quantizer against the host one, and the host-side checks of
// the launchers. GPU tests skip with "no CUDA device visible" without a GPU and the Hopper ones
// with "not an sm_90 device" on other GPUs.
#if MOE_HAVE_CUDA

#include "kernels/cuda/grouped_gemm_sm90.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/cuda/fp8_block_scale.h"
#include "kernels/cuda/fp8_quantize.h"
#include "kernels/cuda/grouped_gemm_params.h"
#include "kernels/cuda/grouped_gemm_reference.h"
#include "moe/base/dtype.h"

namespace moe::kernels::cuda {
namespace {

using GemmFn = std::function<absl::Status(const GroupedGemmParams&, cudaStream_t)>;

constexpr uint8_t kPoison = 0xFF;      // bf16 0xFFFF and f32 0xFFFFFFFF are NaN
constexpr int64_t kGuardBytes = 4096;  // after the output; must stay poisoned

bool DeviceVisible() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return count > 0;
}

bool Sm90Visible() {
  int device = 0;
  return DeviceVisible() && cudaGetDevice(&device) == cudaSuccess &&
         GroupedGemmSm90Supported(device);
}

#define MOE_SKIP_WITHOUT_GPU()                  \
  do {                                          \
    if (!DeviceVisible()) {                     \
      GTEST_SKIP() << "no CUDA device visible"; \
    }                                           \
  } while (0)
#define MOE_SKIP_WITHOUT_SM90()              \
  do {                                       \
    MOE_SKIP_WITHOUT_GPU();                  \
    if (!Sm90Visible()) {                    \
      GTEST_SKIP() << "not an sm_90 device"; \
    }                                        \
  } while (0)

// Device memory freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) {
      EXPECT_EQ(cudaMalloc(&data_, bytes), cudaSuccess);
    }
  }
  template <typename T>
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size() * sizeof(T)) {
    if (bytes_ > 0) {
      EXPECT_EQ(cudaMemcpy(data_, host.data(), bytes_, cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  ~DeviceBuffer() { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return data_; }
  std::vector<uint8_t> Download() const {
    std::vector<uint8_t> host(bytes_);
    if (bytes_ > 0) {
      EXPECT_EQ(cudaMemcpy(host.data(), data_, bytes_, cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return host;
  }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// One grouped GEMM problem: what the GPU gets (bytes and scales) and the float values those
// bytes mean (what the float64 reference multiplies).
struct Problem {
  GemmDtype dtype = GemmDtype::kBF16;
  GemmEpilogue epilogue = GemmEpilogue::kStore;
  GemmOutDtype out = GemmOutDtype::kBF16;
  std::vector<int64_t> offsets;  // [num_experts + 1]
  int64_t max_rows = 0, n = 0, k = 0;
  std::vector<float> a, b, b_up;  // values: [max_rows, k], [E, n, k], [E, n, k]
  std::vector<uint8_t> a_bytes, b_bytes, b_up_bytes;
  std::vector<float> a_scales, b_scales, b_up_scales;  // FP8 only

  int64_t num_experts() const { return static_cast<int64_t>(offsets.size()) - 1; }
  int64_t rows() const { return offsets.back(); }
  int64_t out_bytes() const { return out == GemmOutDtype::kBF16 ? 2 : 4; }
};

std::vector<float> RandomValues(size_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// BF16 bytes of `x`; x becomes the rounded values.
std::vector<uint8_t> ToBf16(std::vector<float>& x) {
  std::vector<uint8_t> bytes(x.size() * 2);
  for (size_t i = 0; i < x.size(); ++i) {
    const uint16_t bits = F32ToBf16(x[i]);
    std::memcpy(&bytes[2 * i], &bits, 2);
    x[i] = Bf16ToF32(bits);
  }
  return bytes;
}

// FP8 weights: codes and scales; w becomes the dequantized values.
void QuantizeWeights(std::vector<float>& w, int64_t experts, int64_t n, int64_t k,
                     std::vector<uint8_t>* codes, std::vector<float>* scales) {
  codes->resize(w.size());
  scales->resize(experts * ((n + 127) / 128) * ((k + 127) / 128));
  QuantizeWeightsE4M3(w.data(), experts, n, k, codes->data(), scales->data());
  DequantizeWeightsE4M3(codes->data(), scales->data(), experts, n, k, w.data());
}

Problem MakeProblem(GemmDtype dtype, GemmEpilogue epilogue, GemmOutDtype out,
                    const std::vector<int64_t>& counts, int64_t n, int64_t k, int64_t extra_rows,
                    uint64_t seed) {
  std::mt19937_64 rng(seed);
  Problem p;
  p.dtype = dtype;
  p.epilogue = epilogue;
  p.out = out;
  p.offsets = {0};
  for (int64_t c : counts) p.offsets.push_back(p.offsets.back() + c);
  p.max_rows = p.rows() + extra_rows;
  p.n = n;
  p.k = k;
  const int64_t experts = p.num_experts();
  p.a = RandomValues(p.max_rows * k, rng);
  p.b = RandomValues(experts * n * k, rng);
  if (epilogue == GemmEpilogue::kSwiGLU) p.b_up = RandomValues(experts * n * k, rng);
  if (dtype == GemmDtype::kBF16) {
    p.a_bytes = ToBf16(p.a);
    p.b_bytes = ToBf16(p.b);
    if (epilogue == GemmEpilogue::kSwiGLU) p.b_up_bytes = ToBf16(p.b_up);
    // Rows past the last expert hold NaN: they must never reach a written row.
    for (int64_t i = p.rows() * k; i < p.max_rows * k; ++i) {
      p.a_bytes[2 * i] = 0xC0;
      p.a_bytes[2 * i + 1] = 0x7F;
    }
  } else {
    const int64_t k_blocks = (k + 127) / 128;
    p.a_bytes.resize(p.max_rows * k);
    p.a_scales.resize(p.max_rows * k_blocks);
    QuantizeActivationsE4M3(p.a.data(), p.max_rows, k, p.a_bytes.data(), p.a_scales.data());
    DequantizeActivationsE4M3(p.a_bytes.data(), p.a_scales.data(), p.max_rows, k, p.a.data());
    for (int64_t i = p.rows() * k; i < p.max_rows * k; ++i) p.a_bytes[i] = 0x7F;  // NaN
    for (int64_t i = p.rows() * k_blocks; i < p.max_rows * k_blocks; ++i) {
      p.a_scales[i] = NAN;
    }
    QuantizeWeights(p.b, experts, n, k, &p.b_bytes, &p.b_scales);
    if (epilogue == GemmEpilogue::kSwiGLU) {
      QuantizeWeights(p.b_up, experts, n, k, &p.b_up_bytes, &p.b_up_scales);
    }
  }
  return p;
}

// The float64 result for rows [0, rows()), [rows(), n].
std::vector<double> Float64Reference(const Problem& p) {
  std::vector<double> c(p.rows() * p.n);
  for (int64_t e = 0; e < p.num_experts(); ++e) {
    for (int64_t r = p.offsets[e]; r < p.offsets[e + 1]; ++r) {
      const float* a = &p.a[r * p.k];
      for (int64_t j = 0; j < p.n; ++j) {
        const float* b = &p.b[(e * p.n + j) * p.k];
        double gate = 0;
        for (int64_t i = 0; i < p.k; ++i) gate += double{a[i]} * b[i];
        if (p.epilogue == GemmEpilogue::kSwiGLU) {
          const float* u = &p.b_up[(e * p.n + j) * p.k];
          double up = 0;
          for (int64_t i = 0; i < p.k; ++i) up += double{a[i]} * u[i];
          gate = gate / (1 + std::exp(-gate)) * up;
        }
        c[r * p.n + j] = gate;
      }
    }
  }
  return c;
}

// Runs `gemm` on a poisoned output with a guard region after it; returns every byte of the
// output buffer (guard included).
std::vector<uint8_t> RunOnDevice(const GemmFn& gemm, const Problem& p) {
  DeviceBuffer a(p.a_bytes), b(p.b_bytes), b_up(p.b_up_bytes), offsets(p.offsets);
  DeviceBuffer a_scales(p.a_scales), b_scales(p.b_scales), b_up_scales(p.b_up_scales);
  const int64_t c_bytes = p.max_rows * p.n * p.out_bytes();
  DeviceBuffer c(static_cast<size_t>(c_bytes + kGuardBytes));
  EXPECT_EQ(cudaMemset(c.get(), kPoison, c_bytes + kGuardBytes), cudaSuccess);
  GroupedGemmParams params;
  params.a = a.get();
  params.a_scales = static_cast<const float*>(a_scales.get());
  params.b = b.get();
  params.b_scales = static_cast<const float*>(b_scales.get());
  params.b_up = b_up.get();
  params.b_up_scales = static_cast<const float*>(b_up_scales.get());
  params.offsets = static_cast<const int64_t*>(offsets.get());
  params.c = c.get();
  params.num_experts = p.num_experts();
  params.n = p.n;
  params.k = p.k;
  params.max_rows = p.max_rows;
  params.dtype = p.dtype;
  params.epilogue = p.epilogue;
  params.out_dtype = p.out;
  const absl::Status status = gemm(params, nullptr);
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  return c.Download();
}

float OutputAt(const Problem& p, const std::vector<uint8_t>& bytes, int64_t index) {
  if (p.out == GemmOutDtype::kBF16) {
    uint16_t bits;
    std::memcpy(&bits, &bytes[2 * index], 2);
    return Bf16ToF32(bits);
  }
  float value;
  std::memcpy(&value, &bytes[4 * index], 4);
  return value;
}

std::string Describe(const Problem& p) {
  std::string s = p.dtype == GemmDtype::kBF16 ? "bf16" : "fp8";
  s += p.epilogue == GemmEpilogue::kStore ? " store" : " swiglu";
  s += p.out == GemmOutDtype::kBF16 ? " ->bf16" : " ->f32";
  s += " E=" + std::to_string(p.num_experts()) + " rows=" + std::to_string(p.rows()) +
       " max_rows=" + std::to_string(p.max_rows) + " n=" + std::to_string(p.n) +
       " k=" + std::to_string(p.k);
  return s;
}

// NMSE of the written rows against `want` (rows [0, rows()) x n), NaN anywhere fails; rows past
// the last expert and the guard stay poisoned.
void ExpectMatches(const Problem& p, const std::vector<uint8_t>& got,
                   const std::function<double(int64_t)>& want, double max_nmse) {
  double error = 0, norm = 0;
  for (int64_t i = 0; i < p.rows() * p.n; ++i) {
    const double value = OutputAt(p, got, i);
    ASSERT_FALSE(std::isnan(value))
        << Describe(p) << ": NaN at row " << i / p.n << " col " << i % p.n;
    error += (value - want(i)) * (value - want(i));
    norm += want(i) * want(i);
  }
  if (norm > 0) {
    EXPECT_LE(error / norm, max_nmse) << Describe(p);
  }
  for (size_t byte = p.rows() * p.n * p.out_bytes(); byte < got.size(); ++byte) {
    ASSERT_EQ(got[byte], kPoison) << Describe(p) << ": byte " << byte
                                  << " past the last expert's rows (or in the guard) was written";
  }
}

// BF16 5e-4; FP8 against the dequantized inputs 1e-5 (the tensor cores see the same values, so
// only the accumulation order and the output rounding differ).
double MaxNmse(const Problem& p) { return p.dtype == GemmDtype::kBF16 ? 5e-4 : 1e-5; }

struct Shape {
  std::vector<int64_t> counts;
  int64_t n, k, extra_rows;
};

// Uneven experts with empty ones and E not a power of two; one expert with all rows; a single
// row; n and k that are not multiples of the tile (k % 128 != 0 leaves a partial FP8 k-block).
const std::vector<Shape>& Shapes() {
  static const auto* shapes = new std::vector<Shape>{
      {{129, 0, 1, 127, 0, 128, 300}, 256, 336, 5},
      {{0, 0, 517, 0}, 128, 256, 0},
      {{0, 1, 0}, 64, 128, 3},
      {{3, 70, 0, 200, 1}, 208, 400, 0},
  };
  return *shapes;
}

// One dtype / epilogue / output combination; its name is the test-name suffix.
struct Variant {
  GemmDtype dtype;
  GemmEpilogue epilogue;
  GemmOutDtype out;

  std::string Name() const {
    std::string name = dtype == GemmDtype::kBF16 ? "Bf16" : "Fp8";
    name += epilogue == GemmEpilogue::kStore ? "Store" : "SwiGlu";
    name += out == GemmOutDtype::kBF16 ? "ToBf16" : "ToF32";
    return name;
  }
  friend void PrintTo(const Variant& v, std::ostream* os) { *os << v.Name(); }
};

std::vector<Variant> AllVariants() {
  std::vector<Variant> variants;
  for (GemmDtype dtype : {GemmDtype::kBF16, GemmDtype::kFP8E4M3}) {
    for (GemmEpilogue epilogue : {GemmEpilogue::kStore, GemmEpilogue::kSwiGLU}) {
      for (GemmOutDtype out : {GemmOutDtype::kBF16, GemmOutDtype::kF32}) {
        variants.push_back({dtype, epilogue, out});
      }
    }
  }
  return variants;
}

class GroupedGemmGpuTest : public ::testing::TestWithParam<Variant> {
 protected:
  void CheckAgainstFloat64(const GemmFn& gemm) {
    const auto [dtype, epilogue, out] = GetParam();
    uint64_t seed = 1;
    for (const Shape& shape : Shapes()) {
      const Problem p = MakeProblem(dtype, epilogue, out, shape.counts, shape.n, shape.k,
                                    shape.extra_rows, seed++);
      const std::vector<double> want = Float64Reference(p);
      const std::vector<uint8_t> first = RunOnDevice(gemm, p);
      ExpectMatches(
          p, first, [&](int64_t i) { return want[i]; }, MaxNmse(p));
      const std::vector<uint8_t> second = RunOnDevice(gemm, p);
      EXPECT_TRUE(first == second) << Describe(p) << ": repeated runs differ";
    }
  }
};

TEST_P(GroupedGemmGpuTest, ReferenceKernelMatchesFloat64) {
  MOE_SKIP_WITHOUT_GPU();
  CheckAgainstFloat64(GroupedGemmReference);
}

TEST_P(GroupedGemmGpuTest, Sm90KernelMatchesFloat64) {
  MOE_SKIP_WITHOUT_SM90();
  CheckAgainstFloat64(GroupedGemmSm90);
}

// Many tiles per CTA (the persistent loop), deep k: the Hopper kernel against the reference
// kernel on the same device.
TEST_P(GroupedGemmGpuTest, Sm90KernelMatchesReferenceKernelOnALargeLaunch) {
  MOE_SKIP_WITHOUT_SM90();
  const auto [dtype, epilogue, out] = GetParam();
  std::mt19937_64 rng(99);
  std::vector<int64_t> counts(37);
  for (int64_t& c : counts) c = rng() % 4 == 0 ? 0 : static_cast<int64_t>(rng() % 260);
  const Problem p = MakeProblem(dtype, epilogue, out, counts, 512, 1024, 17, 5);
  const std::vector<uint8_t> want = RunOnDevice(GroupedGemmReference, p);
  const std::vector<uint8_t> got = RunOnDevice(GroupedGemmSm90, p);
  // The reference kernel's own error vs float64 is far below these bounds.
  ExpectMatches(
      p, got, [&](int64_t i) { return double{OutputAt(p, want, i)}; },
      dtype == GemmDtype::kBF16 ? 5e-4 : 2e-5);
}

INSTANTIATE_TEST_SUITE_P(AllVariants, GroupedGemmGpuTest, ::testing::ValuesIn(AllVariants()),
                         [](const ::testing::TestParamInfo<Variant>& info) {
                           return info.param.Name();
                         });

TEST(GroupedGemmGpuTest, NoRowsWritesNothing) {
  MOE_SKIP_WITHOUT_GPU();
  std::vector<GemmFn> gemms = {GroupedGemmReference};
  if (Sm90Visible()) gemms.push_back(GroupedGemmSm90);
  for (const GemmFn& gemm : gemms) {
    // T = 0 with a non-zero bound: offsets all 0, every row stays poisoned.
    const Problem p = MakeProblem(GemmDtype::kBF16, GemmEpilogue::kStore, GemmOutDtype::kF32,
                                  {0, 0, 0}, 128, 64, 4, 3);
    ExpectMatches(
        p, RunOnDevice(gemm, p), [](int64_t) { return 0.0; }, 0.0);
  }
}

TEST(GroupedGemmGpuTest, Sm90RefusesOtherDevices) {
  MOE_SKIP_WITHOUT_GPU();
  if (Sm90Visible()) GTEST_SKIP() << "this is an sm_90 device";
  GroupedGemmParams p;
  p.num_experts = 1;
  p.n = 128;
  p.k = 128;
  const absl::Status status = GroupedGemmSm90(p, nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
  EXPECT_NE(status.message().find("not an sm_90 device"), absl::string_view::npos) << status;
}

TEST(Fp8QuantizeGpuTest, MatchesTheHostQuantizerBitForBit) {
  MOE_SKIP_WITHOUT_GPU();
  const int64_t rows = 37, k = 300;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  std::vector<float> x(rows * k);
  for (float& v : x) v = dist(rng);
  x[5] = 0;
  for (int64_t j = 0; j < 128; ++j) x[3 * k + j] = 0;  // an all-zero block: scale 1
  x[7 * k + 9] = 1e30f;                                // a large outlier
  std::vector<uint8_t> want_q(rows * k);
  std::vector<float> want_scales(rows * 3);
  QuantizeActivationsE4M3(x.data(), rows, k, want_q.data(), want_scales.data());
  DeviceBuffer dx(x), dq(want_q.size()), dscales(want_scales.size() * sizeof(float));
  QuantizeE4M3Params params;
  params.x = dx.get();
  params.input_dtype = QuantizeInputDtype::kF32;
  params.q = dq.get();
  params.scales = static_cast<float*>(dscales.get());
  params.rows = rows;
  params.k = k;
  ASSERT_TRUE(QuantizeActivationsE4M3Gpu(params, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_TRUE(dq.Download() == want_q);
  const std::vector<uint8_t> scale_bytes = dscales.Download();
  EXPECT_EQ(std::memcmp(scale_bytes.data(), want_scales.data(), scale_bytes.size()), 0);
}

// ---- host-side checks (no GPU needed) ---------------------------------------------------------

GroupedGemmParams ValidParams() {
  alignas(16) static int64_t fake[16];  // never dereferenced: the checks only look at pointers
  GroupedGemmParams p;
  p.a = p.b = p.b_up = fake;
  p.a_scales = p.b_scales = p.b_up_scales = reinterpret_cast<const float*>(fake);
  p.offsets = fake;
  p.c = fake;
  p.num_experts = 3;
  p.n = 256;
  p.k = 512;
  p.max_rows = 100;
  return p;
}

void ExpectError(const absl::Status& status, absl::StatusCode code, const std::string& text) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_NE(status.message().find(text), absl::string_view::npos) << status;
}

TEST(GroupedGemmChecksTest, InvalidParamsNameTheField) {
  EXPECT_TRUE(ValidateGroupedGemmParams(ValidParams()).ok());
  GroupedGemmParams p = ValidParams();
  p.num_experts = 0;
  ExpectError(ValidateGroupedGemmParams(p), absl::StatusCode::kInvalidArgument,
              "GroupedGemmParams.num_experts");
  p = ValidParams();
  p.k = 0;
  ExpectError(GroupedGemmSm90CanImplement(p), absl::StatusCode::kInvalidArgument,
              "GroupedGemmParams.k must be at least 1");
  p = ValidParams();
  p.max_rows = -1;
  ExpectError(GroupedGemmReference(p, nullptr), absl::StatusCode::kInvalidArgument,
              "GroupedGemmParams.max_rows");
  p = ValidParams();
  p.a = nullptr;
  ExpectError(GroupedGemmSm90(p, nullptr), absl::StatusCode::kInvalidArgument,
              "GroupedGemmParams.a is null");
  p = ValidParams();
  p.dtype = GemmDtype::kFP8E4M3;
  p.a_scales = nullptr;
  ExpectError(ValidateGroupedGemmParams(p), absl::StatusCode::kInvalidArgument,
              "GroupedGemmParams.a_scales is null");
  p = ValidParams();
  p.epilogue = GemmEpilogue::kSwiGLU;
  p.b_up = nullptr;
  ExpectError(ValidateGroupedGemmParams(p), absl::StatusCode::kInvalidArgument,
              "GroupedGemmParams.b_up is null");
  p = ValidParams();
  p.dtype = GemmDtype::kFP8E4M3;
  p.epilogue = GemmEpilogue::kSwiGLU;
  p.b_up_scales = nullptr;
  ExpectError(ValidateGroupedGemmParams(p), absl::StatusCode::kInvalidArgument,
              "GroupedGemmParams.b_up_scales is null");
  p = ValidParams();
  p.dtype = static_cast<GemmDtype>(7);
  ExpectError(ValidateGroupedGemmParams(p), absl::StatusCode::kInvalidArgument,
              "GroupedGemmParams.dtype");
  p = ValidParams();
  p.max_rows = int64_t{1} << 40;
  p.k = int64_t{1} << 40;
  ExpectError(ValidateGroupedGemmParams(p), absl::StatusCode::kInvalidArgument, "overflow");
}

TEST(GroupedGemmChecksTest, NoRowsNeedsNoBuffers) {
  GroupedGemmParams p;
  p.num_experts = 4;
  p.n = 128;
  p.k = 128;
  EXPECT_TRUE(ValidateGroupedGemmParams(p).ok());
  EXPECT_TRUE(GroupedGemmSm90CanImplement(p).ok());
  EXPECT_TRUE(GroupedGemmReference(p, nullptr).ok()) << "max_rows = 0 launches nothing";
}

TEST(GroupedGemmChecksTest, Sm90RefusesShapesItCannotTake) {
  GroupedGemmParams p = ValidParams();
  p.k = 24;
  ExpectError(GroupedGemmSm90CanImplement(p), absl::StatusCode::kUnimplemented,
              "k = 24 is not a multiple of 16");
  p = ValidParams();
  p.n = 40;
  ExpectError(GroupedGemmSm90CanImplement(p), absl::StatusCode::kUnimplemented,
              "n = 40 is not a multiple of 16");
  p = ValidParams();
  p.max_rows = int64_t{1} << 32;
  p.n = 16;
  p.k = 16;
  p.num_experts = 1;
  ExpectError(GroupedGemmSm90CanImplement(p), absl::StatusCode::kUnimplemented, "2^31");
  p = ValidParams();
  p.c = static_cast<char*>(p.c) + 2;
  ExpectError(GroupedGemmSm90CanImplement(p), absl::StatusCode::kUnimplemented, "16-byte aligned");
  EXPECT_TRUE(GroupedGemmSm90CanImplement(ValidParams()).ok());
}

TEST(GroupedGemmChecksTest, NoDeviceMeansNotSupported) {
  if (DeviceVisible()) GTEST_SKIP() << "a CUDA device is visible";
  EXPECT_FALSE(GroupedGemmSm90Supported(0));
  const absl::Status status = GroupedGemmSm90(ValidParams(), nullptr);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

TEST(Fp8QuantizeChecksTest, InvalidParamsNameTheField) {
  QuantizeE4M3Params p;
  p.rows = 2;
  p.k = 0;
  ExpectError(QuantizeActivationsE4M3Gpu(p, nullptr), absl::StatusCode::kInvalidArgument,
              "QuantizeE4M3Params.k");
  p.k = 128;
  ExpectError(QuantizeActivationsE4M3Gpu(p, nullptr), absl::StatusCode::kInvalidArgument,
              "QuantizeE4M3Params.x is null");
  p.rows = 0;
  EXPECT_TRUE(QuantizeActivationsE4M3Gpu(p, nullptr).ok());
}

}  // namespace
}  // namespace moe::kernels::cuda

#else  // !MOE_HAVE_CUDA

#include "gtest/gtest.h"

TEST(GroupedGemmSm90Test, NeedsTheCudaToolkit) { GTEST_SKIP() << "built without the CUDA toolkit"; }

#endif  // MOE_HAVE_CUDA
