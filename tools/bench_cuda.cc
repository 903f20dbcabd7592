#include "tools/bench_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "configs/layer_config.h"
#include "moe/base/status_macros.h"
#include "tools/bench_runner.h"
#include "tools/cli.h"

#ifdef MOE_HAVE_CUDA
#include <cublas_v2.h>

#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/random_fill.h"
#include "moe/cuda/cuda_layer.h"
#include "moe/cuda/device_buffer.h"
#endif

ABSL_FLAG(std::string, backend, "cpu",
          "cpu (default) or cuda: where the layer runs (cuda: GPU 0, BF16 experts; moe bench "
          "--backend cuda measures the grouped GEMMs, see `moe help bench`).");

namespace moe::tools {

absl::StatusOr<bool> CudaBackendRequested() {
  const std::string backend = absl::GetFlag(FLAGS_backend);
  if (backend == "cpu") return false;
  if (backend == "cuda") return true;
  return absl::InvalidArgumentError(
      absl::StrCat("flag --backend: expected cpu or cuda, got '", backend, "'"));
}

namespace {

struct CudaBenchOptions {
  std::string config_source;
  std::vector<int64_t> tokens;
  int repeats = 5;
  int warmup = 1;
  uint64_t seed = 1;
};

absl::StatusOr<CudaBenchOptions> ParseOptions(const std::vector<std::string>& positional) {
  if (!positional.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", positional[0],
                                                   "' (moe bench takes only flags; --config X)"));
  }
  for (const char* flag :
       {"ep", "sweep", "hold", "model_ranks", "placement", "skew", "rebalance", "timeout", "steps",
        "input_skew", "csv", "json", "trace", "threads", "check_tokens", "input_dist"}) {
    if (FlagGiven(flag)) {
      return absl::InvalidArgumentError(
          absl::StrCat("flag --", flag, " is not supported with --backend cuda"));
    }
  }
  CudaBenchOptions o;
  o.config_source = absl::GetFlag(FLAGS_config);
  if (o.config_source.empty()) o.config_source = MOE_DEFAULT_CUDA_BENCH_CONFIG;
  const std::string tokens = absl::GetFlag(FLAGS_tokens);
  MOE_ASSIGN_OR_RETURN(
      o.tokens,
      ParseTokenCounts(tokens.empty() ? MOE_DEFAULT_CUDA_BENCH_TOKENS : tokens, "tokens"));
  o.repeats = absl::GetFlag(FLAGS_repeats);
  o.warmup = absl::GetFlag(FLAGS_warmup);
  if (o.repeats < 1 || o.repeats > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --repeats: expected 1 to 100000, got ", o.repeats));
  }
  if (o.warmup < 0 || o.warmup > 100000) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --warmup: expected 0 to 100000, got ", o.warmup));
  }
  o.seed = absl::GetFlag(FLAGS_seed);
  return o;
}

}  // namespace

#ifndef MOE_HAVE_CUDA

absl::Status CheckCudaBackendAvailable() {
  return absl::FailedPreconditionError(
      "--backend cuda: this moe was built without CUDA (no CUDA toolkit at configure time, or "
      "-DMOE_ENABLE_CUDA=OFF)");
}

absl::StatusOr<LayerOutput> CudaForward(const config::LayerConfig&, const MoeLayerWeights&,
                                        const Tensor&, StageTimes*) {
  return CheckCudaBackendAvailable();
}

int CudaBenchCommand(const std::vector<std::string>& positional) {
  absl::StatusOr<CudaBenchOptions> options = ParseOptions(positional);  // usage errors first
  if (!options.ok()) return Fail(options.status(), kExitUsageError);
  return Fail(CheckCudaBackendAvailable(), kExitRuntimeError);
}

#else  // MOE_HAVE_CUDA

namespace {

using cuda::CudaMoeLayer;
using cuda::DeviceBuffer;
using cuda::GroupedGemmImpl;
using kernels::cuda::RowDtype;

// Median: tools/bench_runner.h.

// Median seconds of `repeats` runs of `enqueue` on `stream`, timed with events, after one
// untimed run.
template <typename F>
absl::StatusOr<double> TimeOnStream(cudaStream_t stream, int repeats, F enqueue) {
  cudaEvent_t start = nullptr, stop = nullptr;
  MOE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  MOE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  std::vector<double> seconds;
  absl::Status status = enqueue();
  for (int r = 0; r < repeats && status.ok(); ++r) {
    cudaEventRecord(start, stream);
    status = enqueue();
    cudaEventRecord(stop, stream);
    if (status.ok())
      status = kernels::cuda::CudaStatus(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    if (status.ok())
      status =
          kernels::cuda::CudaStatus(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    seconds.push_back(ms * 1e-3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  MOE_RETURN_IF_ERROR(status);
  return Median(seconds);
}

// The copy ceiling: GB/s of a 1 GiB device-to-device copy, counting its read and its write.
absl::StatusOr<double> CopyGbps(cudaStream_t stream, int repeats) {
  constexpr size_t kBytes = size_t{1} << 30;
  MOE_ASSIGN_OR_RETURN(DeviceBuffer src, DeviceBuffer::Allocate(kBytes));
  MOE_ASSIGN_OR_RETURN(DeviceBuffer dst, DeviceBuffer::Allocate(kBytes));
  MOE_CUDA_RETURN_IF_ERROR(cudaMemset(src.get(), 1, kBytes));
  MOE_ASSIGN_OR_RETURN(
      double seconds, TimeOnStream(stream, repeats, [&] {
        return kernels::cuda::CudaStatus(
            cudaMemcpyAsync(dst.get(), src.get(), kBytes, cudaMemcpyDeviceToDevice, stream),
            "cudaMemcpyAsync");
      }));
  return 2.0 * kBytes / seconds / 1e9;
}

// Seconds of dense cuBLAS BF16 GEMMs with the FLOPs of an FFN over `rows` rows: [rows, d] x
// [d, gate_up_width] and [rows, d_ff] x [d_ff, d] (F32 accumulation, BF16 out).
absl::StatusOr<double> DenseFfnSeconds(cublasHandle_t handle, cudaStream_t stream, int repeats,
                                       int64_t rows, int64_t d, int64_t d_ff, bool gated) {
  if (rows == 0) return 0.0;
  const int64_t width = gated ? 2 * d_ff : d_ff;
  const std::pair<int64_t, int64_t> shapes[] = {
      {rows, d}, {width, d}, {rows, width}, {d, d_ff}, {rows, d}};
  std::vector<DeviceBuffer> buffers;
  for (auto [r, c] : shapes) {
    MOE_ASSIGN_OR_RETURN(DeviceBuffer b, DeviceBuffer::Allocate(static_cast<size_t>(2 * r * c)));
    MOE_RETURN_IF_ERROR(
        kernels::cuda::FillUniform(b.get(), RowDtype::kBF16, r * c, 99, 0.05f, stream));
    buffers.push_back(std::move(b));
  }
  MOE_CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle, stream));
  const float alpha = 1.0f, beta = 0.0f;
  // Row-major C[m, n] = A[m, k] B[n, k]^T, as in router_gemm.cc.
  auto gemm = [&](const void* a, const void* b, void* c, int64_t m, int64_t n, int64_t k) {
    return kernels::cuda::CublasStatus(
        cublasGemmEx_64(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &alpha, b, CUDA_R_16BF, k, a,
                        CUDA_R_16BF, k, &beta, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                        CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx_64");
  };
  return TimeOnStream(stream, repeats, [&]() -> absl::Status {
    MOE_RETURN_IF_ERROR(gemm(buffers[0].get(), buffers[1].get(), buffers[2].get(), rows, width, d));
    // The down projection reads the first d_ff columns' worth of the gate/up output buffer.
    return gemm(buffers[2].get(), buffers[3].get(), buffers[4].get(), rows, d, d_ff);
  });
}

struct CudaRow {
  std::string gemm;
  int64_t tokens = 0;
  double layer_ms = 0, experts_ms = 0;
  double tflops = 0, dense_tflops = 0, gbps = 0;
  double vs_cublas = 0;  // cublas experts_ms / this experts_ms
  int64_t wrong = 0;
  int64_t active_experts = 0;
};

// Elements of `out` that are not finite or, with a reference, differ from it by more than
// 2e-2 * rms(ref) + 2e-2 * |ref| (two BF16 grouped GEMMs with different summation orders).
int64_t CountWrong(const Tensor& out, const Tensor* ref) {
  const float* o = out.data<float>();
  double rms = 0;
  if (ref != nullptr) {
    for (int64_t i = 0; i < ref->num_elements(); ++i)
      rms += double{ref->data<float>()[i]} * ref->data<float>()[i];
    rms = std::sqrt(rms / std::max<int64_t>(1, ref->num_elements()));
  }
  int64_t wrong = 0;
  for (int64_t i = 0; i < out.num_elements(); ++i) {
    if (!std::isfinite(o[i])) {
      ++wrong;
    } else if (ref != nullptr) {
      const double r = ref->data<float>()[i];
      wrong += std::fabs(o[i] - r) > 2e-2 * rms + 2e-2 * std::fabs(r);
    }
  }
  return wrong;
}

}  // namespace

absl::Status CheckCudaBackendAvailable() {
  if (cuda::CudaDeviceCount() == 0) {
    return absl::FailedPreconditionError("--backend cuda: no CUDA device visible");
  }
  return absl::OkStatus();
}

absl::StatusOr<LayerOutput> CudaForward(const config::LayerConfig& config,
                                        const MoeLayerWeights& weights, const Tensor& hidden,
                                        StageTimes* times) {
  MOE_RETURN_IF_ERROR(CheckCudaBackendAvailable());
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<CudaMoeLayer> layer,
                       CudaMoeLayer::Create(config, weights, {.gemm = GroupedGemmImpl::kCublas}));
  return layer->Forward(hidden, times);
}

int CudaBenchCommand(const std::vector<std::string>& positional) {
  absl::StatusOr<CudaBenchOptions> options = ParseOptions(positional);
  if (!options.ok()) return Fail(options.status(), kExitUsageError);
  const CudaBenchOptions& o = *options;
  absl::Status available = CheckCudaBackendAvailable();
  if (!available.ok()) return Fail(available, kExitRuntimeError);
  absl::StatusOr<config::LayerConfig> loaded = config::LoadLayerConfig(o.config_source);
  if (!loaded.ok()) return Fail(loaded.status(), kExitRuntimeError);
  const config::LayerConfig c = *loaded;
  auto fail = [](const absl::Status& s) { return Fail(s, kExitRuntimeError); };

  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    return fail(absl::InternalError("cudaGetDeviceProperties(0) failed"));
  }
  cudaStream_t stream = nullptr;
  cublasHandle_t handle = nullptr;
  if (cudaStreamCreate(&stream) != cudaSuccess || cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    return fail(absl::InternalError("cudaStreamCreate or cublasCreate failed"));
  }
  absl::StatusOr<double> copy_gbps = CopyGbps(stream, o.repeats);
  if (!copy_gbps.ok()) return fail(copy_gbps.status());

  const bool gated = config::IsGated(c.activation());
  const int64_t d = c.d_model(), shared_dff = config::SharedExpertsDff(c);
  std::printf(
      "moe bench --backend cuda: %s (d_model %lld, d_ff %lld, %d experts, top-%d, shared "
      "d_ff %lld), BF16 experts, seed %llu\n",
      c.name().c_str(), static_cast<long long>(d), static_cast<long long>(c.d_ff()),
      c.num_experts(), c.top_k(), static_cast<long long>(shared_dff),
      static_cast<unsigned long long>(o.seed));
  std::printf(
      "device: %s (sm_%d%d, %d SMs, %.1f GiB); ceilings measured now: device-to-device "
      "copy %.1f GB/s (read + write of 1 GiB), dense cuBLAS BF16 GEMM per row "
      "(dense_TFLOP/s)\n",
      prop.name, prop.major, prop.minor, prop.multiProcessorCount,
      static_cast<double>(prop.totalGlobalMem) / (1 << 30), *copy_gbps);

  // Dense ceilings per token count (the same FLOPs: routed rows T*k and shared rows T).
  std::vector<double> dense_seconds;
  for (int64_t T : o.tokens) {
    absl::StatusOr<double> routed =
        DenseFfnSeconds(handle, stream, o.repeats, T * c.top_k(), d, c.d_ff(), gated);
    absl::StatusOr<double> shared =
        shared_dff > 0 ? DenseFfnSeconds(handle, stream, o.repeats, T, d, shared_dff, gated)
                       : absl::StatusOr<double>(0.0);
    if (!routed.ok() || !shared.ok()) return fail(!routed.ok() ? routed.status() : shared.status());
    dense_seconds.push_back(*routed + *shared);
  }

  std::printf("%8s %7s %9s %10s %8s %8s %6s %8s %6s %8s %7s %6s\n", "gemm", "tokens", "layer_ms",
              "experts_ms", "TFLOP/s", "dense", "%dense", "GB/s", "%copy", "active", "vs_cub",
              "#wrong");
  std::vector<Tensor> cublas_outputs;
  std::vector<double> cublas_experts_ms;
  int64_t total_wrong = 0;
  for (GroupedGemmImpl impl : {GroupedGemmImpl::kCublas, GroupedGemmImpl::kSm90}) {
    absl::StatusOr<std::unique_ptr<CudaMoeLayer> > layer =
        CudaMoeLayer::CreateRandom(c, o.seed, {.gemm = impl});
    if (!layer.ok()) {
      if (impl == GroupedGemmImpl::kCublas) return fail(layer.status());
      std::printf("%8s skipped: %s\n", cuda::GroupedGemmImplName(impl),
                  std::string(layer.status().message()).c_str());
      continue;
    }
    for (size_t i = 0; i < o.tokens.size(); ++i) {
      const int64_t T = o.tokens[i];
      const Tensor hidden = RandomHidden(T, d, o.seed, 0, /*normal=*/true, 0);
      std::vector<double> layer_s, experts_s;
      absl::StatusOr<LayerOutput> out;
      for (int r = 0; r < o.warmup + o.repeats; ++r) {
        StageTimes t;
        out = (*layer)->Forward(hidden, &t);
        if (!out.ok()) return fail(out.status());
        if (r < o.warmup) continue;
        layer_s.push_back(t.route + t.plan + t.experts + t.combine);
        experts_s.push_back(t.experts);
      }
      CudaRow row;
      row.gemm = cuda::GroupedGemmImplName(impl);
      row.tokens = T;
      row.layer_ms = Median(layer_s) * 1e3;
      row.experts_ms = Median(experts_s) * 1e3;
      int64_t kept_rows = -out->dropped_slots;
      for (int64_t load : out->expert_load) {
        kept_rows += load;
        row.active_experts += load > 0;
      }
      const double per_row_flop = 2.0 * (gated ? 3 : 2) * static_cast<double>(d);
      const double flop = per_row_flop * (static_cast<double>(c.d_ff()) * kept_rows +
                                          static_cast<double>(shared_dff) * T);
      const double bytes = static_cast<double>(row.active_experts) *
                               static_cast<double>((*layer)->ExpertWeightBytes()) +
                           (shared_dff > 0 ? 2.0 * (gated ? 3 : 2) * d * shared_dff : 0.0);
      row.tflops = flop / (row.experts_ms * 1e-3) / 1e12;
      row.dense_tflops = dense_seconds[i] > 0 ? flop / dense_seconds[i] / 1e12 : 0;
      row.gbps = bytes / (row.experts_ms * 1e-3) / 1e9;
      if (impl == GroupedGemmImpl::kCublas) {
        row.wrong = CountWrong(out->output, nullptr);
        cublas_outputs.push_back(std::move(out->output));
        cublas_experts_ms.push_back(row.experts_ms);
      } else {
        row.wrong = CountWrong(out->output, &cublas_outputs[i]);
      }
      row.vs_cublas = cublas_experts_ms[i] / row.experts_ms;
      total_wrong += row.wrong;
      std::printf("%8s %7lld %9.3f %10.3f %8.1f %8.1f %5.0f%% %8.0f %5.0f%% %8lld %6.2fx %6lld\n",
                  row.gemm.c_str(), static_cast<long long>(T), row.layer_ms, row.experts_ms,
                  row.tflops, row.dense_tflops, 100 * row.tflops / row.dense_tflops, row.gbps,
                  100 * row.gbps / *copy_gbps, static_cast<long long>(row.active_experts),
                  row.vs_cublas, static_cast<long long>(row.wrong));
      std::fflush(stdout);
    }
  }
  std::printf(
      "\nlayer_ms: GPU time of the whole forward (route, plan, experts, combine; CUDA events; "
      "host copies excluded). experts_ms: the experts stage (permute, grouped GEMMs gate/up -> "
      "act -> down, shared experts). TFLOP/s = 2*%d*d_model*(d_ff*kept_rows + shared_d_ff*T) "
      "/ experts_ms; dense = the same FLOPs through dense cuBLAS BF16 GEMMs; GB/s = BF16 weight "
      "bytes of experts with >= 1 row (+ shared) / experts_ms; %%copy against the copy "
      "ceiling; vs_cub = cublas experts_ms / this experts_ms. #wrong: non-finite outputs, and for "
      "non-cublas rows elements with |out - cublas| > 2e-2*rms(cublas) + 2e-2*|cublas|. Medians "
      "of %d runs after %d warm-up.\n",
      gated ? 3 : 2, o.repeats, o.warmup);
  cublasDestroy(handle);
  cudaStreamDestroy(stream);
  if (total_wrong > 0) {
    return Fail(absl::StrCat(total_wrong, " wrong results (see #wrong)"), kExitRuntimeError);
  }
  return kExitOk;
}

#endif  // MOE_HAVE_CUDA

}  // namespace moe::tools
