#include "comm/replica_placement.h"

#include <fstream>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::comm {
namespace {

using ::testing::HasSubstr;

ReplicatedPlacement TwoRanks() {
  ReplicatedPlacement p;
  p.num_experts = 3;
  p.num_ranks = 2;
  p.replicas = {{{0, 0.25}, {1, 0.75}}, {{0, 1.0}}, {{1, 1.0}}};
  EXPECT_TRUE(FillRankExperts(&p).ok());
  return p;
}

std::vector<ExpertReplica> WithShares(const std::vector<double>& shares) {
  std::vector<ExpertReplica> list;
  for (size_t i = 0; i < shares.size(); ++i) list.push_back({static_cast<int32_t>(i), shares[i]});
  return list;
}

TEST(ReplicaSplitTest, RangesAreContiguousCoverEveryRowAndFollowTheShares) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 500; ++trial) {
    const size_t c = 1 + trial % 9;
    std::vector<double> shares(c);
    double sum = 0;
    for (double& s : shares) sum += (s = trial % 5 == 0 && c > 1 ? 0.0 : u(rng));
    if (sum == 0) shares[0] = sum = 1;
    for (double& s : shares) s /= sum;
    const std::vector<ExpertReplica> replicas = WithShares(shares);
    const std::vector<uint64_t> units = CumulativeShareUnits(replicas);
    ASSERT_EQ(units.size(), c + 1);
    EXPECT_EQ(units.front(), 0u);
    EXPECT_EQ(units.back(), kShareUnit);
    for (int64_t count : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{123457}}) {
      const std::vector<int64_t> begin = ReplicaRowRanges(count, units);
      EXPECT_EQ(begin.front(), 0);
      EXPECT_EQ(begin.back(), count);
      double cumulative = 0;
      for (size_t i = 0; i < c; ++i) {
        ASSERT_LE(begin[i], begin[i + 1]);  // contiguous, in replica order
        const double want = count * shares[i];
        EXPECT_LE(std::abs(static_cast<double>(begin[i + 1] - begin[i]) - want), 1.0 + count * 1e-9)
            << "replica " << i << " of " << c << ", count " << count;
        cumulative += shares[i];
        // Each boundary within half a row of the exact cumulative share.
        EXPECT_LE(std::abs(static_cast<double>(begin[i + 1]) - count * cumulative),
                  0.5 + count * 1e-9);
        if (shares[i] == 0) {
          EXPECT_EQ(begin[i + 1], begin[i]);
        }
      }
      for (int64_t row = 0; row < std::min<int64_t>(count, 2000); ++row) {
        const int32_t r = ReplicaOfRow(row, count, units);
        ASSERT_LE(begin[static_cast<size_t>(r)], row);
        ASSERT_LT(row, begin[static_cast<size_t>(r) + 1]);
      }
    }
  }
}

TEST(ReplicaSplitTest, ExactCasesAndLargeCounts) {
  const std::vector<uint64_t> halves = CumulativeShareUnits(WithShares({0.5, 0.5}));
  EXPECT_EQ(ReplicaRowRanges(5, halves), (std::vector<int64_t>{0, 3, 5}));  // 2.5 rounds up
  EXPECT_EQ(ReplicaRowRanges(4, halves), (std::vector<int64_t>{0, 2, 4}));
  const std::vector<uint64_t> thirds = CumulativeShareUnits(WithShares({1. / 3, 1. / 3, 1. / 3}));
  EXPECT_EQ(ReplicaRowRanges(9, thirds), (std::vector<int64_t>{0, 3, 6, 9}));
  EXPECT_EQ(ReplicaOfRow(0, 9, thirds), 0);
  EXPECT_EQ(ReplicaOfRow(3, 9, thirds), 1);
  EXPECT_EQ(ReplicaOfRow(8, 9, thirds), 2);
  const std::vector<uint64_t> one = CumulativeShareUnits(WithShares({1.0}));
  EXPECT_EQ(ReplicaRowRanges(17, one), (std::vector<int64_t>{0, 17}));
  const int64_t huge = int64_t{1} << 40;  // no overflow: 128-bit products
  EXPECT_EQ(ReplicaRowRanges(huge, halves), (std::vector<int64_t>{0, huge / 2, huge}));
  // Zero shares at either end get empty ranges; their rows go to the others.
  const std::vector<uint64_t> ends = CumulativeShareUnits(WithShares({0, 1, 0}));
  EXPECT_EQ(ReplicaRowRanges(10, ends), (std::vector<int64_t>{0, 0, 10, 10}));
  EXPECT_EQ(ReplicaOfRow(0, 10, ends), 1);
  EXPECT_EQ(ReplicaOfRow(9, 10, ends), 1);
}

TEST(ReplicatedPlacementTest, ContiguousHasNoReplicas) {
  const ReplicatedPlacement p = ContiguousReplicatedPlacement(10, 4);
  ASSERT_TRUE(ValidateReplicatedPlacement(p, 10, 4).ok());
  std::vector<size_t> sizes;
  for (const auto& list : p.rank_experts) sizes.push_back(list.size());
  EXPECT_EQ(sizes, (std::vector<size_t>{3, 3, 2, 2}));
  EXPECT_EQ(p.replicas[3][0].rank, 1);
  EXPECT_EQ(p.num_slots(), 10);
  EXPECT_TRUE(ValidateReplicatedPlacement(ContiguousReplicatedPlacement(3, 5), 3, 5).ok());
}

TEST(ReplicatedPlacementTest, ValidationNamesTheViolation) {
  auto check = [](const ReplicatedPlacement& p) {
    return std::string(ValidateReplicatedPlacement(p, p.num_experts, p.num_ranks).message());
  };
  EXPECT_EQ(check(TwoRanks()), "");
  ReplicatedPlacement p = TwoRanks();
  p.replicas[0][1].share = 0.5;
  EXPECT_THAT(check(p), HasSubstr("expert 0: shares sum to 0.75, expected 1"));
  p = TwoRanks();
  p.replicas[0][1].rank = 0;
  EXPECT_THAT(check(p), HasSubstr("expert 0 replica 1: rank 0 holds the expert twice"));
  p = TwoRanks();
  p.replicas[1].clear();
  EXPECT_THAT(check(p), HasSubstr("expert 1 has no replica"));
  p = TwoRanks();
  p.replicas[2][0].rank = 2;
  EXPECT_THAT(check(p), HasSubstr("expert 2 replica 0: rank 2 outside [0, 2)"));
  p = TwoRanks();
  p.rank_experts[0][0].share = 0.3;
  EXPECT_THAT(check(p), HasSubstr("rank_experts of rank 0 does not match replicas"));
  p = TwoRanks();
  p.replicas[2][0].rank = 0;  // rank 0: 3 replicas, rank 1: 1 (4 over 2 must be 2 and 2)
  ASSERT_TRUE(FillRankExperts(&p).ok());
  EXPECT_THAT(check(p), HasSubstr("rank 0 holds 3 replicas, expected 2 (4 replicas over 2"));
  EXPECT_THAT(std::string(ValidateReplicatedPlacement(TwoRanks(), 3, 4).message()),
              HasSubstr("made for 3 experts on 2 ranks, expected 3 experts on 4 ranks"));
}

TEST(PlacementFileTest, RoundTripsExactly) {
  ReplicatedPlacement p;
  p.num_experts = 4;
  p.num_ranks = 3;
  p.replicas = {{{0, 1.0 / 3}, {2, 2.0 / 3}}, {{1, 1.0}}, {{0, 0.1}, {1, 0.7}, {2, 0.2}}, {{2, 1}}};
  ASSERT_TRUE(FillRankExperts(&p).ok());
  p.replicas[2][2].share = 1 - 0.1 - 0.7;  // shares must sum to 1 within 1e-9
  ASSERT_TRUE(FillRankExperts(&p).ok());
  ASSERT_TRUE(ValidateReplicatedPlacement(p, 4, 3).ok());
  const std::string path = ::testing::TempDir() + "placement_roundtrip.textproto";
  ASSERT_TRUE(WritePlacementFile(path, p, {1, 2, 3, 4}, "a comment\nover two lines").ok());
  auto back = ReadPlacementFile(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->replicas.size(), p.replicas.size());
  for (size_t e = 0; e < p.replicas.size(); ++e) {
    ASSERT_EQ(back->replicas[e].size(), p.replicas[e].size());
    for (size_t i = 0; i < p.replicas[e].size(); ++i) {
      EXPECT_EQ(back->replicas[e][i].rank, p.replicas[e][i].rank);
      EXPECT_EQ(back->replicas[e][i].share, p.replicas[e][i].share);  // bitwise
    }
  }
}

TEST(PlacementFileTest, ErrorsNameTheFileAndField) {
  const std::string head = "num_experts: 2\nnum_ranks: 2\n";
  struct Case {
    std::string text;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {"num_experts: 2\nnum_ranks: x\n", "p.textproto: line 2 column 12: "},
           {"num_ranks: 2\n", "p.textproto: num_experts: expected 1 to 1048576, got 0"},
           {"num_experts: 2\n", "p.textproto: num_ranks: expected 1 to 1048576, got 0"},
           {head + "experts { expert: 0 replicas { rank: 0 share: 1 } }\n",
            "p.textproto: experts: expert 1 is missing"},
           {head + "experts { replicas { rank: 0 share: 1 } }\n",
            "p.textproto: experts[0].expert: missing"},
           {head + "experts { expert: 2 replicas { rank: 0 share: 1 } }\n",
            "p.textproto: experts[0].expert: 2 outside [0, 2) (num_experts)"},
           {head + "experts { expert: 0 replicas { rank: 0 share: 1 } }\n"
                   "experts { expert: 0 replicas { rank: 1 share: 1 } }\n",
            "p.textproto: experts[1].expert: expert 0 already given by experts[0]"},
           {head + "experts { expert: 1 }\n",
            "p.textproto: experts[0] (expert 1): replicas: at least one expected"},
           {head + "experts { expert: 0 replicas { rank: 5 share: 1 } }\n",
            "p.textproto: experts[0] (expert 0): replicas[0].rank: 5 outside [0, 2) (num_ranks)"},
           {head + "experts { expert: 0 replicas { share: 1 } }\n",
            "p.textproto: experts[0] (expert 0): replicas[0].rank: missing"},
           {head + "experts { expert: 0 replicas { rank: 0 } }\n",
            "p.textproto: experts[0] (expert 0): replicas[0].share: missing"},
           {head + "experts { expert: 0 replicas { rank: 1 share: 0.5 } replicas { rank: 0 "
                   "share: 0.5 } }\n",
            "replicas[1].rank: 0 not ascending"},
           {head + "experts { expert: 0 replicas { rank: 1 share: 0.5 } replicas { rank: 1 "
                   "share: 0.5 } }\n",
            "replicas[1].rank: 1 appears twice"},
           {head + "experts { expert: 0 replicas { rank: 0 share: 0.6 } replicas { rank: 1 "
                   "share: 0.5 } }\n",
            "experts[0] (expert 0): replicas: shares sum to 1.1, expected 1"},
           {head + "experts { expert: 0 replicas { rank: 0 share: -0.5 } }\n",
            "replicas[0].share: -0.5 outside [0, 1]"},
           {head + "experts { expert: 0 replicas { rank: 0 share: 1 } }\n"
                   "experts { expert: 1 replicas { rank: 0 share: 1 } }\n",
            "p.textproto: replicated placement: rank 0 holds 2 replicas, expected 1"},
       }) {
    auto p = ParsePlacementText(c.text, "p.textproto");
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(c.message)) << c.text;
  }
  auto missing = ReadPlacementFile("/no/such/placement.textproto");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/no/such/placement.textproto"));
  const std::string path = ::testing::TempDir() + "placement_bad.textproto";
  std::ofstream(path) << head << "experts { expert: 0 replicas { rank: 0 share: 1 } }\n";
  EXPECT_THAT(std::string(ReadPlacementFile(path).status().message()),
              HasSubstr(path + ": experts: expert 1 is missing"));
}

}  // namespace
}  // namespace moe::comm
