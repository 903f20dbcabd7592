// The AMX tile configuration (palette 1) and its loading, shared by the AMX kernels and the
// overlap benchmark.
#ifndef MOE_KERNELS_CPU_AMX_TILE_CONFIG_H_
#define MOE_KERNELS_CPU_AMX_TILE_CONFIG_H_

#include <cstdint>

namespace moe::kernels {

// The 64-byte operand of LDTILECFG: per tile register, its rows and bytes per row.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Loads `cfg` into the tile registers' configuration (the thread must hold AMX permission:
// DetectedCpuIsa() == kAmx).
// NOTE: not _tile_loadconfig: GCC 12's asm for it names only the configuration's first 8
// bytes as its input, so the compiler may drop the stores to the rest as dead (it did for an
// experimental decode kernel in session 8: every tile instruction then raised #UD). The whole
// struct is the operand here.
inline void LoadTileConfig(const TileConfig& cfg) { asm volatile("ldtilecfg %0" : : "m"(cfg)); }

}  // namespace moe::kernels

#endif  // MOE_KERNELS_CPU_AMX_TILE_CONFIG_H_
