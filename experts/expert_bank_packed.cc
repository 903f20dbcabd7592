// ExpertBank: the packed experts and their workspace pool.
#include <omp.h>

#include "experts/expert_bank.h"
#include "experts/packed_experts.h"
#include "moe/base/object_pool.h"

namespace moe::experts {

// The bank's workspaces.
struct WorkspacePool : ObjectPool<ExpertWorkspace> {};

ExpertBank ExpertBank::Create(const ExpertWeights& w, config::Activation activation,
                              const ExpertKernelOptions& options) {
  ExpertBank bank;
  bank.options_ = options;
  bank.activation_ = activation;
  if (!options.plain) {
    bank.packed_ =
        std::make_shared<const PackedExperts>(PackExperts(w, activation, options.weight_format));
  }
  bank.pool_ = std::make_shared<WorkspacePool>();
  return bank;
}

absl::Status ExpertBank::Run(const ExpertWeights& plain, const ExpertBatch& batch) const {
  if (packed_ == nullptr) {
    if (batch.rows == nullptr) {
      return absl::InvalidArgumentError("the plain expert bank needs the batch's rows");
    }
    return RunExperts(plain, activation_, batch);
  }
  std::unique_ptr<ExpertWorkspace> ws = pool_->Take();
  const absl::Status status = RunPackedExperts(*packed_, batch, ws.get());
  pool_->Give(std::move(ws));
  return status;
}

void ExpertBank::Reserve(int64_t max_rows) const {
  if (packed_ == nullptr) return;
  std::unique_ptr<ExpertWorkspace> ws = pool_->Take();
  ws->Reserve(*packed_, max_rows, omp_get_max_threads());
  pool_->Give(std::move(ws));
}

int64_t ExpertBank::ExpertBytes() const { return packed_ == nullptr ? 0 : packed_->ExpertBytes(); }

ExpertWeights ExpertBank::EffectiveWeights() const {
  return packed_ == nullptr ? ExpertWeights{} : UnpackExperts(*packed_);
}

}  // namespace moe::experts
