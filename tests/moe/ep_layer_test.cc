// The expert-parallel pieces that need no second rank: local weights, capacity across ranks,
// and the one-rank ExpertParallelLayer against MoeLayer, bitwise.
#include <cstring>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/placement.h"
#include "configs/layer_config.h"
#include "gating/routing_plan.h"
#include "gtest/gtest.h"
#include "moe/ep_capacity.h"
#include "moe/ep_weights.h"
#include "moe/expert_parallel_layer.h"
#include "moe/moe_layer.h"
#include "tests/support/test_inputs.h"

namespace moe {
namespace {

using testing::FamilyConfig;
using testing::RandomHidden;

const char* const kFamilies[] = {"mixtral", "qwen2_moe",        "qwen3_moe",
                                 "olmoe",   "deepseek_v2",      "deepseek_v3",
                                 "switch",  "geglu_topk_first", "gelu"};

bool SameBits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), static_cast<size_t>(a.num_bytes())) == 0;
}

bool SameExperts(const experts::ExpertWeights& a, const experts::ExpertWeights& b) {
  return (a.gate.empty() ? b.gate.empty() : SameBits(a.gate, b.gate)) && SameBits(a.up, b.up) &&
         SameBits(a.down, b.down);
}

void ExpectLocalWeightsAreSlices(const config::LayerConfig& c) {
  const std::string family = c.name();
  for (int32_t num_ranks : {1, 3, 5}) {
    const comm::Placement placement = *comm::ContiguousPlacement(c.num_experts(), num_ranks);
    for (int rank = 0; rank < num_ranks; ++rank) {
      SCOPED_TRACE(family + " rank " + std::to_string(rank) + " of " + std::to_string(num_ranks));
      absl::StatusOr<MoeLayerWeights> sliced =
          KeepLocalExperts(c, RandomLayerWeights(c, 7), placement, rank);
      ASSERT_TRUE(sliced.ok()) << sliced.status();
      const MoeLayerWeights local = RandomLocalLayerWeights(c, 7, placement, rank);
      EXPECT_EQ(local.experts.num_experts(), placement.num_local_experts(rank));
      EXPECT_TRUE(SameBits(local.router, sliced->router));
      EXPECT_TRUE(local.selection_bias.empty()
                      ? sliced->selection_bias.empty()
                      : SameBits(local.selection_bias, sliced->selection_bias));
      EXPECT_TRUE(SameExperts(local.experts, sliced->experts));
      EXPECT_TRUE(local.shared.up.empty() || SameExperts(local.shared, sliced->shared));
      EXPECT_TRUE(local.shared_gate.empty() || SameBits(local.shared_gate, sliced->shared_gate));
    }
  }
}

TEST(EpWeightsTest, RandomLocalWeightsAreSlicesOfTheFullRandomWeights) {
  for (const char* family : kFamilies) ExpectLocalWeightsAreSlices(FamilyConfig(family, 12, 2));
}

TEST(EpWeightsTest, RandomLocalWeightsAreSlicesWhenExpertsStraddleGeneratorChunks) {
  config::LayerConfig c = FamilyConfig("qwen2_moe", 5, 2);
  c.set_d_model(128);
  c.set_d_ff(300);  // 38400 values per expert: blocks straddle the 65536-value chunks
  ExpectLocalWeightsAreSlices(c);
}

TEST(EpWeightsTest, KeepLocalExpertsNamesTheBadTensorOrRank) {
  const config::LayerConfig c = FamilyConfig("mixtral", 6, 2);
  const comm::Placement placement = *comm::ContiguousPlacement(6, 2);
  MoeLayerWeights w = RandomLayerWeights(c, 1);
  w.experts.up = Tensor::Zeros(DType::kF32, {5, 24, 40});
  absl::StatusOr<MoeLayerWeights> out = KeepLocalExperts(c, std::move(w), placement, 0);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(), "experts.up: expected F32 [6, 24, 40], got F32 [5, 24, 40]");
  out = KeepLocalExperts(c, RandomLayerWeights(c, 1), placement, 2);
  EXPECT_EQ(out.status().message(),
            "KeepLocalExperts: rank 2 of a placement of 6 experts on 2 ranks, for a layer of 6 "
            "experts");
}

// The plan of the concatenated batch keeps exactly the slots the per-rank quotas keep.
TEST(EpCapacityTest, QuotasFollowTheGlobalTokenOrder) {
  const int32_t num_experts = 4;
  const int32_t top_k = 2;
  const std::vector<int64_t> tokens_of_rank = {5, 0, 7, 3};
  std::vector<std::vector<int32_t>> ids_of_rank;
  std::vector<int32_t> all_ids;
  for (size_t r = 0; r < tokens_of_rank.size(); ++r) {
    std::vector<int32_t> ids;
    for (int64_t t = 0; t < tokens_of_rank[r]; ++t) {
      const int32_t a = static_cast<int32_t>((r + t) % 3);  // experts 0..2 crowded, 3 rare
      ids.push_back(a);
      ids.push_back(t % 4 == 3 ? 3 : (a + 1) % 3);
    }
    all_ids.insert(all_ids.end(), ids.begin(), ids.end());
    ids_of_rank.push_back(ids);
  }
  for (int64_t capacity : {int64_t{0}, int64_t{2}, int64_t{4}, int64_t{100}}) {
    SCOPED_TRACE("capacity " + std::to_string(capacity));
    const gating::RoutingPlan global = *gating::BuildRoutingPlan(
        all_ids.data(), static_cast<int64_t>(all_ids.size() / 2), top_k, num_experts, capacity);
    std::vector<std::vector<int64_t>> demand;
    std::vector<gating::RoutingPlan> plans;
    for (size_t r = 0; r < ids_of_rank.size(); ++r) {
      plans.push_back(*gating::BuildRoutingPlan(ids_of_rank[r].data(), tokens_of_rank[r], top_k,
                                                num_experts, -1));
      demand.push_back(plans.back().demand);
    }
    int64_t slot_base = 0;
    int64_t dropped = 0;
    for (size_t r = 0; r < plans.size(); ++r) {
      const gating::RoutingPlan kept =
          KeepFirstSlots(plans[r], CapacityQuota(demand, static_cast<int>(r), capacity));
      dropped += kept.dropped_slots;
      for (int64_t s = 0; s < tokens_of_rank[r] * top_k; ++s) {
        EXPECT_EQ(kept.row_of_slot[s] >= 0, global.row_of_slot[slot_base + s] >= 0)
            << "rank " << r << " slot " << s;
        if (kept.row_of_slot[s] >= 0) {
          EXPECT_EQ(kept.slot_of_row[kept.row_of_slot[s]], s);
        }
      }
      slot_base += tokens_of_rank[r] * top_k;
    }
    EXPECT_EQ(dropped, global.dropped_slots);
  }
}

void ExpectEpEqualsMoeLayer(const config::LayerConfig& c, int64_t num_tokens) {
  SCOPED_TRACE(c.name() + " T=" + std::to_string(num_tokens));
  comm::LocalCommunicator comm;
  absl::StatusOr<MoeLayer> single = MoeLayer::Create(c, RandomLayerWeights(c, 3));
  ASSERT_TRUE(single.ok()) << single.status();
  absl::StatusOr<ExpertParallelLayer> ep = ExpertParallelLayer::Create(
      c, RandomLayerWeights(c, 3), *comm::ContiguousPlacement(c.num_experts(), 1), &comm);
  ASSERT_TRUE(ep.ok()) << ep.status();
  const Tensor hidden = RandomHidden(num_tokens, c.d_model(), 11);
  absl::StatusOr<LayerOutput> want = single->Forward(hidden);
  EpStats stats;
  absl::StatusOr<LayerOutput> got = ep->Forward(hidden, &stats);
  ASSERT_TRUE(want.ok() && got.ok()) << got.status();
  EXPECT_TRUE(SameBits(got->output, want->output));
  EXPECT_TRUE(SameBits(got->topk_ids, want->topk_ids));
  EXPECT_TRUE(SameBits(got->topk_weights, want->topk_weights));
  EXPECT_EQ(got->expert_load, want->expert_load);
  EXPECT_EQ(got->dropped_slots, want->dropped_slots);
  EXPECT_EQ(stats.global_tokens, num_tokens);
  EXPECT_EQ(stats.global_dropped_slots, want->dropped_slots);
  EXPECT_EQ(stats.dispatch.bytes_sent(), 0);  // one rank: everything stays home
  int64_t kept = 0;
  for (int64_t x : stats.dispatch.expert_load) kept += x;
  EXPECT_EQ(stats.dispatch.rank_load, std::vector<int64_t>{kept});
}

TEST(ExpertParallelLayerTest, OneRankEqualsMoeLayerBitwiseForEveryFamily) {
  for (const char* family : kFamilies) {
    for (int64_t num_tokens : {0, 1, 7, 33}) {
      ExpectEpEqualsMoeLayer(FamilyConfig(family, 8, 2), num_tokens);
    }
  }
  config::LayerConfig drops = FamilyConfig("switch", 4, 1);
  drops.mutable_capacity()->set_factor(0.5f);
  ExpectEpEqualsMoeLayer(drops, 40);
}

TEST(ExpertParallelLayerTest, CreateChecksPlacementAndWeights) {
  comm::LocalCommunicator comm;
  const config::LayerConfig c = FamilyConfig("olmoe", 6, 2);
  absl::StatusOr<ExpertParallelLayer> ep = ExpertParallelLayer::Create(
      c, RandomLayerWeights(c, 1), *comm::ContiguousPlacement(6, 2), &comm);
  EXPECT_EQ(ep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ep.status().message(),
            "placement: built for 6 experts on 2 ranks, but the layer has 6 experts on 1 ranks");
  MoeLayerWeights w = RandomLayerWeights(c, 1);
  w.router = Tensor();
  ep = ExpertParallelLayer::Create(c, std::move(w), *comm::ContiguousPlacement(6, 1), &comm);
  EXPECT_EQ(ep.status().message(), "router: expected F32 [6, 40], got nothing");
  EXPECT_EQ(ExpertParallelLayer::Create(c, RandomLayerWeights(c, 1),
                                        *comm::ContiguousPlacement(6, 1), nullptr)
                .status()
                .message(),
            "ExpertParallelLayer: no communicator");
}

TEST(ExpertParallelLayerTest, BadHiddenStatesAreTheSameErrorsAsMoeLayer) {
  comm::LocalCommunicator comm;
  const config::LayerConfig c = FamilyConfig("mixtral", 8, 2);
  absl::StatusOr<ExpertParallelLayer> ep = ExpertParallelLayer::Create(
      c, RandomLayerWeights(c, 2), *comm::ContiguousPlacement(8, 1), &comm);
  ASSERT_TRUE(ep.ok());
  absl::StatusOr<LayerOutput> out = ep->Forward(Tensor::Zeros(DType::kF32, {3, 41}));
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(),
            "hidden_states: expected F32 or BF16 [num_tokens, 40], got F32 [3, 41]");
  Tensor hidden = RandomHidden(6, c.d_model(), 3);
  hidden.data<float>()[4 * c.d_model()] = NAN;
  out = ep->Forward(hidden);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("token 4 contains NaN or Inf"), std::string::npos)
      << out.status();
}

}  // namespace
}  // namespace moe
