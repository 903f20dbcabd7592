#include "experts/packed_experts.h"

#include <omp.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/packed_gemm.h"
#include "moe/base/trace.h"

namespace moe::experts {
namespace {

using kernels::CeilDiv;
using kernels::kInt4Group;
using kernels::kPanelWidth;
using kernels::RoundUp;
using kernels::WeightFormat;

// Rows per work item at most: an expert's rows are split into the fewest tiles of at most this
// many, of nearly equal size (multiples of 32, the AMX row-tile pair), so that its weights
// stream from memory as few times as possible (each item streams its panels once) and no tile
// is a small remainder. Panels per item: 32 (512 outputs), the weights an item streams per row
// tile while its rows stay in L2.
constexpr int64_t kRowTile = 256;
constexpr int64_t kPanelsPerItem = 32;

// Row stride (elements) for rows of `n` elements of `bytes` each: at least RoundUp(n, 32), and
// never a multiple of 1 KiB, so that the rows a tile reads side by side fall into different
// L1 cache sets instead of evicting each other (4 KiB aliasing: measured 2.7x slower AMX tiles
// at a 4 KiB stride).
int64_t RowStride(int64_t n, int64_t bytes) {
  int64_t stride = RoundUp(n, 32);
  if (stride * bytes % 1024 == 0) stride += 64 / bytes;
  return stride;
}

// Upper bound on the items of one phase for `rows` rows over `panels` column panels.
int64_t MaxItems(int64_t num_experts, int64_t rows, int64_t panels) {
  return (num_experts + CeilDiv(rows, kRowTile)) * CeilDiv(panels, kPanelsPerItem);
}

kernels::PackedMatrix PackExpert(const Tensor& stacked, int64_t e, WeightFormat format) {
  const int64_t n = stacked.dim(1);
  const int64_t k = stacked.dim(2);
  return kernels::PackMatrix(stacked.data<float>() + e * n * k, k, n, k, format);
}

}  // namespace

int64_t PackedExperts::ExpertBytes() const {
  if (num_experts == 0) return 0;
  int64_t bytes = up[0].StreamBytes() + down[0].StreamBytes();
  if (!gate.empty()) bytes += gate[0].StreamBytes();
  return bytes;
}

PackedExperts PackExperts(const ExpertWeights& w, config::Activation activation,
                          WeightFormat format) {
  PackedExperts p;
  p.format = format;
  p.activation = activation;
  p.num_experts = w.num_experts();
  p.d_model = w.d_model();
  p.d_ff = w.d_ff();
  const bool gated = config::IsGated(activation);
  if (gated) p.gate.resize(static_cast<size_t>(p.num_experts));
  p.up.resize(static_cast<size_t>(p.num_experts));
  p.down.resize(static_cast<size_t>(p.num_experts));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t e = 0; e < p.num_experts; ++e) {
    const size_t i = static_cast<size_t>(e);
    if (gated) p.gate[i] = PackExpert(w.gate, e, format);
    p.up[i] = PackExpert(w.up, e, format);
    p.down[i] = PackExpert(w.down, e, format);
  }
  return p;
}

ExpertWeights UnpackExperts(const PackedExperts& p) {
  ExpertWeights w = ZeroExpertWeights(p.activation, p.num_experts, p.d_model, p.d_ff);
  const int64_t block = p.d_ff * p.d_model;
  for (int64_t e = 0; e < p.num_experts; ++e) {
    const size_t i = static_cast<size_t>(e);
    if (!p.gate.empty()) kernels::UnpackMatrix(p.gate[i], w.gate.data<float>() + e * block);
    kernels::UnpackMatrix(p.up[i], w.up.data<float>() + e * block);
    kernels::UnpackMatrix(p.down[i], w.down.data<float>() + e * block);
  }
  return w;
}

void GemmInputRows::Reserve(kernels::GemmInput input, int64_t rows, int64_t width) {
  input_ = input;
  if (input == kernels::GemmInput::kBF16) {
    ld_ = RowStride(width, sizeof(uint16_t));
    bf16_.Reserve(rows * ld_);
  } else if (input == kernels::GemmInput::kInt8) {
    ld_ = RowStride(width, sizeof(int8_t));
    groups_ = CeilDiv(width, kInt4Group);
    q_.Reserve(rows * ld_);
    scales_.Reserve(rows * groups_);
    corr_.Reserve(rows * groups_);
  }
}

void GemmInputRows::Prepare(const float* x, int64_t ld_x, int64_t row, int64_t rows, int64_t col0,
                            int64_t cols) {
  if (input_ == kernels::GemmInput::kBF16) {
    kernels::ConvertRowsToBf16(x, ld_x, rows, cols, bf16_.data() + row * ld_ + col0, ld_);
  } else if (input_ == kernels::GemmInput::kInt8) {
    const int64_t g0 = col0 / kInt4Group;
    kernels::QuantizeRowsInt8(x, ld_x, rows, cols, q_.data() + row * ld_ + col0, ld_,
                              scales_.data() + row * groups_ + g0,
                              corr_.data() + row * groups_ + g0, groups_);
  }
}

void GemmInputRows::Bind(int64_t row, kernels::PackedGemmParams* params) const {
  if (input_ == kernels::GemmInput::kBF16) {
    params->a_bf16 = bf16_.data() + row * ld_;
    params->ld_bf16 = ld_;
  } else if (input_ == kernels::GemmInput::kInt8) {
    params->qa = {.q = q_.data() + row * ld_,
                  .ld_q = ld_,
                  .scale = scales_.data() + row * groups_,
                  .corr = corr_.data() + row * groups_,
                  .ld_corr = groups_};
  }
}

void ExpertWorkspace::Reserve(const PackedExperts& x, int64_t max_rows, int num_threads) {
  const kernels::GemmInput input = kernels::GemmInputFor(x.format, kernels::ActiveCpuIsa());
  const bool f32 = input == kernels::GemmInput::kF32;
  ld_hidden_ = RowStride(x.d_ff, sizeof(float));
  ld_rows_ = RowStride(x.d_model, sizeof(float));
  ld_tile_ = RowStride(kPanelsPerItem * kPanelWidth, sizeof(float));
  if (f32) {
    hidden_.Reserve(max_rows * ld_hidden_);
    rows_.Reserve(max_rows * ld_rows_);
  }
  rows_in_.Reserve(input, max_rows, x.d_model);
  hidden_in_.Reserve(input, max_rows, x.d_ff);
  tile_floats_ = (f32 ? 1 : 2) * kRowTile * ld_tile_;
  tiles_.Reserve(tile_floats_ * num_threads);
  num_threads_ = std::max(num_threads_, num_threads);
  const int64_t items = MaxItems(x.num_experts, max_rows, CeilDiv(x.d_ff, kPanelWidth)) +
                        MaxItems(x.num_experts, max_rows, CeilDiv(x.d_model, kPanelWidth));
  if (static_cast<int64_t>(items_.capacity()) < items) items_.reserve(static_cast<size_t>(items));
}

absl::Status RunPackedExperts(const PackedExperts& x, const ExpertBatch& batch,
                              ExpertWorkspace* ws) {
  const int64_t num_rows = batch.offsets[x.num_experts];
  const int64_t d_model = x.d_model;
  const int64_t d_ff = x.d_ff;
  const bool gated = !x.gate.empty();
  const kernels::GemmInput input = kernels::GemmInputFor(x.format, kernels::ActiveCpuIsa());
  const kernels::ActivationKind kind = ActivationKindOf(x.activation);
  ws->Reserve(x, num_rows, omp_get_max_threads());

  // Work items: expert-major, row tiles of kRowTile, column tiles of kPanelsPerItem panels.
  using Item = ExpertWorkspace::Item;
  ws->items_.clear();
  const auto add_items = [&](int64_t panels) {
    for (int64_t e = 0; e < x.num_experts; ++e) {
      const int64_t rows = batch.offsets[e + 1] - batch.offsets[e];
      const int64_t tiles = CeilDiv(rows, kRowTile);
      const int64_t tile = tiles == 0 ? 0 : RoundUp(CeilDiv(rows, tiles), 32);
      for (int64_t r = batch.offsets[e]; r < batch.offsets[e + 1]; r += tile) {
        for (int64_t p = 0; p < panels; p += kPanelsPerItem) {
          ws->items_.push_back({e, r, std::min(r + tile, batch.offsets[e + 1]), p,
                                std::min(p + kPanelsPerItem, panels)});
        }
      }
    }
  };
  add_items(CeilDiv(d_ff, kPanelWidth));
  const int64_t up_items = static_cast<int64_t>(ws->items_.size());
  add_items(CeilDiv(d_model, kPanelWidth));
  const int64_t all_items = static_cast<int64_t>(ws->items_.size());

  trace::TraceScope bank_scope("grouped_gemm", "experts");
  bank_scope.Arg("experts", x.num_experts);
  bank_scope.Arg("rows", num_rows);
  bank_scope.Arg("work_items", all_items);
  const int64_t ld_hidden = ws->ld_hidden_;
  const bool gather = batch.rows == nullptr;
  if (gather && num_rows > 0 && (batch.tokens == nullptr || batch.slot_of_row == nullptr)) {
    return absl::InvalidArgumentError("expert batch has neither rows nor tokens to gather");
  }
  // F32 rows as the F32 kernels read them (input kF32); other inputs read rows_in_.
  const float* rows = !gather                             ? batch.rows
                      : input == kernels::GemmInput::kF32 ? ws->rows_.data()
                                                          : nullptr;
  const int64_t ld_rows = gather ? ws->ld_rows_ : d_model;
  const auto gemm = [&](const kernels::PackedMatrix& w, const float* a, int64_t lda,
                        const GemmInputRows& prepared, const Item& item, float* c, int64_t ldc,
                        bool stream_c) {
    const int64_t r = item.row_begin;
    kernels::PackedGemmParams params;
    params.w = &w;
    params.a = a == nullptr ? nullptr : a + r * lda;
    params.lda = lda;
    params.m = item.row_end - r;
    params.panel_begin = item.panel_begin;
    params.panel_end = item.panel_end;
    params.c = c;
    params.ldc = ldc;
    params.stream_c = stream_c;
    prepared.Bind(r, &params);
    kernels::PackedGemm(params);
  };

#pragma omp parallel
  {
    float* tile = ws->tiles_.data() + omp_get_thread_num() * ws->tile_floats_;
    // The rows in the kernels' format: converted from the batch's rows or straight from the
    // tokens they gather (F32 kernels read given rows in place and gathered ones from rows_).
    if (input != kernels::GemmInput::kF32 || gather) {
#pragma omp for schedule(static)
      for (int64_t r = 0; r < num_rows; ++r) {
        const float* row = gather ? batch.tokens + batch.slot_of_row[r] / batch.top_k * d_model
                                  : batch.rows + r * d_model;
        if (input == kernels::GemmInput::kF32) {
          std::copy(row, row + d_model, ws->rows_.data() + r * ws->ld_rows_);
        } else {
          ws->rows_in_.Prepare(row, d_model, r, 1, 0, d_model);
        }
      }
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < up_items; ++i) {
      const Item& item = ws->items_[static_cast<size_t>(i)];
      const size_t e = static_cast<size_t>(item.expert);
      const int64_t m = item.row_end - item.row_begin;
      const int64_t col0 = item.panel_begin * kPanelWidth;
      const int64_t cols = std::min(d_ff, item.panel_end * kPanelWidth) - col0;
      trace::TraceScope scope([&] { return absl::StrCat("expert ", item.expert, " gate_up"); },
                              "expert");
      scope.Arg("rows", m);
      scope.Arg("first_row", item.row_begin);
      scope.Arg("flop", 2 * m * d_model * cols * (gated ? 2 : 1));
      // The activation's output: into hidden_ for F32 down projections, else into the thread's
      // second tile (in cache, unlike hidden_'s cold lines), converted from there.
      const int64_t ld_tile = ws->ld_tile_;
      const bool to_hidden = input == kernels::GemmInput::kF32;
      float* h = to_hidden ? ws->hidden_.data() + item.row_begin * ld_hidden + col0
                           : tile + kRowTile * ld_tile;
      const int64_t ld_h = to_hidden ? ld_hidden : ld_tile;
      if (gated) {
        gemm(x.gate[e], rows, ld_rows, ws->rows_in_, item, h, ld_h, false);
        gemm(x.up[e], rows, ld_rows, ws->rows_in_, item, tile, ld_tile, false);
        for (int64_t r = 0; r < m; ++r) {
          kernels::ApplyGatedActivation(kind, h + r * ld_h, tile + r * ld_tile, cols);
        }
      } else {
        gemm(x.up[e], rows, ld_rows, ws->rows_in_, item, h, ld_h, false);
        for (int64_t r = 0; r < m; ++r) kernels::ApplyActivation(kind, h + r * ld_h, cols);
      }
      // The down projection's inputs for these columns, while they are in cache (col0 is a
      // multiple of 512: whole groups of 32).
      ws->hidden_in_.Prepare(h, ld_h, item.row_begin, m, col0, cols);
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = up_items; i < all_items; ++i) {
      const Item& item = ws->items_[static_cast<size_t>(i)];
      const int64_t m = item.row_end - item.row_begin;
      trace::TraceScope scope([&] { return absl::StrCat("expert ", item.expert, " down"); },
                              "expert");
      scope.Arg("rows", m);
      scope.Arg("first_row", item.row_begin);
      scope.Arg("flop", 2 * m * d_ff *
                            (std::min(d_model, item.panel_end * kPanelWidth) -
                             item.panel_begin * kPanelWidth));
      gemm(x.down[static_cast<size_t>(item.expert)], ws->hidden_.data(), ld_hidden, ws->hidden_in_,
           item, batch.out + item.row_begin * d_model + item.panel_begin * kPanelWidth, d_model,
           /*stream_c=*/true);
    }
  }
  return absl::OkStatus();
}

}  // namespace moe::experts
