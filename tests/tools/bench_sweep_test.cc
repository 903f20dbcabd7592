// Sweep grids of `moe bench` (tools/bench_sweep.cc, compiled into this test): parsing, grid
// order, and the --hold invariant (active or total params within 1% of the base).
#include "tools/bench_sweep.h"

#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "configs/layer_config.h"
#include "gtest/gtest.h"

namespace moe::tools {
namespace {

config::LayerConfig Preset(const std::string& name) {
  absl::StatusOr<config::LayerConfig> c = config::LoadLayerConfig(name);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : config::LayerConfig();
}

std::vector<SweepDim> Sweep(const std::string& text) {
  absl::StatusOr<std::vector<SweepDim>> dims = ParseSweep(text);
  EXPECT_TRUE(dims.ok()) << dims.status();
  return dims.ok() ? *dims : std::vector<SweepDim>();
}

// Every point of the grid holds `hold` within 1% and reports that deviation.
void ExpectHeld(const std::string& preset, const std::string& sweep, Hold hold) {
  SCOPED_TRACE(absl::StrCat(preset, " ", sweep, " --hold ", HoldName(hold)));
  const config::LayerConfig base = Preset(preset);
  const std::vector<SweepDim> dims = Sweep(sweep);
  absl::StatusOr<std::vector<SweepPoint>> points = ExpandSweep(base, dims, hold);
  ASSERT_TRUE(points.ok()) << points.status();
  size_t expected = 1;
  for (const SweepDim& d : dims) expected *= d.name == "tokens" ? 1 : d.values.size();
  ASSERT_EQ(points->size(), expected);
  const double base_held = static_cast<double>(HeldParams(CountParams(base), hold));
  for (const SweepPoint& p : *points) {
    const double held = static_cast<double>(HeldParams(CountParams(p.config), hold));
    EXPECT_LE(std::abs(held / base_held - 1), kHoldTolerance) << p.label;
    EXPECT_DOUBLE_EQ(p.hold_deviation, held / base_held - 1) << p.label;
    EXPECT_GE(p.config.d_ff(), 1) << p.label;
    EXPECT_TRUE(config::ValidateLayerConfig(p.config, p.label).ok()) << p.label;
    // The shared experts keep the base's width.
    EXPECT_EQ(config::SharedExpertsDff(p.config), config::SharedExpertsDff(base)) << p.label;
  }
}

TEST(BenchSweepTest, TheIssueGridHoldsActiveAndTotalParams) {
  for (const char* preset : {"olmoe-1b-7b", "mixtral-8x7b", "qwen1.5-moe-a2.7b", "qwen3-30b-a3b"}) {
    ExpectHeld(preset, "experts=8,16,32,64,128;top_k=1,2,4,8", Hold::kActiveParams);
    ExpectHeld(preset, "experts=8,16,32,64,128;top_k=1,2,4,8", Hold::kTotalParams);
  }
}

TEST(BenchSweepTest, HoldAcrossDModelAndOddExpertCounts) {
  ExpectHeld("olmoe-1b-7b", "d_model=512,1024,2048,3000;top_k=1,3,8", Hold::kActiveParams);
  ExpectHeld("olmoe-1b-7b", "experts=9,13,61;d_model=1024,2048;tokens=1,5", Hold::kTotalParams);
  ExpectHeld("switch-base-8", "experts=3,8,17;top_k=1", Hold::kTotalParams);
}

TEST(BenchSweepTest, HoldPicksTheClosestIntegerDff) {
  // tiny: d_model 64, d_ff 128, 8 SwiGLU experts, top-2: active = 2*3*64*128 + 8*64 = 49664.
  // With 16 experts the router has 1024 params: d_ff = (49664 - 1024) / 384 = 126.67 -> 127.
  absl::StatusOr<std::vector<SweepPoint>> points =
      ExpandSweep(Preset("tiny"), Sweep("experts=16"), Hold::kActiveParams);
  ASSERT_TRUE(points.ok()) << points.status();
  EXPECT_EQ((*points)[0].config.d_ff(), 127);
  EXPECT_EQ(CountParams((*points)[0].config).active, 2 * 3 * 64 * 127 + 16 * 64);
  EXPECT_NEAR((*points)[0].hold_deviation, 49792.0 / 49664.0 - 1, 1e-12);
}

TEST(BenchSweepTest, WithoutHoldTheSweptValuesApplyAsGiven) {
  absl::StatusOr<std::vector<SweepPoint>> points =
      ExpandSweep(Preset("tiny"), Sweep("d_ff=32,96;tokens=3;top_k=1,2,3"), Hold::kNone);
  ASSERT_TRUE(points.ok()) << points.status();
  ASSERT_EQ(points->size(), 6u);
  // The first dimension outermost, the last fastest; tokens are not a config dimension.
  EXPECT_EQ((*points)[0].label, "d_ff=32 top_k=1");
  EXPECT_EQ((*points)[2].label, "d_ff=32 top_k=3");
  EXPECT_EQ((*points)[5].label, "d_ff=96 top_k=3");
  EXPECT_EQ((*points)[5].config.d_ff(), 96);
  EXPECT_EQ((*points)[5].config.top_k(), 3);
  EXPECT_EQ((*points)[5].hold_deviation, 0);
}

TEST(BenchSweepTest, NoConfigDimensionsIsTheBaseAlone) {
  absl::StatusOr<std::vector<SweepPoint>> points =
      ExpandSweep(Preset("tiny"), Sweep("tokens=1,2"), Hold::kNone);
  ASSERT_TRUE(points.ok()) << points.status();
  ASSERT_EQ(points->size(), 1u);
  EXPECT_EQ((*points)[0].label, "");
  EXPECT_EQ((*points)[0].config.d_ff(), 128);
}

TEST(BenchSweepTest, ParseSweepErrorsNameTheFlag) {
  for (const char* bad : {"", "experts", "heads=2", "experts=0", "experts=1,,2", "experts=x",
                          "experts=2;experts=4", "top_k=99999999999"}) {
    absl::StatusOr<std::vector<SweepDim>> dims = ParseSweep(bad);
    ASSERT_FALSE(dims.ok()) << bad;
    EXPECT_EQ(dims.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(dims.status().message().find("--sweep"), std::string::npos) << dims.status();
  }
  EXPECT_EQ(SweepText(Sweep(" experts=8,16 ; top_k=2")), "experts=8,16 x top_k=2");
}

TEST(BenchSweepTest, ParseHold) {
  EXPECT_EQ(*ParseHold(""), Hold::kNone);
  EXPECT_EQ(*ParseHold("none"), Hold::kNone);
  EXPECT_EQ(*ParseHold("active-params"), Hold::kActiveParams);
  EXPECT_EQ(*ParseHold("total-params"), Hold::kTotalParams);
  absl::StatusOr<Hold> bad = ParseHold("active");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--hold"), std::string::npos) << bad.status();
}

TEST(BenchSweepTest, BadPointsAreErrorsNamingThePoint) {
  absl::StatusOr<std::vector<SweepPoint>> too_many =
      ExpandSweep(Preset("tiny"), Sweep("experts=4,8;top_k=1,6"), Hold::kNone);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(too_many.status().message().find("experts=4 top_k=6"), std::string::npos)
      << too_many.status();
  EXPECT_NE(too_many.status().message().find("top_k"), std::string::npos);

  absl::StatusOr<std::vector<SweepPoint>> dff_and_hold =
      ExpandSweep(Preset("tiny"), Sweep("d_ff=8,16"), Hold::kTotalParams);
  ASSERT_FALSE(dff_and_hold.ok());
  EXPECT_NE(dff_and_hold.status().message().find("d_ff"), std::string::npos);

  // Holding tiny's active params with top-8 of 1024 experts: the router alone exceeds them.
  absl::StatusOr<std::vector<SweepPoint>> unreachable =
      ExpandSweep(Preset("tiny"), Sweep("experts=1024;top_k=8"), Hold::kActiveParams);
  ASSERT_FALSE(unreachable.ok());
  EXPECT_NE(unreachable.status().message().find("experts=1024 top_k=8"), std::string::npos)
      << unreachable.status();
  EXPECT_NE(unreachable.status().message().find("--hold active-params"), std::string::npos);
}

TEST(BenchSweepTest, CountParamsMatchesTheLayout) {
  // qwen1.5-moe-a2.7b has a gated shared expert; CountParams must agree with the preset.
  const config::LayerConfig c = Preset("qwen1.5-moe-a2.7b");
  const ParamCounts p = CountParams(c);
  const int64_t shared = 3 * c.d_model() * config::SharedExpertsDff(c) + c.d_model();
  EXPECT_EQ(p.expert, 3 * c.d_model() * c.d_ff());
  EXPECT_EQ(p.shared, shared);
  EXPECT_EQ(p.router, int64_t{c.num_experts()} * c.d_model());
  EXPECT_EQ(p.active, c.top_k() * p.expert + shared + p.router);
  EXPECT_EQ(p.total, c.num_experts() * p.expert + shared + p.router);
}

}  // namespace
}  // namespace moe::tools
