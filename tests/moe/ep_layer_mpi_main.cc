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
#include "comm/replica_placement.h"
#include "comm/replica_planner.h"
#include "configs/layer_config.h"
#include "gtest/gtest.h"
#include "moe/ep_weights.h"
#include "moe/expert_parallel_layer.h"
#include "moe/moe_layer.h"
#include "moe/rebalance_policy.h"
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

bool SameTensor(const Tensor& a, const Tensor& b) {
  if (a.empty() || b.empty()) return a.empty() == b.empty();
  return a.shape() == b.shape() && SameBits(a.data<float>(), b.data<float>(), a.num_elements());
}

bool SameExperts(const experts::ExpertWeights& a, const experts::ExpertWeights& b) {
  return SameTensor(a.gate, b.gate) && SameTensor(a.up, b.up) && SameTensor(a.down, b.down);
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

// Replicated experts and rebalancing. `hot` gets every token (router row set high) and is
// replicated on every rank with equal shares; the other experts sit in contiguous blocks.
comm::ReplicatedPlacement HotReplicated(int32_t num_experts, int n, int32_t hot) {
  comm::ReplicatedPlacement p = comm::ContiguousReplicatedPlacement(num_experts, n);
  std::vector<comm::ExpertReplica>& list = p.replicas[static_cast<size_t>(hot)];
  list.clear();
  double sum = 0;
  for (int r = 0; r < n; ++r) {
    const double share = r + 1 < n ? 1.0 / n : 1.0 - sum;
    sum += share;
    list.push_back({r, share});
  }
  EXPECT_TRUE(comm::FillRankExperts(&p).ok());
  return p;
}

uint64_t PlacementHash(const comm::ReplicatedPlacement& p) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](uint64_t x) { h = (h ^ x) * 1099511628211ull; };
  for (const auto& list : p.replicas) {
    mix(list.size());
    for (const comm::ExpertReplica& r : list) {
      uint64_t bits = 0;
      std::memcpy(&bits, &r.share, sizeof(bits));
      mix(static_cast<uint64_t>(r.rank));
      mix(bits);
    }
  }
  return h;
}

// Forward under `first`, rebalance to the planner's placement for the loads seen (every rank
// plans locally; the plans must agree), forward again: both outputs bitwise equal to MoeLayer.
void ExpectReplicatedAndRebalancedBitwise(config::LayerConfig c, int32_t hot, bool full_weights) {
  SCOPED_TRACE(c.name());
  std::unique_ptr<comm::MpiCommunicator> comm = NewWorldComm();
  const int n = comm->size();
  const int me = comm->rank();
  const std::vector<int64_t> counts = {7, 0, 13, 1};
  int64_t total = 0;
  int64_t first = 0;
  for (int r = 0; r < n; ++r) {
    if (r == me) first = total;
    total += counts[r % counts.size()];
  }
  const int64_t mine = counts[me % counts.size()];
  const int64_t d = c.d_model();
  Tensor global = RandomHidden(total, d, 31);
  for (int64_t i = 0; i < global.num_elements(); ++i) {
    global.data<float>()[i] = std::fabs(global.data<float>()[i]) + 0.1f;
  }
  Tensor hidden = Tensor::Zeros(DType::kF32, {mine, d});
  std::memcpy(hidden.raw(), global.data<float>() + first * d, hidden.num_bytes());
  MoeLayerWeights full = RandomLayerWeights(c, 9);
  for (int64_t i = 0; i < d; ++i) full.router.data<float>()[hot * d + i] = 4;
  absl::StatusOr<MoeLayer> single = MoeLayer::Create(c, CloneWeights(full));
  ASSERT_TRUE(single.ok()) << single.status();
  absl::StatusOr<LayerOutput> want = single->Forward(global);
  ASSERT_TRUE(want.ok()) << want.status();

  const comm::ReplicatedPlacement placement = HotReplicated(c.num_experts(), n, hot);
  MoeLayerWeights weights = CloneWeights(full);
  if (!full_weights) {
    absl::StatusOr<MoeLayerWeights> held = KeepHeldExperts(c, std::move(weights), placement, me);
    ASSERT_TRUE(held.ok()) << held.status();
    weights = *std::move(held);
  }
  absl::StatusOr<ExpertParallelLayer> ep =
      ExpertParallelLayer::Create(c, std::move(weights), placement, comm.get());
  ASSERT_TRUE(ep.ok()) << ep.status();
  EpStats stats;
  absl::StatusOr<LayerOutput> got = ep->Forward(hidden, &stats);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(SameBits(got->output.data<float>(), want->output.data<float>() + first * d, mine * d))
      << "replicated output of rank " << me;
  EXPECT_EQ(stats.global_dropped_slots, want->dropped_slots);
  // Every replica computes exactly the rows the split function gives it.
  std::vector<int64_t> rank_rows(static_cast<size_t>(n), 0);
  for (int32_t e = 0; e < c.num_experts(); ++e) {
    const auto& list = placement.replicas[static_cast<size_t>(e)];
    const std::vector<int64_t> b =
        comm::ReplicaRowRanges(stats.dispatch.expert_load[e], comm::CumulativeShareUnits(list));
    ASSERT_EQ(stats.dispatch.replica_rows[e].size(), list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      EXPECT_EQ(stats.dispatch.replica_rows[e][i], b[i + 1] - b[i]) << "expert " << e;
      rank_rows[static_cast<size_t>(list[i].rank)] += b[i + 1] - b[i];
    }
  }
  EXPECT_EQ(stats.dispatch.rank_load, rank_rows);
  if (c.capacity().factor() == 0) {
    EXPECT_GT(stats.dispatch.expert_load[hot], total - 1);
  }

  // Every rank plans from the same all-gathered loads: the plans agree.
  std::vector<double> loads(stats.dispatch.expert_load.begin(), stats.dispatch.expert_load.end());
  absl::StatusOr<comm::PlanResult> plan =
      comm::PlanReplicatedPlacement(loads, {.num_ranks = n, .num_redundant = n});
  ASSERT_TRUE(plan.ok()) << plan.status();
  uint64_t hash = PlacementHash(plan->placement);
  std::vector<uint64_t> hashes(static_cast<size_t>(n));
  ASSERT_TRUE(comm->AllGather(&hash, sizeof(hash), hashes.data()).ok());
  for (uint64_t h : hashes) EXPECT_EQ(h, hash);

  // Rebalance to the plan, then to the unreplicated contiguous placement.
  for (const comm::ReplicatedPlacement& next :
       {plan->placement, comm::ContiguousReplicatedPlacement(c.num_experts(), n)}) {
    const comm::ReplicatedPlacement before = ep->placement();
    RebalanceStats moved;
    ASSERT_TRUE(ep->Rebalance(next, &moved).ok());
    int64_t changed = 0;
    for (int32_t e = 0; e < c.num_experts(); ++e) {
      for (const comm::ExpertReplica& r : next.replicas[e]) {
        bool had = false;
        for (const comm::ExpertReplica& o : before.replicas[e]) had |= o.rank == r.rank;
        changed += had ? 0 : 1;
      }
    }
    const int64_t block = ExpertBlockFloats(full.experts) * 4;
    EXPECT_EQ(moved.block_bytes, block);
    EXPECT_EQ(moved.move.transfers, changed);
    EXPECT_EQ(moved.move.total_bytes, changed * block);
    int64_t sums[2] = {moved.move.bytes_sent, moved.move.bytes_received};
    ASSERT_TRUE(comm->AllReduceSum(sums, 2).ok());
    EXPECT_EQ(sums[0], changed * block);
    EXPECT_EQ(sums[1], changed * block);
    EXPECT_TRUE(
        SameExperts(ep->weights().experts,
                    RandomLayerWeightsOfExperts(c, 9, comm::HeldExperts(next, me)).experts));
    absl::StatusOr<LayerOutput> after = ep->Forward(hidden);
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_TRUE(
        SameBits(after->output.data<float>(), want->output.data<float>() + first * d, mine * d))
        << "output of rank " << me << " after rebalancing";
  }
}

TEST(ExpertParallelLayerTest, ReplicatedHotExpertAndRebalancingKeepTheOutputBitwise) {
  int index = 0;
  for (const char* family : {"mixtral", "deepseek_v3", "qwen2_moe", "olmoe"}) {
    ExpectReplicatedAndRebalancedBitwise(FamilyConfig(family, 8, 2), 3, index++ % 2 == 0);
  }
  config::LayerConfig sw = FamilyConfig("switch", 6, 1);
  sw.mutable_capacity()->set_factor(2.0f);
  ExpectReplicatedAndRebalancedBitwise(sw, 2, false);
}

TEST(ExpertParallelLayerTest, RebalancePolicyLoopMovesOnceOnSkewedLoads) {
  std::unique_ptr<comm::MpiCommunicator> comm = NewWorldComm();
  const int n = comm->size();
  const config::LayerConfig c = FamilyConfig("mixtral", 8, 2);
  const comm::ReplicatedPlacement start = comm::ContiguousReplicatedPlacement(8, n);
  absl::StatusOr<ExpertParallelLayer> ep = ExpertParallelLayer::Create(
      c, RandomHeldLayerWeights(c, 3, start, comm->rank()), start, comm.get());
  ASSERT_TRUE(ep.ok()) << ep.status();
  absl::StatusOr<RebalancePolicy> policy = RebalancePolicy::Create(
      8, start, {.window_steps = 3, .planner = {.num_ranks = n, .num_redundant = n}});
  ASSERT_TRUE(policy.ok()) << policy.status();
  const std::vector<int64_t> skewed = {90, 10, 10, 10, 10, 10, 10, 10};
  int moves = 0;
  for (int step = 0; step < 5; ++step) {
    RebalanceStats moved;
    absl::StatusOr<bool> did = ObserveAndRebalance(&*policy, &*ep, skewed, &moved);
    ASSERT_TRUE(did.ok()) << did.status();
    if (*did) {
      ++moves;
      EXPECT_EQ(step, 2);
      EXPECT_GT(moved.move.total_bytes, 0);
    }
  }
  EXPECT_EQ(moves, 1);
  EXPECT_GT(ep->placement().replicas[0].size(), 1u);
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) { return moe::testing::RunMpiGtest(argc, argv); }
