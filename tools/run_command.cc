// `moe run`: one layer forward on hidden states from a safetensors file.
// `moe init`: a native weights file with random weights.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "configs/layer_config.h"
#include "moe/base/status_macros.h"
#include "moe/checkpoint/safetensors.h"
#include "moe/checkpoint/safetensors_writer.h"
#include "moe/ep_weights.h"
#include "moe/expert_parallel_layer.h"
#include "moe/hf_import.h"
#include "moe/moe_layer.h"
#include "tools/balance_commands.h"
#include "tools/bench_cuda.h"
#include "tools/cli.h"
#include "tools/ep_session.h"
#include "tools/kernel_flags.h"
#include "tools/native_weights.h"

namespace moe::tools {
namespace {

constexpr char kHiddenStates[] = "hidden_states";

// Usage errors for a flag that must be given.
absl::Status RequireFlag(absl::string_view name, absl::string_view value,
                         absl::string_view command) {
  if (!value.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("moe ", command, " needs --", name, " (see `moe help ", command, "`)"));
}

absl::Status NoPositional(const std::vector<std::string>& positional, absl::string_view command) {
  if (positional.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", positional[0], "' (moe ",
                                                 command, " takes only flags)"));
}

// hidden_states of `path`, F32 or BF16 [num_tokens, d_model], copied out of the mapping.
absl::StatusOr<Tensor> ReadHiddenStates(const std::string& path, int64_t d_model) {
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
  const TensorInfo* info = file->Find(kHiddenStates);
  if (info == nullptr) {
    std::vector<std::string> names;
    for (const TensorInfo& t : file->tensors()) names.push_back(t.name);
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": no tensor '", kHiddenStates,
        "' (the file holds: ", names.empty() ? "no tensors" : absl::StrJoin(names, ", "), ")"));
  }
  if ((info->dtype != DType::kF32 && info->dtype != DType::kBF16) || info->shape.size() != 2 ||
      info->shape[1] != d_model) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": tensor '", kHiddenStates, "' is ", DTypeName(info->dtype), " ",
        ShapeString(info->shape), ", expected F32 or BF16 [num_tokens, ", d_model, "]"));
  }
  MOE_ASSIGN_OR_RETURN(Tensor hidden, Tensor::Create(info->dtype, info->shape));
  if (hidden.num_bytes() > 0) {
    std::memcpy(hidden.raw(), file->data(*info), static_cast<size_t>(hidden.num_bytes()));
  }
  return hidden;
}

struct LoadedLayer {
  config::LayerConfig config;
  MoeLayerWeights weights;
  std::string source;  // for the summary line
};

absl::StatusOr<LoadedLayer> LoadLayer() {
  const std::string model = absl::GetFlag(FLAGS_model);
  LoadedLayer loaded;
  if (!model.empty()) {
    MOE_ASSIGN_OR_RETURN(HfLayer layer, LoadHfLayer(model, absl::GetFlag(FLAGS_layer)));
    loaded.config = std::move(layer.config);
    loaded.weights = std::move(layer.weights);
    loaded.source = absl::StrCat(model, " layer ", absl::GetFlag(FLAGS_layer));
  } else {
    MOE_ASSIGN_OR_RETURN(loaded.config, config::LoadLayerConfig(absl::GetFlag(FLAGS_config)));
    MOE_ASSIGN_OR_RETURN(loaded.weights,
                         LoadNativeWeights(loaded.config, absl::GetFlag(FLAGS_weights)));
    loaded.source = absl::GetFlag(FLAGS_weights);
  }
  return loaded;
}

// The experts' kernels from --weight_dtype (one format).
absl::StatusOr<experts::ExpertKernelOptions> RunKernelOptions() {
  MOE_ASSIGN_OR_RETURN(std::vector<kernels::WeightFormat> formats, WeightFormatsFlag());
  if (formats.size() != 1) {
    return absl::InvalidArgumentError("flag --weight_dtype: moe run takes one format");
  }
  return experts::ExpertKernelOptions{.weight_format = formats[0]};
}

// Flag combinations of `moe run`; every error is a usage error.
absl::Status CheckRunFlags(const std::vector<std::string>& positional) {
  MOE_RETURN_IF_ERROR(NoPositional(positional, "run"));
  const bool hf = FlagGiven("model") || FlagGiven("layer");
  const bool native = FlagGiven("config") || FlagGiven("weights");
  if (hf && native) {
    return absl::InvalidArgumentError(
        "moe run takes either --model and --layer (Hugging Face) or --config and --weights "
        "(native), not both");
  }
  if (!hf && !native) {
    return absl::InvalidArgumentError(
        "moe run needs --model DIR --layer N, or --config CONFIG --weights FILE");
  }
  if (hf) {
    MOE_RETURN_IF_ERROR(RequireFlag("model", absl::GetFlag(FLAGS_model), "run"));
    if (absl::GetFlag(FLAGS_layer) < 0) {
      return absl::InvalidArgumentError(FlagGiven("layer")
                                            ? "flag --layer: expected a layer index >= 0"
                                            : "moe run needs --layer N with --model");
    }
  } else {
    MOE_RETURN_IF_ERROR(RequireFlag("config", absl::GetFlag(FLAGS_config), "run"));
    MOE_RETURN_IF_ERROR(RequireFlag("weights", absl::GetFlag(FLAGS_weights), "run"));
  }
  MOE_RETURN_IF_ERROR(RequireFlag("input", absl::GetFlag(FLAGS_input), "run"));
  MOE_RETURN_IF_ERROR(RequireFlag("output", absl::GetFlag(FLAGS_output), "run"));
  MOE_RETURN_IF_ERROR(ApplyIsaFlag());
  MOE_RETURN_IF_ERROR(RunKernelOptions().status());
  return ApplyThreadsFlag().status();
}

// Rows [begin, end) of a [T, d] tensor (any dtype).
Tensor RowBlock(const Tensor& all, int64_t begin, int64_t end) {
  Tensor part = Tensor::Zeros(all.dtype(), {end - begin, all.dim(1)});
  const int64_t row_bytes = all.dim(1) * DTypeSize(all.dtype());
  if (end > begin) {
    std::memcpy(part.raw(), static_cast<const char*>(all.raw()) + begin * row_bytes,
                static_cast<size_t>((end - begin) * row_bytes));
  }
  return part;
}

// Collective: every rank's rows of `part` [rows_r, cols] gathered in rank order into
// [sum rows_r, cols] (counts all-gathered, blocks padded to the largest).
absl::StatusOr<Tensor> GatherRows(comm::Communicator* comm, const Tensor& part,
                                  const std::vector<int64_t>& rows) {
  const int64_t cols = part.dim(1);
  const int64_t elem = DTypeSize(part.dtype());
  const int64_t max_rows = *std::max_element(rows.begin(), rows.end());
  const int64_t block = std::max<int64_t>(1, max_rows * cols * elem);
  std::vector<char> send(static_cast<size_t>(block), 0);
  if (part.num_bytes() > 0) std::memcpy(send.data(), part.raw(), part.num_bytes());
  std::vector<char> recv(static_cast<size_t>(block * comm->size()));
  MOE_RETURN_IF_ERROR(comm->AllGather(send.data(), block, recv.data()));
  int64_t total = 0;
  for (int64_t r : rows) total += r;
  Tensor all = Tensor::Zeros(part.dtype(), {total, cols});
  int64_t at = 0;
  for (int r = 0; r < comm->size(); ++r) {
    const int64_t bytes = rows[static_cast<size_t>(r)] * cols * elem;
    if (bytes > 0) std::memcpy(static_cast<char*>(all.raw()) + at, recv.data() + r * block, bytes);
    at += bytes;
  }
  return all;
}

// `moe run --ep N`: every rank loads the layer (then keeps only its experts: KeepHeldExperts)
// and reads the input, runs its contiguous block of tokens (TokenBlockBegin) through the
// expert-parallel layer; rank 0 gathers the blocks and writes the output file.
int RunEpCommand(int ep) {
  const double timeout = absl::GetFlag(FLAGS_timeout);
  if (!(timeout > 0)) return Fail("flag --timeout: expected seconds > 0", kExitUsageError);
  bool quiet = false;
  absl::StatusOr<std::unique_ptr<EpSession>> session = StartEpSession(ep, timeout, "run", &quiet);
  if (!session.ok()) return quiet ? kExitUsageError : Fail(session.status(), kExitUsageError);
  comm::MpiCommunicator* comm = (*session)->comm.get();
  const int me = comm->rank();
  auto die = [&](const absl::Status& status) {
    Fail(absl::StrCat("rank ", me, ": ", status.message()), kExitRuntimeError);
    std::fflush(stderr);
    std::exit(kExitRuntimeError);  // NOTE: MPI_Finalize would wait for a failed peer
    return kExitRuntimeError;
  };
  absl::StatusOr<LoadedLayer> loaded = LoadLayer();
  if (!loaded.ok()) return die(loaded.status());
  const config::LayerConfig config = loaded->config;
  absl::StatusOr<comm::ReplicatedPlacement> placement =
      EpPlacement(absl::GetFlag(FLAGS_placement), config.num_experts(), comm->size());
  if (!placement.ok()) return die(placement.status());
  absl::StatusOr<MoeLayerWeights> held =
      KeepHeldExperts(config, std::move(loaded->weights), *placement, me);
  if (!held.ok()) return die(held.status());
  absl::StatusOr<ExpertParallelLayer> layer =
      ExpertParallelLayer::Create(config, *std::move(held), *placement, comm,
                                  {.dispatcher = {}, .experts = *RunKernelOptions()});
  if (!layer.ok()) return die(layer.status());
  const std::string input = absl::GetFlag(FLAGS_input);
  absl::StatusOr<Tensor> hidden = ReadHiddenStates(input, config.d_model());
  if (!hidden.ok()) return die(hidden.status());
  const int64_t num_tokens = hidden->dim(0);
  const int64_t begin = TokenBlockBegin(num_tokens, comm->size(), me);
  const int64_t end = TokenBlockBegin(num_tokens, comm->size(), me + 1);
  const Tensor block = RowBlock(*hidden, begin, end);
  EpStats stats;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<LayerOutput> out = layer->Forward(block, &stats);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!out.ok()) return die(out.status());
  absl::StatusOr<std::vector<int64_t>> rows = GatherInts(comm, end - begin);
  if (!rows.ok()) return die(rows.status());
  absl::StatusOr<Tensor> output = GatherRows(comm, out->output, *rows);
  absl::StatusOr<Tensor> ids =
      output.ok() ? GatherRows(comm, out->topk_ids, *rows) : output.status();
  absl::StatusOr<Tensor> weights =
      ids.ok() ? GatherRows(comm, out->topk_weights, *rows) : ids.status();
  if (!weights.ok()) return die(weights.status());
  if (me != 0) return kExitOk;
  const std::string output_path = absl::GetFlag(FLAGS_output);
  absl::Status written = WriteSafetensors(
      output_path, {{"output", &*output}, {"topk_ids", &*ids}, {"topk_weights", &*weights}},
      {{"config", config.name()}, {"weights", loaded->source}, {"input", input}});
  if (!written.ok()) return Fail(written, kExitRuntimeError);
  std::printf(
      "moe run --ep %d: %s (%s, E=%d, k=%d, d_model=%lld): %lld tokens in %.3f ms on rank 0 "
      "(all-to-all %.3f ms), %lld dropped slots -> %s\n",
      ep, loaded->source.c_str(), config.name().c_str(), config.num_experts(), config.top_k(),
      static_cast<long long>(config.d_model()), static_cast<long long>(num_tokens), seconds * 1e3,
      stats.alltoall_seconds() * 1e3, static_cast<long long>(stats.global_dropped_slots),
      output_path.c_str());
  return kExitOk;
}

}  // namespace

int RunCommand(const std::vector<std::string>& positional) {
  absl::Status usage = CheckRunFlags(positional);
  if (usage.ok() && !(absl::GetFlag(FLAGS_ep) >= 1 && absl::GetFlag(FLAGS_ep) <= 4096)) {
    usage = absl::InvalidArgumentError("flag --ep: expected 1 to 4096");
  }
  if (usage.ok() && absl::GetFlag(FLAGS_ep) == 1) {
    for (const char* flag : {"placement", "timeout"}) {
      if (FlagGiven(flag)) {
        usage = absl::InvalidArgumentError(absl::StrCat("flag --", flag, " needs --ep N > 1"));
      }
    }
  }
  if (!usage.ok()) return Fail(usage, kExitUsageError);
  absl::StatusOr<bool> cuda_backend = CudaBackendRequested();  // tools/bench_cuda.h
  if (!cuda_backend.ok()) return Fail(cuda_backend.status(), kExitUsageError);
  if (*cuda_backend && absl::GetFlag(FLAGS_ep) > 1) {
    return Fail("flag --backend cuda: not supported with --ep", kExitUsageError);
  }
  if (*cuda_backend && !CheckCudaBackendAvailable().ok()) {
    return Fail(CheckCudaBackendAvailable(), kExitRuntimeError);
  }
  if (absl::GetFlag(FLAGS_ep) > 1) return RunEpCommand(absl::GetFlag(FLAGS_ep));

  absl::StatusOr<LoadedLayer> loaded = LoadLayer();
  if (!loaded.ok()) return Fail(loaded.status(), kExitRuntimeError);
  const config::LayerConfig config = loaded->config;
  const std::string source = loaded->source;
  absl::StatusOr<MoeLayer> layer = MoeLayer::Create(
      std::move(loaded->config), std::move(loaded->weights), {.experts = *RunKernelOptions()});
  if (!layer.ok()) return Fail(layer.status(), kExitRuntimeError);

  const std::string input = absl::GetFlag(FLAGS_input);
  absl::StatusOr<Tensor> hidden = ReadHiddenStates(input, config.d_model());
  if (!hidden.ok()) return Fail(hidden.status(), kExitRuntimeError);

  StageTimes times;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<LayerOutput> out = *cuda_backend
                                        ? CudaForward(config, layer->weights(), *hidden, &times)
                                        : layer->Forward(*hidden, &times);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!out.ok()) return Fail(absl::StrCat(input, ": ", out.status().message()), kExitRuntimeError);

  const std::string output = absl::GetFlag(FLAGS_output);
  absl::Status written =
      WriteSafetensors(output,
                       {{"output", &out->output},
                        {"topk_ids", &out->topk_ids},
                        {"topk_weights", &out->topk_weights}},
                       {{"config", config.name()}, {"weights", source}, {"input", input}});
  if (!written.ok()) return Fail(written, kExitRuntimeError);

  std::printf(
      "moe run: %s (%s, E=%d, k=%d, d_model=%lld): %lld tokens in %.3f ms (route %.3f, plan "
      "%.3f, experts %.3f, combine %.3f), %lld dropped slots -> %s\n",
      source.c_str(), config.name().c_str(), config.num_experts(), config.top_k(),
      static_cast<long long>(config.d_model()), static_cast<long long>(hidden->dim(0)),
      seconds * 1e3, times.route * 1e3, times.plan * 1e3, times.experts * 1e3, times.combine * 1e3,
      static_cast<long long>(out->dropped_slots), output.c_str());
  return kExitOk;
}

int InitCommand(const std::vector<std::string>& positional) {
  absl::Status usage = NoPositional(positional, "init");
  if (usage.ok()) usage = RequireFlag("config", absl::GetFlag(FLAGS_config), "init");
  if (usage.ok()) usage = RequireFlag("weights", absl::GetFlag(FLAGS_weights), "init");
  const std::string dtype_flag = absl::AsciiStrToLower(absl::GetFlag(FLAGS_dtype));
  if (usage.ok() && dtype_flag != "" && dtype_flag != "f32" && dtype_flag != "bf16") {
    usage = absl::InvalidArgumentError(
        absl::StrCat("flag --dtype: expected f32 or bf16, got '", dtype_flag, "'"));
  }
  if (!usage.ok()) return Fail(usage, kExitUsageError);

  absl::StatusOr<config::LayerConfig> config = config::LoadLayerConfig(absl::GetFlag(FLAGS_config));
  if (!config.ok()) return Fail(config.status(), kExitRuntimeError);
  DType dtype = config->weight_dtype() == config::DTYPE_BF16 ? DType::kBF16 : DType::kF32;
  if (dtype_flag == "f32") dtype = DType::kF32;
  if (dtype_flag == "bf16") dtype = DType::kBF16;

  const int64_t elements = NativeWeightCount(*config);
  absl::Status fits = CheckFitsInMemory(
      static_cast<double>(elements) * (4.0 + static_cast<double>(DTypeSize(dtype))),
      absl::StrCat("config ", config->name(), ": the random weights"));
  if (!fits.ok()) return Fail(fits, kExitRuntimeError);
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  const MoeLayerWeights weights = RandomLayerWeights(*config, seed);
  const std::string path = absl::GetFlag(FLAGS_weights);
  absl::Status written = WriteNativeWeights(*config, weights, dtype, path);
  if (!written.ok()) return Fail(written, kExitRuntimeError);
  std::printf("moe init: %s, seed %llu: %lld weights (%.1f MB %s) -> %s\n", config->name().c_str(),
              static_cast<unsigned long long>(seed), static_cast<long long>(elements),
              static_cast<double>(elements * DTypeSize(dtype)) / 1e6,
              std::string(DTypeName(dtype)).c_str(), path.c_str());
  return kExitOk;
}

}  // namespace moe::tools
