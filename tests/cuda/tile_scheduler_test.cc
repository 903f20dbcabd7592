// The grouped GEMM's tile scheduling and launch sizing, run on the CPU: the same walker the
// persistent Hopper kernel runs on the device.
#if MOE_HAVE_CUDA

#include "kernels/cuda/tile_scheduler.h"

#include <algorithm>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace moe::kernels::cuda {
namespace {

struct Problem {
  std::vector<int64_t> offsets;  // [num_experts + 1]
  int64_t max_rows;
  int64_t n;
};

std::vector<int64_t> OffsetsFromCounts(const std::vector<int64_t>& counts) {
  std::vector<int64_t> offsets = {0};
  for (int64_t c : counts) offsets.push_back(offsets.back() + c);
  return offsets;
}

// Runs every CTA of a persistent grid (CTA c visits c, c + grid, ...) and checks that each output
// element of each expert is written exactly once, that no tile writes a row outside its expert,
// and that the tile count matches CountGroupedTiles and stays within MaxGroupedTiles.
void ExpectExactCover(const Problem& p, int block_m, int block_n, int grid) {
  const int64_t num_experts = static_cast<int64_t>(p.offsets.size()) - 1;
  std::vector<int> writes(static_cast<size_t>(p.max_rows * p.n), 0);
  int64_t tiles = 0;
  for (int cta = 0; cta < grid; ++cta) {
    GroupedTileWalker walker(p.offsets.data(), num_experts, p.max_rows, p.n, block_m, block_n);
    Tile tile;
    int64_t previous_expert = 0;
    for (int64_t index = cta; walker.Next(index, &tile); index += grid) {
      ++tiles;
      ASSERT_GE(tile.expert, previous_expert) << "a CTA's tiles go expert by expert";
      previous_expert = tile.expert;
      ASSERT_GE(tile.expert, 0);
      ASSERT_LT(tile.expert, num_experts);
      const int64_t expert_begin = p.offsets[tile.expert], expert_end = p.offsets[tile.expert + 1];
      ASSERT_GE(tile.row_begin, expert_begin);
      ASSERT_LT(tile.row_begin, tile.row_end) << "no tile without rows";
      ASSERT_LE(tile.row_end, expert_end) << "a tile never writes the next expert's rows";
      ASSERT_LE(tile.row_end - tile.row_begin, block_m);
      ASSERT_EQ((tile.row_begin - expert_begin) % block_m, 0) << "row blocks start per expert";
      ASSERT_EQ(tile.col_begin % block_n, 0);
      ASSERT_LT(tile.col_begin, p.n);
      for (int64_t r = tile.row_begin; r < tile.row_end; ++r) {
        for (int64_t c = tile.col_begin; c < std::min(p.n, tile.col_begin + block_n); ++c) {
          ++writes[static_cast<size_t>(r * p.n + c)];
        }
      }
    }
  }
  const int64_t total_rows = p.offsets.back();
  for (int64_t r = 0; r < p.max_rows; ++r) {
    for (int64_t c = 0; c < p.n; ++c) {
      ASSERT_EQ(writes[static_cast<size_t>(r * p.n + c)], r < total_rows ? 1 : 0)
          << "row " << r << " col " << c;
    }
  }
  EXPECT_EQ(tiles,
            CountGroupedTiles(p.offsets.data(), num_experts, p.max_rows, p.n, block_m, block_n));
  EXPECT_LE(tiles, MaxGroupedTiles(p.max_rows, num_experts, p.n, block_m, block_n));
}

TEST(GroupedTileWalkerTest, CoversUnevenExpertsWithEmptyOnesExactlyOnce) {
  // E = 7 (not a power of two), experts 1 and 4 empty, sizes around the 128-row block.
  const Problem p = {OffsetsFromCounts({129, 0, 1, 127, 0, 128, 300}), 685, 320};
  for (int grid : {1, 2, 3, 7, 132, 1000}) ExpectExactCover(p, 128, 128, grid);
  ExpectExactCover(p, 128, 64, 5);
}

TEST(GroupedTileWalkerTest, OneExpertWithAllRows) {
  const Problem p = {OffsetsFromCounts({0, 0, 517, 0}), 517, 256};
  for (int grid : {1, 4, 132}) ExpectExactCover(p, 128, 128, grid);
}

TEST(GroupedTileWalkerTest, NoRowsMeansNoTiles) {
  const Problem p = {OffsetsFromCounts({0, 0, 0}), 0, 128};
  ExpectExactCover(p, 128, 128, 4);
  EXPECT_EQ(MaxGroupedTiles(0, 3, 128, 128, 128), 0);
  Tile tile;
  GroupedTileWalker walker(p.offsets.data(), 3, 0, 128, 128, 128);
  EXPECT_FALSE(walker.Next(0, &tile));
}

TEST(GroupedTileWalkerTest, SingleRowAndColumnsNotAMultipleOfTheBlock) {
  ExpectExactCover({OffsetsFromCounts({1}), 1, 16}, 128, 128, 3);
  ExpectExactCover({OffsetsFromCounts({3, 5}), 8, 200}, 128, 128, 2);
}

TEST(GroupedTileWalkerTest, RowsPastTheLastExpertAreNeverTouched) {
  // max_rows is a bound: the plan used 40 of 100 rows.
  ExpectExactCover({OffsetsFromCounts({10, 0, 30}), 100, 128}, 128, 128, 3);
}

TEST(GroupedTileWalkerTest, MatchesRandomPlansAgainstTheBound) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const int num_experts = 1 + static_cast<int>(rng() % 33);
    std::vector<int64_t> counts(num_experts);
    for (int64_t& c : counts) c = (rng() % 3 == 0) ? 0 : static_cast<int64_t>(rng() % 300);
    Problem p = {OffsetsFromCounts(counts), 0, 16 * (1 + static_cast<int64_t>(rng() % 20))};
    p.max_rows = p.offsets.back() + static_cast<int64_t>(rng() % 5);
    ExpectExactCover(p, 128, trial % 2 ? 128 : 64, 1 + static_cast<int>(rng() % 140));
  }
}

TEST(GroupedTileWalkerTest, CorruptOffsetsStayInsideMaxRows) {
  // Decreasing and out-of-range offsets (device data the host never checked): every tile still
  // lies in [0, max_rows) and the walk ends.
  const std::vector<int64_t> offsets = {0, 50, 20, 1000, -5, 70};
  GroupedTileWalker walker(offsets.data(), 5, 64, 128, 128, 128);
  Tile tile;
  int64_t tiles = 0;
  for (int64_t index = 0; walker.Next(index, &tile); ++index) {
    ++tiles;
    EXPECT_GE(tile.row_begin, 0);
    EXPECT_LE(tile.row_end, 64);
    EXPECT_LT(tile.row_begin, tile.row_end);
  }
  EXPECT_EQ(tiles, CountGroupedTiles(offsets.data(), 5, 64, 128, 128, 128));
  EXPECT_EQ(tiles, 3);  // rows [0, 50), [20, 64) and [0, 64): wrong but in bounds
}

TEST(GroupedTileWalkerTest, WeightTileIsSharedByConsecutiveIndices) {
  // Inside an expert the row block varies fastest.
  const std::vector<int64_t> offsets = {0, 300};
  GroupedTileWalker walker(offsets.data(), 1, 300, 256, 128, 128);
  Tile tile;
  std::vector<std::pair<int64_t, int64_t>> order;
  for (int64_t index = 0; walker.Next(index, &tile); ++index) {
    order.push_back({tile.row_begin, tile.col_begin});
  }
  const std::vector<std::pair<int64_t, int64_t>> want = {{0, 0},   {128, 0},   {256, 0},
                                                         {0, 128}, {128, 128}, {256, 128}};
  EXPECT_EQ(order, want);
}

TEST(TileBoundTest, MaxGroupedTilesIsTightForEvenSplits) {
  // 8 experts of 1 row: 8 row blocks, not ceil(8 / 128) = 1.
  EXPECT_EQ(MaxGroupedTiles(8, 8, 128, 128, 128), 8);
  // 256 experts, 4096 rows: at most 4096 / 128 + 256 row blocks (rounded down).
  EXPECT_EQ(MaxGroupedTiles(4096, 256, 256, 128, 128), ((4096 + 256 * 127) / 128) * 2);
  EXPECT_EQ(MaxGroupedTiles(100, 1, 100, 128, 64), 2);
}

TEST(PersistentLaunchTest, PicksTheDeepestPipelineThatFits) {
  const int64_t stage = 32 * 1024;
  EXPECT_EQ(PipelineSmemBytes(6, stage), 6 * (stage + 16) + 1024);
  // H100: 227 KiB per block opt-in.
  const int64_t h100 = 232448;
  EXPECT_EQ(PipelineStages(h100, stage, 2, 8), 7);  // 7 * (32 KiB + 16) + 1024 = 230512
  EXPECT_EQ(PipelineStages(h100, stage, 2, 4), 4);
  EXPECT_EQ(PipelineStages(48 * 1024, stage, 2, 8), 0) << "two stages do not fit in 48 KiB";
  const PersistentLaunch launch = PersistentLaunchConfig(1000, 132, h100, stage, 2, 8);
  EXPECT_EQ(launch.grid, 132);
  EXPECT_EQ(launch.stages, 7);
  EXPECT_EQ(launch.smem_bytes, PipelineSmemBytes(7, stage));
  EXPECT_LE(launch.smem_bytes, h100);
  EXPECT_EQ(PersistentLaunchConfig(5, 132, h100, stage, 2, 8).grid, 5) << "no idle CTAs";
  EXPECT_EQ(PersistentLaunchConfig(0, 132, h100, stage, 2, 8).grid, 0);
}

}  // namespace
}  // namespace moe::kernels::cuda

#else  // !MOE_HAVE_CUDA

#include "gtest/gtest.h"

TEST(TileSchedulerTest, NeedsTheCudaToolkit) { GTEST_SKIP() << "built without the CUDA toolkit"; }

#endif  // MOE_HAVE_CUDA
