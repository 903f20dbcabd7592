// ExpertParallelLayer across real ranks (mpirun -np 2, 3, 4): every rank runs the single-rank
// MoeLayer over all ranks' tokens concatenated in rank order and checks its own slice of the
// expert-parallel output bitwise, for every family, token counts of 0, 1 and odd, and
// skewed routing.
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "comm/placement.h"
#include "configs/layer_config.h"
#include "gtest/gtest.h"
#include "moe/ep_weights.h"
#include "moe/expert_parallel_layer.h"
#include "moe/moe_layer.h"
#include "tests/comm/mpi_gtest.h"
#include "tests/support/test_inputs.h"

namespace moe {
namespace {

using testing::FamilyConfig;
using testing::NewWorldComm;
using testing::RandomHidden;

const char* const kFamilies[] = {"mixtral", "qwen2_moe",        "qwen3_moe",
                                 "olmoe",   "deepseek_v2",      "deepseek_v3",
                                 "switch",  "geglu_topk_first", "gelu"};

struct Case {
  std::vector<int64_t> tokens = {7, 0, 13, 1};  // rank r has tokens[r % tokens.size()]
  uint64_t seed = 5;
  bool full_weights = false;  // give the layer every expert (else RandomLocalLayerWeights)
  // Optional edits of the weights and of the global hidden states (skewed routing).
  std::function<void(MoeLayerWeights&, const comm::Placement&)> edit_weights;
  bool positive_hidden = false;
  EpOptions options;
};

MoeLayerWeights CloneWeights(const MoeLayerWeights& w) {
  auto clone = [](const Tensor& t) { return t.empty() ? Tensor() : t.Clone(); };
  auto experts = [&](const experts::ExpertWeights& e) {
    return experts::ExpertWeights{clone(e.gate), clone(e.up), clone(e.down)};
  };
  return {clone(w.router), clone(w.selection_bias), experts(w.experts), experts(w.shared),
          clone(w.shared_gate)};
}

bool SameBits(const float* a, const float* b, int64_t n) {
  return std::memcmp(a, b, static_cast<size_t>(n) * sizeof(float)) == 0;
}

// Runs the case; returns the stats, or the forward's error.
absl::StatusOr<EpStats> ExpectBitwise(const config::LayerConfig& c, const Case& k) {
  SCOPED_TRACE(c.name() + " E=" + std::to_string(c.num_experts()) +
               " k=" + std::to_string(c.top_k()));
  std::unique_ptr<comm::MpiCommunicator> comm = NewWorldComm();
  const int n = comm->size();
  const int me = comm->rank();
  int64_t total = 0;
  int64_t first = 0;
  for (int r = 0; r < n; ++r) {
    if (r == me) first = total;
    total += k.tokens[r % k.tokens.size()];
  }
  const int64_t mine = k.tokens[me % k.tokens.size()];
  const int64_t d = c.d_model();
  const comm::Placement placement = *comm::ContiguousPlacement(c.num_experts(), n);

  Tensor global = RandomHidden(total, d, k.seed + 100);
  if (k.positive_hidden) {
    for (int64_t i = 0; i < global.num_elements(); ++i) {
      global.data<float>()[i] = std::fabs(global.data<float>()[i]) + 0.1f;
    }
  }
  Tensor hidden = Tensor::Zeros(DType::kF32, {mine, d});
  std::memcpy(hidden.raw(), global.data<float>() + first * d, hidden.num_bytes());

  MoeLayerWeights full = RandomLayerWeights(c, k.seed);
  if (k.edit_weights) k.edit_weights(full, placement);
  absl::StatusOr<MoeLayer> single = MoeLayer::Create(c, CloneWeights(full));
  EXPECT_TRUE(single.ok()) << single.status();
  absl::StatusOr<LayerOutput> want = single->Forward(global);
  EXPECT_TRUE(want.ok()) << want.status();

  MoeLayerWeights weights = k.full_weights || k.edit_weights
                                ? std::move(full)
                                : RandomLocalLayerWeights(c, k.seed, placement, me);
  absl::StatusOr<ExpertParallelLayer> ep =
      ExpertParallelLayer::Create(c, std::move(weights), placement, comm.get(), k.options);
  EXPECT_TRUE(ep.ok()) << ep.status();
  EXPECT_EQ(ep->weights().experts.num_experts(), placement.num_local_experts(me));
  EpStats stats;
  absl::StatusOr<LayerOutput> got = ep->Forward(hidden, &stats);
  if (!got.ok()) return got.status();

  const int32_t top_k = c.top_k();
  EXPECT_TRUE(SameBits(got->output.data<float>(), want->output.data<float>() + first * d, mine * d))
      << "output of rank " << me;
  EXPECT_TRUE(SameBits(got->topk_weights.data<float>(),
                       want->topk_weights.data<float>() + first * top_k, mine * top_k));
  EXPECT_EQ(std::memcmp(got->topk_ids.raw(), want->topk_ids.data<int32_t>() + first * top_k,
                        got->topk_ids.num_bytes()),
            0);
  EXPECT_EQ(stats.global_tokens, total);
  EXPECT_EQ(stats.global_dropped_slots, want->dropped_slots);
  int64_t dropped = got->dropped_slots;
  EXPECT_TRUE(comm->AllReduceSum(&dropped, 1).ok());
  EXPECT_EQ(dropped, want->dropped_slots);
  int64_t kept = 0;
  for (size_t e = 0; e < want->expert_load.size(); ++e) {
    const int64_t cap = config::ExpertCapacity(c, total);
    const int64_t expect = cap < 0 ? want->expert_load[e] : std::min(want->expert_load[e], cap);
    EXPECT_EQ(stats.dispatch.expert_load[e], expect) << "expert " << e;
    kept += expect;
  }
  int64_t load = 0;
  for (int64_t x : stats.dispatch.rank_load) load += x;
  EXPECT_EQ(load, kept);
  // A second forward gives the same bits (the layer keeps no state between calls).
  absl::StatusOr<LayerOutput> again = ep->Forward(hidden);
  EXPECT_TRUE(again.ok() &&
              SameBits(again->output.data<float>(), got->output.data<float>(), mine * d));
  return stats;
}

TEST(ExpertParallelLayerTest, EqualsSingleRankBitwiseForEveryFamilyAndTokenCount) {
  int index = 0;
  for (const char* family : kFamilies) {
    for (const auto& [num_experts, top_k] : {std::pair{12, 2}, {6, 1}, {12, 4}}) {
      const config::LayerConfig c = FamilyConfig(family, num_experts, top_k);
      if (!config::ValidateLayerConfig(c, "test").ok()) continue;  // grouping holds < top_k
      for (const std::vector<int64_t>& tokens :
           std::vector<std::vector<int64_t>>{{0}, {1}, {7, 0, 13, 1}, {5}, {0, 9}}) {
        Case k;
        k.tokens = tokens;
        k.seed = 17 + index;
        k.full_weights = index++ % 2 == 0;
        absl::StatusOr<EpStats> s = ExpectBitwise(c, k);
        EXPECT_TRUE(s.ok()) << s.status();
      }
    }
  }
}

TEST(ExpertParallelLayerTest, CapacityDropsFollowTheGlobalTokenOrder) {
  config::LayerConfig c = FamilyConfig("switch", 4, 1);
  c.mutable_capacity()->set_factor(0.5f);
  for (const std::vector<int64_t>& tokens :
       std::vector<std::vector<int64_t>>{{9, 0, 14, 3}, {40}, {1}}) {
    Case k;
    k.tokens = tokens;
    absl::StatusOr<EpStats> s = ExpectBitwise(c, k);
    ASSERT_TRUE(s.ok()) << s.status();
  }
  config::LayerConfig topk2 = FamilyConfig("mixtral", 6, 2);
  topk2.mutable_capacity()->set_policy(config::DROP_IN_TOKEN_ORDER);
  topk2.mutable_capacity()->set_factor(0.75f);
  EXPECT_TRUE(ExpectBitwise(topk2, {}).ok());
}

TEST(ExpertParallelLayerTest, AllTokensToOneExpert) {
  const config::LayerConfig c = FamilyConfig("mixtral", 7, 1);
  Case k;
  k.positive_hidden = true;
  k.edit_weights = [](MoeLayerWeights& w, const comm::Placement&) {
    for (int64_t i = 0; i < w.router.dim(1); ++i)
      w.router.data<float>()[3 * w.router.dim(1) + i] = 4;
  };
  absl::StatusOr<EpStats> s = ExpectBitwise(c, k);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->dispatch.expert_load, (std::vector<int64_t>{0, 0, 0, s->global_tokens, 0, 0, 0}));
}

TEST(ExpertParallelLayerTest, AllTokensToOneRank) {
  const config::LayerConfig c = FamilyConfig("qwen3_moe", 8, 2);
  Case k;
  k.positive_hidden = true;
  k.edit_weights = [](MoeLayerWeights& w, const comm::Placement& p) {
    const int64_t d = w.router.dim(1);
    for (int32_t e : p.local_experts[p.num_ranks - 1]) {
      for (int64_t i = 0; i < d; ++i) w.router.data<float>()[e * d + i] = 4 + 0.01f * e;
    }
  };
  absl::StatusOr<EpStats> s = ExpectBitwise(c, k);
  ASSERT_TRUE(s.ok()) << s.status();
  const int n = static_cast<int>(s->dispatch.rank_load.size());
  EXPECT_EQ(s->dispatch.rank_load[n - 1], s->global_tokens * 2);
  EXPECT_DOUBLE_EQ(s->LoadImbalance(), n);
}

TEST(ExpertParallelLayerTest, FewerExpertsThanRanks) {
  EXPECT_TRUE(ExpectBitwise(FamilyConfig("gelu", 3, 2), {}).ok());
}

TEST(ExpertParallelLayerTest, ExceedingTheTokenLimitIsResourceExhaustedEverywhere) {
  Case k;
  k.tokens = {6};
  k.options.dispatcher.max_tokens_per_rank = 1;
  absl::StatusOr<EpStats> s = ExpectBitwise(FamilyConfig("olmoe", 2, 2), k);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.status().message().find("token rows, more than max_tokens_per_rank = 1"),
            std::string::npos)
      << s.status();
}

TEST(ExpertParallelLayerTest, BadTokenOnOneRankStopsEveryRank) {
  // Dropless, the dispatch's count exchange carries the error; with capacity, the demand
  // all-gather before it does.
  for (const auto& [family, call] : {std::pair{"mixtral", "Dispatch"}, {"switch", "Forward"}}) {
    std::unique_ptr<comm::MpiCommunicator> comm = NewWorldComm();
    const int me = comm->rank();
    const config::LayerConfig c = FamilyConfig(family, 8, 2);
    const comm::Placement placement = *comm::ContiguousPlacement(8, comm->size());
    absl::StatusOr<ExpertParallelLayer> ep = ExpertParallelLayer::Create(
        c, RandomLocalLayerWeights(c, 1, placement, me), placement, comm.get());
    ASSERT_TRUE(ep.ok()) << ep.status();
    Tensor hidden = RandomHidden(5, c.d_model(), 2);
    if (me == 1) hidden.data<float>()[3 * c.d_model()] = NAN;
    absl::StatusOr<LayerOutput> out = ep->Forward(hidden);
    if (me == 1) {
      EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(out.status().message().find("token 3 contains NaN or Inf"), std::string::npos)
          << out.status();
    } else {
      EXPECT_EQ(out.status().code(), absl::StatusCode::kAborted);
      EXPECT_EQ(out.status().message(),
                "rank " + std::to_string(me) + ": aborted because rank 1 failed (" + call + ")");
    }
    EXPECT_TRUE(comm->Barrier().ok());  // every rank stopped at the same collective
  }
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) { return moe::testing::RunMpiGtest(argc, argv); }
