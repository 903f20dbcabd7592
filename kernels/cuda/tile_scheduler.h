// Tile scheduling for the grouped GEMM over experts, shared by the host (tests, launch sizing)
// and the device (the persistent Hopper kernel): which output tile a linear tile index names,
// how many tiles a launch can have at most, and the launch configuration as pure functions.
//
// A tile is block_m rows of ONE expert by block_n output columns. Experts are not padded to a
// multiple of block_m: an expert with 5 rows gets one row block whose rows [5, block_m) are
// outside it, and those rows are masked when the tile is stored (`Tile::row_end`).
#pragma once

#include <cstdint>

// `__host__ __device__` under nvcc, nothing for the host compiler (functions say `inline`).
#ifndef MOE_HOST_DEVICE
#if defined(__CUDACC__)
#define MOE_HOST_DEVICE __host__ __device__
#else
#define MOE_HOST_DEVICE
#endif
#endif

namespace moe::kernels::cuda {

MOE_HOST_DEVICE inline int64_t TileCeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One output tile: rows [row_begin, row_end) of the expert-major row space (row_end - row_begin
// <= block_m; the rows [row_end, row_begin + block_m) of the tile belong to the next expert or
// lie past the last one and must not be written), columns [col_begin, col_begin + block_n).
struct Tile {
  int64_t expert = 0;
  int64_t row_begin = 0;
  int64_t row_end = 0;
  int64_t col_begin = 0;
};

// The rows of expert `e`, offsets clamped into [0, max_rows] and made non-decreasing so that a
// corrupt offsets array can never make a kernel read or write outside [0, max_rows).
MOE_HOST_DEVICE inline void ExpertRows(const int64_t* offsets, int64_t e, int64_t max_rows,
                                       int64_t* begin, int64_t* end) {
  int64_t b = offsets[e];
  int64_t f = offsets[e + 1];
  b = b < 0 ? 0 : (b > max_rows ? max_rows : b);
  f = f < b ? b : (f > max_rows ? max_rows : f);
  *begin = b;
  *end = f;
}

// Maps an INCREASING sequence of linear tile indices to tiles, walking the experts once (the
// persistent kernel's CTA c visits c, c + grid, c + 2 * grid, ...). Tiles are numbered expert by
// expert; inside an expert the row block varies fastest, so CTAs running at the same time share
// an expert's weight tile (weights are the bigger operand when experts have few rows).
//
// NOTE: `offsets` is read as it is (device memory on the GPU, no host synchronization); the
// walker keeps the running count of tiles of the experts before `expert_`, so each index costs
// O(experts skipped) and a whole CTA's walk costs O(num_experts + its tiles).
class GroupedTileWalker {
 public:
  MOE_HOST_DEVICE GroupedTileWalker(const int64_t* offsets, int64_t num_experts, int64_t max_rows,
                                    int64_t n, int block_m, int block_n)
      : offsets_(offsets),
        num_experts_(num_experts),
        max_rows_(max_rows),
        n_blocks_(TileCeilDiv(n, block_n)),
        block_m_(block_m),
        block_n_(block_n) {}

  // Fills `tile` for linear index `index` (>= the previous call's) and returns true, or returns
  // false when `index` is past the last tile.
  MOE_HOST_DEVICE bool Next(int64_t index, Tile* tile) {
    while (expert_ < num_experts_) {
      int64_t begin, end;
      ExpertRows(offsets_, expert_, max_rows_, &begin, &end);
      const int64_t m_blocks = TileCeilDiv(end - begin, block_m_);
      const int64_t tiles = m_blocks * n_blocks_;
      if (index < tiles_before_ + tiles) {
        const int64_t local = index - tiles_before_;
        const int64_t m_block = local % m_blocks;
        const int64_t n_block = local / m_blocks;
        tile->expert = expert_;
        tile->row_begin = begin + m_block * block_m_;
        const int64_t row_end = tile->row_begin + block_m_;
        tile->row_end = row_end < end ? row_end : end;
        tile->col_begin = n_block * block_n_;
        return true;
      }
      tiles_before_ += tiles;
      ++expert_;
    }
    return false;
  }

 private:
  const int64_t* offsets_;
  int64_t num_experts_;
  int64_t max_rows_;
  int64_t n_blocks_;
  int block_m_;
  int block_n_;
  int64_t expert_ = 0;        // the expert the next index is looked up from
  int64_t tiles_before_ = 0;  // tiles of the experts before expert_
};

// An upper bound of the tiles of any launch whose offsets end at or below max_rows, known on the
// host without reading the offsets: sum_e ceil(rows_e / block_m) <= (max_rows + E * (block_m -
// 1)) / block_m, and never more than max_rows (each non-empty row block holds a row).
int64_t MaxGroupedTiles(int64_t max_rows, int64_t num_experts, int64_t n, int block_m, int block_n);

// The exact tile count for host-known offsets [num_experts + 1] (tests and host planning).
int64_t CountGroupedTiles(const int64_t* offsets, int64_t num_experts, int64_t max_rows, int64_t n,
                          int block_m, int block_n);

// Launch configuration of a persistent warp-specialized kernel whose pipeline stage holds
// `stage_bytes` of shared memory (A and B tiles) plus two 8-byte mbarriers.
struct PersistentLaunch {
  int grid = 0;            // CTAs; 0 means nothing to launch
  int stages = 0;          // pipeline depth
  int64_t smem_bytes = 0;  // dynamic shared memory per CTA
};

// Shared memory of `stages` stages: the tiles, a full and an empty barrier per stage, and 1024
// bytes of slack to align the tiles to the 1024-byte 128B-swizzle atom.
int64_t PipelineSmemBytes(int stages, int64_t stage_bytes);

// The deepest pipeline (at most max_stages) that fits smem_per_block_optin; 0 when not even
// min_stages fit.
int PipelineStages(int64_t smem_per_block_optin, int64_t stage_bytes, int min_stages,
                   int max_stages);

// grid = min(max_tiles, num_sms) (one CTA per SM; each CTA loops over tiles), stages and shared
// memory from PipelineStages / PipelineSmemBytes. grid = 0 when max_tiles = 0; stages = 0 when the
// pipeline does not fit.
PersistentLaunch PersistentLaunchConfig(int64_t max_tiles, int num_sms,
                                        int64_t smem_per_block_optin, int64_t stage_bytes,
                                        int min_stages, int max_stages);

}  // namespace moe::kernels::cuda
