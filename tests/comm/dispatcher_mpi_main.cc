// Dispatcher across real ranks (mpirun -np 2, 3, 4). Token rows encode their source rank and
// token, the test "expert" maps a row x to 2x + (expert + 1), so every received row and every
// returned result is checked exactly; routing is synthetic and known to every rank.
#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "comm/dispatcher.h"
#include "comm/placement.h"
#include "gtest/gtest.h"
#include "tests/comm/mpi_gtest.h"

namespace moe::comm {
namespace {

using moe::testing::NewWorldComm;

constexpr int64_t kDModel = 9;

enum class Routing { kUniform, kZipf, kOneExpert, kOneRank };

struct Scenario {
  int32_t num_experts = 7;
  int32_t top_k = 3;
  Routing routing = Routing::kUniform;
  std::vector<int64_t> tokens = {5, 0, 13, 1};  // of rank r: tokens[r % size]
  bool drops = false;                           // every third slot dropped
  int64_t max_tokens_per_rank = 0;
};

int64_t TokensOf(const Scenario& s, int rank) { return s.tokens[rank % s.tokens.size()]; }

float Payload(int rank, int64_t t, int64_t i) {
  if (i == 0) return static_cast<float>(rank);
  if (i == 1) return static_cast<float>(t);
  return static_cast<float>((rank * 131 + t * 7 + i) % 1000);
}

bool Dropped(const Scenario& s, int rank, int64_t t, int32_t j) {
  return s.drops && (rank + t + j) % 3 == 0;
}

// The top-k experts of (rank, token): distinct, deterministic, known to every rank.
std::vector<int32_t> RouteOf(const Scenario& s, const Placement& placement, int rank, int64_t t) {
  std::mt19937_64 rng(static_cast<uint64_t>(rank) * 1000003u + static_cast<uint64_t>(t));
  std::vector<double> weights(static_cast<size_t>(s.num_experts), 1.0);
  if (s.routing == Routing::kZipf) {
    for (int32_t e = 0; e < s.num_experts; ++e) weights[e] = 1.0 / std::pow(e + 1.0, 1.2);
  } else if (s.routing == Routing::kOneRank) {
    for (int32_t e = 0; e < s.num_experts; ++e) {
      weights[e] = placement.rank_of_expert[e] == placement.num_ranks - 1 ? 1.0 : 0.0;
    }
  }
  if (s.routing == Routing::kOneExpert) return {4 % s.num_experts};
  std::vector<int32_t> ids;
  while (static_cast<int32_t>(ids.size()) < s.top_k) {
    std::discrete_distribution<int32_t> pick(weights.begin(), weights.end());
    const int32_t e = pick(rng);
    ids.push_back(e);
    weights[e] = 0;
  }
  return ids;
}

struct Result {
  absl::Status dispatch;
  absl::Status combine;
};

// Runs one dispatch + combine of the scenario and checks everything it can.
Result RunScenario(const Scenario& s) {
  std::unique_ptr<MpiCommunicator> comm = NewWorldComm();
  const int n = comm->size();
  const int me = comm->rank();
  absl::StatusOr<Placement> placement = ContiguousPlacement(s.num_experts, n);
  EXPECT_TRUE(placement.ok());
  const int32_t k = s.top_k;
  absl::StatusOr<Dispatcher> dispatcher = Dispatcher::Create(
      comm.get(), *placement, kDModel, k, {.max_tokens_per_rank = s.max_tokens_per_rank});
  EXPECT_TRUE(dispatcher.ok()) << dispatcher.status();

  // This rank's tokens, and the expected counts of every expert over all ranks.
  const int64_t num_tokens = TokensOf(s, me);
  std::vector<float> hidden(static_cast<size_t>(num_tokens * kDModel));
  std::vector<int32_t> ids(static_cast<size_t>(num_tokens * k));
  std::vector<int64_t> row_of_slot(ids.size());
  std::vector<int64_t> expected_load(s.num_experts, 0);
  int64_t expected_remote_rows = 0;
  int64_t expected_remote_slots = 0;
  for (int r = 0; r < n; ++r) {
    for (int64_t t = 0; t < TokensOf(s, r); ++t) {
      const std::vector<int32_t> route = RouteOf(s, *placement, r, t);
      std::set<int> remote;
      for (int32_t j = 0; j < k; ++j) {
        if (Dropped(s, r, t, j)) continue;
        expected_load[route[j]]++;
        const int dest = placement->rank_of_expert[route[j]];
        if (r == me && dest != me) {
          remote.insert(dest);
          ++expected_remote_slots;
        }
      }
      expected_remote_rows += static_cast<int64_t>(remote.size());
      if (r != me) continue;
      for (int64_t i = 0; i < kDModel; ++i) hidden[t * kDModel + i] = Payload(me, t, i);
      for (int32_t j = 0; j < k; ++j) {
        ids[t * k + j] = route[j];
        row_of_slot[t * k + j] = Dropped(s, me, t, j) ? -1 : 0;
      }
    }
  }

  Result result;
  DispatchLayout layout;
  absl::StatusOr<ExpertRows> rows =
      dispatcher->Dispatch({hidden.data(), ids.data(), row_of_slot.data(), num_tokens}, &layout);
  result.dispatch = rows.status();
  if (!rows.ok()) return result;

  // Every received row is a real token row of an expert it was routed to, grouped by expert
  // in global token order, and each expert got exactly its routed count.
  const std::vector<int32_t>& local = placement->local_experts[me];
  EXPECT_EQ(rows->offsets.size(), local.size() + 1);
  std::vector<float> out(static_cast<size_t>(rows->rows.num_elements()));
  int64_t wrong = 0;  // payload values that differ from what their source sent
  for (size_t li = 0; li < local.size(); ++li) {
    const int32_t e = local[li];
    EXPECT_EQ(rows->offsets[li + 1] - rows->offsets[li], expected_load[e]) << "expert " << e;
    double previous = -1;
    for (int64_t row = rows->offsets[li]; row < rows->offsets[li + 1]; ++row) {
      const float* x = rows->rows.data<float>() + row * kDModel;
      const int src = static_cast<int>(x[0]);
      const int64_t t = static_cast<int64_t>(x[1]);
      const std::vector<int32_t> route = RouteOf(s, *placement, src, t);
      bool routed = false;
      for (int32_t j = 0; j < k; ++j) routed |= route[j] == e && !Dropped(s, src, t, j);
      EXPECT_TRUE(routed) << "expert " << e << " got token " << t << " of rank " << src;
      for (int64_t i = 0; i < kDModel; ++i) wrong += x[i] != Payload(src, t, i);
      EXPECT_LT(previous, src * 1e6 + t) << "rows of expert " << e << " out of token order";
      previous = src * 1e6 + t;
      for (int64_t i = 0; i < kDModel; ++i) out[row * kDModel + i] = 2 * x[i] + (e + 1);
    }
  }
  EXPECT_EQ(wrong, 0) << "received rows";
  EXPECT_EQ(layout.stats.expert_load, expected_load);

  absl::StatusOr<Tensor> back = dispatcher->Combine(out.data(), &layout);
  result.combine = back.status();
  if (!back.ok()) return result;
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int32_t j = 0; j < k; ++j) {
      const int64_t row = layout.return_row_of_slot[t * k + j];
      if (Dropped(s, me, t, j)) {
        EXPECT_EQ(row, -1);
        continue;
      }
      if (row < 0) {
        ADD_FAILURE() << "kept slot " << j << " of token " << t << " has no result row";
        continue;
      }
      const float* y = back->data<float>() + row * kDModel;
      for (int64_t i = 0; i < kDModel; ++i)
        wrong += y[i] != 2 * Payload(me, t, i) + (ids[t * k + j] + 1);
    }
  }
  EXPECT_EQ(wrong, 0) << "returned results";
  // Bytes: each token row once per distinct remote rank (with its top_k int32 header), each
  // kept slot's result back; what stays on the rank is a copy.
  const int64_t row_bytes = 4 * kDModel;
  const DispatchStats& st = layout.stats;
  EXPECT_EQ(st.dispatch_bytes.sent, expected_remote_rows * (4 * k + row_bytes));
  EXPECT_EQ(st.dispatch_bytes.received,
            (st.rank_tokens[me] - layout.recv_tokens[me]) * (4 * k + row_bytes));
  EXPECT_EQ(st.combine_bytes.received, expected_remote_slots * row_bytes);
  EXPECT_EQ(st.combine_bytes.sent, (st.rank_load[me] - layout.recv_slots[me]) * row_bytes);
  EXPECT_EQ(st.combine_bytes.self, layout.recv_slots[me] * row_bytes);
  EXPECT_EQ(st.source_tokens[me], num_tokens);
  EXPECT_EQ(st.bytes_sent(), st.dispatch_bytes.sent + st.combine_bytes.sent);
  return result;
}

void ExpectOk(const Scenario& s) {
  Result r = RunScenario(s);
  EXPECT_TRUE(r.dispatch.ok()) << r.dispatch;
  EXPECT_TRUE(r.combine.ok()) << r.combine;
}

TEST(DispatcherTest, UniformRoutingWithUnevenTokensRoundTripsExactly) { ExpectOk({}); }

TEST(DispatcherTest, ZipfRoutingRoundTripsExactly) {
  ExpectOk({.num_experts = 16, .top_k = 2, .routing = Routing::kZipf, .tokens = {50, 31, 7}});
}

TEST(DispatcherTest, AllTokensToOneExpert) {
  ExpectOk({.num_experts = 5, .top_k = 1, .routing = Routing::kOneExpert, .tokens = {9, 4}});
}

TEST(DispatcherTest, AllTokensToOneRank) {
  ExpectOk({.num_experts = 8, .top_k = 2, .routing = Routing::kOneRank, .tokens = {11, 3, 0}});
}

TEST(DispatcherTest, DroppedSlotsTravelNowhere) {
  ExpectOk({.num_experts = 6, .top_k = 4, .tokens = {17, 2}, .drops = true});
}

TEST(DispatcherTest, NoTokensAnywhere) { ExpectOk({.tokens = {0}}); }

TEST(DispatcherTest, FewerExpertsThanRanksLeavesRanksWithoutExperts) {
  ExpectOk({.num_experts = 3, .top_k = 2, .tokens = {6, 1}});
}

TEST(DispatcherTest, TopKEqualsNumExperts) {
  ExpectOk({.num_experts = 5, .top_k = 5, .tokens = {3, 8}});
}

TEST(DispatcherTest, ExceedingTheTokenLimitFailsEveryRankTheSameWay) {
  // 6 tokens on every rank, each to all 3 experts: rank 0 holds expert 0 and receives all.
  const int n = NewWorldComm()->size();
  Result r = RunScenario({.num_experts = 3, .top_k = 3, .tokens = {6}, .max_tokens_per_rank = 5});
  EXPECT_EQ(r.dispatch.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(r.dispatch.message(), "Dispatch: rank 0 would receive " + std::to_string(6 * n) +
                                      " token rows, more than max_tokens_per_rank = 5");
}

TEST(DispatcherTest, BadInputOnOneRankFailsEveryRank) {
  std::unique_ptr<MpiCommunicator> comm = NewWorldComm();
  const int me = comm->rank();
  absl::StatusOr<Dispatcher> dispatcher =
      Dispatcher::Create(comm.get(), *ContiguousPlacement(4, comm->size()), kDModel, 1);
  ASSERT_TRUE(dispatcher.ok());
  std::vector<float> hidden(2 * kDModel, 1.0f);
  int32_t ids[2] = {0, me == 1 ? 4 : 3};
  DispatchLayout layout;
  absl::StatusOr<ExpertRows> rows = dispatcher->Dispatch({hidden.data(), ids, nullptr, 2}, &layout);
  if (me == 1) {
    EXPECT_EQ(rows.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(rows.status().message(),
              "Dispatch: topk_ids of token 1 holds expert 4, outside [0, 4)");
  } else {
    EXPECT_EQ(rows.status().code(), absl::StatusCode::kAborted);
    EXPECT_EQ(rows.status().message(),
              "rank " + std::to_string(me) + ": aborted because rank 1 failed (Dispatch)");
  }
  EXPECT_TRUE(comm->Barrier().ok());  // every rank stopped at the same collective
}

}  // namespace
}  // namespace moe::comm

int main(int argc, char** argv) { return moe::testing::RunMpiGtest(argc, argv); }
