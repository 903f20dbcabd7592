// Skewed routing for load-balancing experiments: `--skew uniform|zipf:S|hot:N:P|trace:FILE`
// makes the routed expert ids follow a chosen distribution while the combine weights keep the
// router family's semantics.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "configs/moe_config.pb.h"

namespace moe::gating {

// A parsed --skew value.
//   uniform     every expert the same fraction of the slots
//   zipf:S      the expert of popularity rank i (0-based) gets a fraction proportional to
//               1 / (i + 1)^S, S in [0, 16]; ranks are a seeded random permutation of experts
//   hot:N:P     N hot experts (the first N of the seeded permutation) share a fraction P in
//               [0, 1] of the slots equally, the others share 1 - P equally
//   trace:FILE  fractions proportional to a loads file (gating/load_stats.h format), whose
//               expert count must equal the layer's
struct SkewSpec {
  enum class Kind { kUniform, kZipf, kHot, kTrace };
  Kind kind = Kind::kUniform;
  double zipf_s = 0;
  int32_t hot_experts = 0;
  double hot_fraction = 0;
  std::vector<double> trace_loads;  // kTrace: the file's loads, read by ParseSkewSpec
  std::string text;                 // the spec as given
};

// kInvalidArgument naming the spec and what was expected; a trace file's errors name the file
// and line. Reads the trace file.
absl::StatusOr<SkewSpec> ParseSkewSpec(absl::string_view text);

// [num_experts] target fraction of the slots of each expert (sums to 1). Deterministic from
// `seed` (the permutation of zipf and hot; platform-independent). kInvalidArgument naming the
// spec when it does not fit num_experts (hot N > num_experts, a trace of another size or with
// zero total load).
absl::StatusOr<std::vector<double>> SkewFractions(const SkewSpec& spec, int32_t num_experts,
                                                  uint64_t seed);

// [num_experts] the probability that a token selects each expert when it selects top_k
// distinct experts and the slots follow `fractions` as closely as possible: an expert can hold
// at most 1 / top_k of the slots (once per token), so fractions above that are capped and the
// excess goes to the others in proportion to their fractions (water-filling). Sums to top_k,
// each entry in [0, 1]. kInvalidArgument unless 1 <= top_k <= fractions.size().
absl::StatusOr<std::vector<double>> SelectionProbabilities(const std::vector<double>& fractions,
                                                           int32_t top_k);

// Replaces the router's selection by draws from a distribution; keeps its weighting.
//
// Semantics: token t selects top_k DISTINCT experts by systematic sampling (Madow): experts in
// a per-token random order, cumulative selection probabilities p_e (SelectionProbabilities),
// one uniform offset u; the experts whose cumulative interval holds u, u + 1, ..., u + k - 1
// are selected, so expert e is selected with probability exactly p_e. Then, as the router
// family says, from the token's logits [num_experts]: ids are sorted best first (by score,
// or by logit for TOPK_THEN_SCORE; ties to the lower id), weights = scores[ids] (softmax or
// sigmoid of the logits over all experts), or the softmax of the k selected logits for
// TOPK_THEN_SCORE; then / their sum if renormalize; then * routed_scaling_factor. Group limits
// and the selection bias do not apply (the skew replaces selection).
// Determinism: token t's draws depend only on (seed, first_token + t), not on thread count,
// batch split or platform.
class SkewedSelection {
 public:
  // kInvalidArgument naming the spec (see SkewFractions, SelectionProbabilities).
  static absl::StatusOr<SkewedSelection> Create(const SkewSpec& spec, int32_t num_experts,
                                                int32_t top_k, uint64_t seed);

  // [num_experts] the spec's target fractions, and the selection probabilities that realize
  // them (/ top_k = the expected fraction of slots).
  const std::vector<double>& fractions() const { return fractions_; }
  const std::vector<double>& probabilities() const { return probabilities_; }

  // logits [num_tokens, num_experts] (e.g. RouterOutputs.logits after gating::Route); writes
  // topk_ids and topk_weights [num_tokens, top_k]. `first_token` is the global index of row 0
  // (e.g. step * tokens_per_step + rank offset) so that every token draws differently.
  // kInvalidArgument when config's num_experts / top_k differ from Create's, or a logit row
  // holds NaN/Inf (naming the token). OpenMP over tokens.
  absl::Status Resample(const config::LayerConfig& config, const float* logits, int64_t num_tokens,
                        uint64_t first_token, int32_t* topk_ids, float* topk_weights) const;

 private:
  SkewedSelection(std::vector<double> fractions, std::vector<double> probabilities, int32_t top_k,
                  uint64_t seed)
      : fractions_(std::move(fractions)),
        probabilities_(std::move(probabilities)),
        top_k_(top_k),
        seed_(seed) {}

  std::vector<double> fractions_;
  std::vector<double> probabilities_;
  int32_t top_k_;
  uint64_t seed_;
};

// A seeded permutation of 0 .. n - 1 (Fisher-Yates on SplitMix64; platform-independent).
std::vector<int32_t> SeededPermutation(int32_t n, uint64_t seed);

}  // namespace moe::gating
