#include "kernels/cuda/tile_scheduler.h"

#include <algorithm>

namespace moe::kernels::cuda {

int64_t MaxGroupedTiles(int64_t max_rows, int64_t num_experts, int64_t n, int block_m,
                        int block_n) {
  if (max_rows <= 0 || num_experts <= 0 || n <= 0) return 0;
  const int64_t row_blocks = std::min(max_rows, (max_rows + num_experts * (block_m - 1)) / block_m);
  return row_blocks * TileCeilDiv(n, block_n);
}

int64_t CountGroupedTiles(const int64_t* offsets, int64_t num_experts, int64_t max_rows, int64_t n,
                          int block_m, int block_n) {
  int64_t tiles = 0;
  for (int64_t e = 0; e < num_experts; ++e) {
    int64_t begin, end;
    ExpertRows(offsets, e, max_rows, &begin, &end);
    tiles += TileCeilDiv(end - begin, block_m) * TileCeilDiv(n, block_n);
  }
  return tiles;
}

int64_t PipelineSmemBytes(int stages, int64_t stage_bytes) {
  return int64_t{stages} * (stage_bytes + 2 * 8) + 1024;
}

int PipelineStages(int64_t smem_per_block_optin, int64_t stage_bytes, int min_stages,
                   int max_stages) {
  for (int stages = max_stages; stages >= min_stages; --stages) {
    if (PipelineSmemBytes(stages, stage_bytes) <= smem_per_block_optin) return stages;
  }
  return 0;
}

PersistentLaunch PersistentLaunchConfig(int64_t max_tiles, int num_sms,
                                        int64_t smem_per_block_optin, int64_t stage_bytes,
                                        int min_stages, int max_stages) {
  PersistentLaunch launch;
  launch.grid = static_cast<int>(std::min<int64_t>(std::max<int64_t>(max_tiles, 0), num_sms));
  launch.stages = PipelineStages(smem_per_block_optin, stage_bytes, min_stages, max_stages);
  launch.smem_bytes = launch.stages > 0 ? PipelineSmemBytes(launch.stages, stage_bytes) : 0;
  return launch;
}

}  // namespace moe::kernels::cuda
