#include "tools/bench_compare.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "configs/layer_config.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/packed_gemm.h"
#include "moe/base/status_macros.h"
#include "moe/layer_weights.h"
#include "moe/moe_layer.h"
#include "nlohmann/json.hpp"
#include "tools/bench_check.h"
#include "tools/bench_clock.h"
#include "tools/bench_output.h"
#include "tools/bench_report.h"
#include "tools/bench_runner.h"
#include "tools/blas_ceilings.h"
#include "tools/cli.h"
#include "tools/native_weights.h"

namespace moe::tools {
namespace {

using kernels::WeightFormat;

// One timed configuration: medians over the timed forwards, and over the ceilings measured
// beside them.
struct Measured {
  double seconds = 0;
  double flop = 0;         // mean useful FLOP per forward
  double bytes = 0;        // mean active weight bytes per forward, in the layer's format
  double gemm_gflops = 0;  // the row's GEMM ceiling
  double triad_gbps = 0;
  int64_t wrong = 0;
  std::vector<float> first_output;  // the output on step 0
};

// Which GEMM ceiling a row is held to: the BF16 one for BF16 weights and for the formats whose
// kernels compute in BF16 here (INT8 on amx: its tiles are BF16), sgemm otherwise.
enum class Ceiling { kSgemm, kBf16 };

Ceiling CeilingFor(WeightFormat f, const CeilingProbes& probes) {
  const bool bf16 = f == WeightFormat::kBF16 ||
                    kernels::GemmInputFor(f, kernels::ActiveCpuIsa()) == kernels::GemmInput::kBF16;
  return bf16 && probes.has_bf16() ? Ceiling::kBf16 : Ceiling::kSgemm;
}

// Active weight bytes of one forward: each expert with a slot streams its packed matrices
// once, plus the shared experts and the F32 router.
double ActiveBytes(const MoeLayer& layer, const LayerOutput& out) {
  int64_t active = 0;
  for (int64_t load : out.expert_load) active += load > 0 ? 1 : 0;
  const config::LayerConfig& c = layer.config();
  const double expert_bytes = layer.routed_bank().options().plain
                                  ? ActiveWeightBytes(c, 1) - ActiveWeightBytes(c, 0)
                                  : static_cast<double>(layer.routed_bank().ExpertBytes());
  const double shared_bytes = layer.shared_bank().options().plain
                                  ? 0
                                  : static_cast<double>(layer.shared_bank().ExpertBytes());
  return static_cast<double>(active) * expert_bytes + shared_bytes +
         4.0 * static_cast<double>(c.num_experts() * c.d_model());
}

// Each timed forward follows a triad pass (which also evicts the weights from every cache, as
// the other layers of a model would) and a call of the row's GEMM ceiling. `probes` null:
// forwards only (the plain path).
absl::StatusOr<Measured> Measure(const MoeLayer& layer, const std::vector<Tensor>& inputs,
                                 int warmup, int repeats, int64_t check_tokens,
                                 const MoeLayerWeights* check_weights, CeilingProbes* probes,
                                 Ceiling ceiling) {
  Measured m;
  const config::LayerConfig& c = layer.config();
  for (int i = 0; i < warmup; ++i) {
    MOE_ASSIGN_OR_RETURN(LayerOutput out,
                         layer.Forward(inputs[static_cast<size_t>(i) % inputs.size()]));
  }
  std::vector<double> times, gemm, triad;
  for (int r = 0; r < repeats; ++r) {
    const Tensor& hidden = inputs[static_cast<size_t>(r) % inputs.size()];
    if (probes != nullptr) {
      triad.push_back(probes->Triad());
      gemm.push_back(ceiling == Ceiling::kBf16 ? probes->Bf16Gemm() : probes->Sgemm());
    }
    const Clock::time_point start = Clock::now();
    MOE_ASSIGN_OR_RETURN(LayerOutput out, layer.Forward(hidden));
    times.push_back(Seconds(start));
    m.flop += UsefulFlop(c, hidden.dim(0), hidden.dim(0) * c.top_k() - out.dropped_slots);
    m.bytes += ActiveBytes(layer, out);
    if (r > 0) continue;
    m.first_output.assign(out.output.data<float>(),
                          out.output.data<float>() + out.output.num_elements());
    if (check_tokens > 0) {
      MOE_ASSIGN_OR_RETURN(
          CheckResult check,
          CheckLayerOutput(c, check_weights != nullptr ? *check_weights : layer.weights(), hidden,
                           out, check_tokens, CheckOptionsFor(layer)));
      m.wrong = check.wrong();
      if (m.wrong > 0) {
        std::fprintf(stderr, "moe bench: %lld tokens: %lld wrong; first: %s\n",
                     static_cast<long long>(hidden.dim(0)), static_cast<long long>(m.wrong),
                     check.first_problem.c_str());
      }
    }
  }
  m.seconds = Median(times);
  if (probes != nullptr) {
    m.gemm_gflops = Median(gemm);
    m.triad_gbps = Median(triad);
  }
  m.flop /= repeats;
  m.bytes /= repeats;
  return m;
}

double RelL2(const std::vector<float>& x, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size() && i < ref.size(); ++i) {
    num += (double{x[i]} - ref[i]) * (double{x[i]} - ref[i]);
    den += double{ref[i]} * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : 0;
}

}  // namespace

int RunCompareBench(const CompareOptions& o) {
  // The sgemm ceiling is OpenBLAS at its best for this CPU (see ReexecForCeilings).
  if (const absl::Status reexec = ReexecForCeilings();
      !reexec.ok() && std::getenv(kOpenBlasNoteVariable) == nullptr) {
    std::fprintf(stderr, "moe bench: could not re-run for OpenBLAS (%s); OpenBLAS runs %s\n",
                 std::string(reexec.message()).c_str(), OpenBlasCore().c_str());
  }
  const config::LayerConfig& c = o.config;
  if (!o.json.empty() && !std::ofstream(o.json, std::ios::app)) {  // fail before the long part
    return Fail(absl::StrCat("--json ", o.json, ": cannot open for writing"), kExitRuntimeError);
  }
  std::vector<WeightFormat> formats = {WeightFormat::kF32};
  for (WeightFormat f : o.formats) {
    if (std::find(formats.begin(), formats.end(), f) == formats.end()) formats.push_back(f);
  }
  const double f32_gb = 4.0 * static_cast<double>(NativeWeightCount(c)) / 1e9;
  absl::Status fits = CheckFitsInMemory(
      2.2 * f32_gb * 1e9 + (1 << 30), absl::StrCat("moe bench --compare of ", c.name(),
                                                   " (F32 weights, packed copy, reference copy)"));
  if (!fits.ok()) return Fail(fits, kExitRuntimeError);

  const Clock::time_point init_start = Clock::now();
  const auto weights = std::make_shared<const MoeLayerWeights>(RandomLayerWeights(c, o.seed));
  const double init_seconds = Seconds(init_start);
  const int64_t gemm_n = std::clamp<int64_t>(c.d_ff(), 1024, 4096);
  const int64_t gemm_k = std::clamp<int64_t>(c.d_model(), 1024, 4096);
  CeilingProbes probes(1024, gemm_n, gemm_k, int64_t{512} << 20);

  std::printf(
      "# moe bench --compare: %s (%s): d_model %lld, d_ff %lld, experts %d, top_k %d, shared "
      "d_ff %lld\n",
      c.name().c_str(), o.config_source.c_str(), static_cast<long long>(c.d_model()),
      static_cast<long long>(c.d_ff()), c.num_experts(), c.top_k(),
      static_cast<long long>(config::SharedExpertsDff(c)));
  std::printf("# weights: %.2f GB F32, random (seed %llu), initialized in %.1f s\n", f32_gb,
              static_cast<unsigned long long>(o.seed), init_seconds);
  std::printf("# machine: %s, %d cores; threads %d; commit %s; kernels %s\n", CpuModel().c_str(),
              omp_get_num_procs(), o.threads, GitCommit().c_str(), kernels::CpuIsaReport().c_str());
  std::printf(
      "# timing: %d warm-up + median of %d forwards per row, rotating %d input batches; before "
      "each\n#   timed forward a triad pass (it also evicts the weights from the caches) and a "
      "call of the\n#   row's GEMM ceiling: a row's ceilings are the medians of those calls\n",
      o.warmup, o.repeats, o.steps);
  std::printf("# ceilings: sgemm: %s, %lld x %lld x %lld; BF16 GEMM: %s; triad: 3 x 512 MiB\n",
              probes.sgemm_source().c_str(), static_cast<long long>(probes.m()),
              static_cast<long long>(probes.n()), static_cast<long long>(probes.k()),
              probes.bf16_source().c_str());
  if (const char* note = std::getenv(kOpenBlasNoteVariable)) std::printf("# %s\n", note);
  nlohmann::ordered_json context = {
      {"command", "bench --compare"},
      {"config", c.name()},
      {"config_source", o.config_source},
      {"d_model", c.d_model()},
      {"d_ff", c.d_ff()},
      {"num_experts", c.num_experts()},
      {"top_k", c.top_k()},
      {"cpu", CpuModel()},
      {"cores", omp_get_num_procs()},
      {"threads", o.threads},
      {"commit", GitCommit()},
      {"kernels", kernels::CpuIsaReport()},
      {"seed", o.seed},
      {"warmup", o.warmup},
      {"repeats", o.repeats},
      {"steps", o.steps},
      {"input_skew", o.input_skew},
      {"skew", SkewText(o.skew)},
      {"sgemm", probes.sgemm_source()},
      {"bf16_gemm", probes.bf16_source()},
      {"openblas_note", std::getenv(kOpenBlasNoteVariable) != nullptr
                            ? std::string(std::getenv(kOpenBlasNoteVariable))
                            : std::string()}};
  nlohmann::ordered_json json_rows = nlohmann::ordered_json::array();
  std::printf("\n%-8s %-5s %7s %10s %10s %8s %7s %7s %6s %6s %6s %6s %6s %10s %8s %8s %7s\n",
              "routing", "dtype", "tokens", "time_ms", "tokens/s", "GFLOP/s", "GB/s", "ceil_GF",
              "triad", "%roof", "%serial", "%gemm", "%triad", "plain_ms", "x_plain", "err_f32",
              "#wrong");
  std::fflush(stdout);

  // Inputs per (routing, token count), rotated through by every format: the router's own
  // choice, inputs leaning one way (--input_skew), experts drawn from --skew.
  struct Routing {
    std::string label;
    double input_skew = 0;
    bool drawn = false;
  };
  std::vector<Routing> routings = {{"uniform"}};
  if (o.input_skew > 0) routings.push_back({absl::StrCat("skew", o.input_skew), o.input_skew});
  absl::StatusOr<std::optional<gating::SkewedSelection>> drawn = SkewSelection(o.skew, c, o.seed);
  if (!drawn.ok()) return Fail(drawn.status(), kExitUsageError);
  if (drawn->has_value()) routings.push_back({o.skew->text, 0, true});
  std::map<std::pair<int, int64_t>, std::vector<Tensor>> inputs;
  for (size_t s = 0; s < routings.size(); ++s) {
    for (int64_t t : o.tokens) {
      std::vector<Tensor>& batch = inputs[{static_cast<int>(s), t}];
      for (int step = 0; step < o.steps; ++step) {
        Tensor hidden =
            RandomHidden(t, c.d_model(), o.seed, step, o.normal_inputs, routings[s].input_skew);
        if (routings[s].drawn) {
          const absl::Status applied =
              ApplySkew(**drawn, c, weights->router, static_cast<uint64_t>(step * t), &hidden);
          if (!applied.ok()) return Fail(applied, kExitRuntimeError);
        }
        batch.push_back(std::move(hidden));
      }
    }
  }
  // The plain reference experts share the F32 weights (nothing is packed for them).
  std::optional<MoeLayer> plain;
  if (o.plain) {
    absl::StatusOr<MoeLayer> made = MoeLayer::Create(c, weights, {.experts = {.plain = true}});
    if (!made.ok()) return Fail(made.status(), kExitRuntimeError);
    plain.emplace(*std::move(made));
  }
  std::map<std::pair<int, int64_t>, std::vector<float>> f32_out;
  std::map<std::pair<int, int64_t>, double> plain_seconds;
  int64_t wrong = 0;
  for (WeightFormat f : formats) {
    absl::StatusOr<MoeLayer> layer =
        MoeLayer::Create(c, weights, {.experts = {.weight_format = f}});
    if (!layer.ok()) return Fail(layer.status(), kExitRuntimeError);
    const std::unique_ptr<MoeLayerWeights> check_weights = EffectiveLayerWeights(*layer);
    for (size_t s = 0; s < routings.size(); ++s) {
      for (int64_t t : o.tokens) {
        const std::pair<int, int64_t> key = {static_cast<int>(s), t};
        if (f == WeightFormat::kF32 && plain.has_value()) {
          absl::StatusOr<Measured> p =
              Measure(*plain, inputs[key], 0, 1, 0, nullptr, nullptr, Ceiling::kSgemm);
          if (!p.ok()) return Fail(p.status(), kExitRuntimeError);
          plain_seconds[key] = p->seconds;
        }
        const Ceiling ceiling = CeilingFor(f, probes);
        absl::StatusOr<Measured> m = Measure(*layer, inputs[key], o.warmup, o.repeats,
                                             o.check_tokens, check_weights.get(), &probes, ceiling);
        if (!m.ok()) return Fail(m.status(), kExitRuntimeError);
        if (f == WeightFormat::kF32) f32_out[key] = m->first_output;
        const double compute_s = m->flop / (m->gemm_gflops * 1e9);
        const double stream_s = m->bytes / (m->triad_gbps * 1e9);
        const double roofline = std::max(compute_s, stream_s);
        const double serial = compute_s + stream_s;
        const double gflops = m->flop / m->seconds / 1e9;
        const double gbps = m->bytes / m->seconds / 1e9;
        const auto plain_time = plain_seconds.find(key);
        std::printf(
            "%-8s %-5s %7lld %10.3f %10.1f %8.1f %7.2f %7.0f %6.1f %5.0f%% %6.0f%% %5.0f%% %5.0f%% "
            "%10s %8s %8.2g %7lld\n",
            routings[s].label.c_str(), std::string(kernels::WeightFormatName(f)).c_str(),
            static_cast<long long>(t), m->seconds * 1e3, static_cast<double>(t) / m->seconds,
            gflops, gbps, m->gemm_gflops, m->triad_gbps, 100 * roofline / m->seconds,
            100 * serial / m->seconds, 100 * gflops / m->gemm_gflops, 100 * gbps / m->triad_gbps,
            plain_time == plain_seconds.end()
                ? "-"
                : absl::StrFormat("%.3f", plain_time->second * 1e3).c_str(),
            plain_time == plain_seconds.end()
                ? "-"
                : absl::StrFormat("%.2f", plain_time->second / m->seconds).c_str(),
            RelL2(m->first_output, f32_out[key]), static_cast<long long>(m->wrong));
        std::fflush(stdout);
        const bool has_plain = plain_time != plain_seconds.end();
        json_rows.push_back(
            {{"routing", routings[s].label},
             {"dtype", std::string(kernels::WeightFormatName(f))},
             {"tokens", t},
             {"time_ms", m->seconds * 1e3},
             {"tokens_per_s", static_cast<double>(t) / m->seconds},
             {"gflops", gflops},
             {"gbps", gbps},
             {"ceiling", ceiling == Ceiling::kBf16 ? "bf16_gemm" : "sgemm"},
             {"ceil_gflops", m->gemm_gflops},
             {"triad_gbps", m->triad_gbps},
             {"pct_roofline", 100 * roofline / m->seconds},
             {"pct_serial_roofline", 100 * serial / m->seconds},
             {"pct_gemm", 100 * gflops / m->gemm_gflops},
             {"pct_triad", 100 * gbps / m->triad_gbps},
             {"plain_ms", has_plain ? nlohmann::ordered_json(plain_time->second * 1e3) : nullptr},
             {"x_plain",
              has_plain ? nlohmann::ordered_json(plain_time->second / m->seconds) : nullptr},
             {"err_f32", RelL2(m->first_output, f32_out[key])},
             {"wrong", m->wrong}});
        wrong += m->wrong;
      }
    }
  }
  std::printf(
      "\n# GFLOP/s: useful expert FLOP (2*P*d_model*d_ff per kept slot, P = 3 gated) / time.\n"
      "# GB/s: active weight bytes in the row's format (each expert with a slot streams its "
      "packed\n"
      "#   matrices and scales once, plus shared experts and the F32 router) / time.\n"
      "# ceil_GF, triad: the row's ceilings (GFLOP/s of its GEMM ceiling: the BF16 GEMM for "
      "BF16\n"
      "#   weights and INT8 on amx, whose tiles are BF16, sgemm for the others; GB/s of the "
      "triad),\n"
      "#   medians of the calls beside its forwards.\n"
      "# %%roof = roofline time / time, roofline = max(FLOP / ceil_GF, bytes / triad). %%serial:\n"
      "#   the same with FLOP / ceil_GF + bytes / triad, the bound where a core cannot stream\n"
      "#   while it computes (moe_overlap_bench measures how much it can). %%gemm, %%triad:\n"
      "#   GFLOP/s / ceil_GF, GB/s / triad.\n"
      "# plain_ms: the plain reference experts (F32, MatmulNT), one forward; x_plain = plain / "
      "time.\n"
      "# err_f32: relative L2 of the output against the F32 row on the same inputs. #wrong: "
      "float64\n"
      "#   check of %lld tokens against the values the weights stand for and the inputs as the "
      "kernels\n"
      "#   round them (int8 for INT4, BF16 for BF16 on avx512/amx and for INT8 on amx).\n",
      static_cast<long long>(o.check_tokens));
  if (!o.json.empty()) {
    if (const absl::Status written = WriteJsonReport(o.json, context, json_rows); !written.ok()) {
      return Fail(written, kExitRuntimeError);
    }
  }
  if (wrong > 0) {
    return Fail(absl::StrCat(wrong, " wrong results (see #wrong)"), kExitRuntimeError);
  }
  return kExitOk;
}

}  // namespace moe::tools
