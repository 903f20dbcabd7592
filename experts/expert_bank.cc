#include "experts/expert_bank.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/matmul.h"
#include "moe/base/trace.h"

namespace moe::experts {
namespace {

constexpr int64_t kRowBlock = 16;

struct WorkItem {
  int64_t expert;
  int64_t row_begin;
  int64_t row_end;
};

}  // namespace

absl::Status RunExperts(const ExpertWeights& w, config::Activation activation,
                        const ExpertBatch& batch) {
  const int64_t num_experts = w.num_experts();
  const int64_t d_model = w.d_model();
  const int64_t d_ff = w.d_ff();
  const bool gated = config::IsGated(activation);
  const kernels::ActivationKind kind = ActivationKindOf(activation);

  std::vector<WorkItem> items;
  for (int64_t e = 0; e < num_experts; ++e) {
    for (int64_t r = batch.offsets[e]; r < batch.offsets[e + 1]; r += kRowBlock) {
      const int64_t end =
          r + kRowBlock < batch.offsets[e + 1] ? r + kRowBlock : batch.offsets[e + 1];
      items.push_back({e, r, end});
    }
  }
  const int64_t num_items = static_cast<int64_t>(items.size());
  trace::TraceScope bank_scope("grouped_gemm", "experts");
  bank_scope.Arg("experts", num_experts);
  bank_scope.Arg("rows", batch.offsets[num_experts]);
  bank_scope.Arg("work_items", num_items);
#pragma omp parallel
  {
    std::vector<float> h(static_cast<size_t>(kRowBlock * d_ff));
    std::vector<float> u(gated ? static_cast<size_t>(kRowBlock * d_ff) : 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < num_items; ++i) {
      const WorkItem& item = items[static_cast<size_t>(i)];
      const int64_t m = item.row_end - item.row_begin;
      const float* x = batch.rows + item.row_begin * d_model;
      const int64_t expert_in = item.expert * d_ff * d_model;
      {
        trace::TraceScope scope([&] { return absl::StrCat("expert ", item.expert, " gate_up"); },
                                "expert");
        scope.Arg("rows", m);
        scope.Arg("first_row", item.row_begin);
        scope.Arg("flop", 2 * m * d_model * d_ff * (gated ? 2 : 1));
        // out[m, d_ff] = x . weight_e^T for this expert's [d_ff, d_model] block.
        const auto project = [&](const Tensor& weight, float* out) {
          kernels::MatmulNT({.a = x,
                             .lda = d_model,
                             .b = weight.data<float>() + expert_in,
                             .ldb = d_model,
                             .c = out,
                             .ldc = d_ff,
                             .m = m,
                             .n = d_ff,
                             .k = d_model});
        };
        if (gated) {
          project(w.gate, h.data());
          project(w.up, u.data());
          kernels::ApplyGatedActivation(kind, h.data(), u.data(), m * d_ff);
        } else {
          project(w.up, h.data());
          kernels::ApplyActivation(kind, h.data(), m * d_ff);
        }
      }
      trace::TraceScope scope([&] { return absl::StrCat("expert ", item.expert, " down"); },
                              "expert");
      scope.Arg("rows", m);
      scope.Arg("first_row", item.row_begin);
      scope.Arg("flop", 2 * m * d_model * d_ff);
      kernels::MatmulNT({.a = h.data(),
                         .lda = d_ff,
                         .b = w.down.data<float>() + item.expert * d_model * d_ff,
                         .ldb = d_ff,
                         .c = batch.out + item.row_begin * d_model,
                         .ldc = d_model,
                         .m = m,
                         .n = d_model,
                         .k = d_ff});
    }
  }
  return absl::OkStatus();
}

}  // namespace moe::experts
