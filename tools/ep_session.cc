#include "tools/ep_session.h"

#include "absl/strings/str_cat.h"
#include "moe/base/status_macros.h"

namespace moe::tools {

absl::StatusOr<std::unique_ptr<EpSession>> StartEpSession(int ep, double timeout_seconds,
                                                          absl::string_view command, bool* quiet) {
  *quiet = false;
  const std::string hint =
      absl::StrCat("--ep ", ep, " needs ", ep, " MPI ranks: mpirun --oversubscribe -np ", ep,
                   " moe ", command, " --ep ", ep, " ...");
  if (!comm::LaunchedUnderMpi()) {
    return absl::InvalidArgumentError(absl::StrCat(hint, " (not started by mpirun)"));
  }
  auto ep_session = std::make_unique<EpSession>();
  MOE_ASSIGN_OR_RETURN(ep_session->session, comm::MpiSession::Init(nullptr, nullptr));
  if (ep_session->session->world_size() != ep) {
    *quiet = ep_session->session->world_rank() != 0;
    return absl::InvalidArgumentError(
        absl::StrCat(hint, " (started with ", ep_session->session->world_size(), ")"));
  }
  MOE_ASSIGN_OR_RETURN(ep_session->comm,
                       comm::MpiCommunicator::Create(MPI_COMM_WORLD, {timeout_seconds}));
  return ep_session;
}

absl::StatusOr<comm::ReplicatedPlacement> EpPlacement(const std::string& file, int32_t num_experts,
                                                      int32_t num_ranks) {
  if (file.empty()) return comm::ContiguousReplicatedPlacement(num_experts, num_ranks);
  MOE_ASSIGN_OR_RETURN(comm::ReplicatedPlacement p, comm::ReadPlacementFile(file));
  if (p.num_experts != num_experts || p.num_ranks != num_ranks) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--placement ", file, ": is for ", p.num_experts, " experts over ", p.num_ranks,
        " ranks, expected ", num_experts, " experts over ", num_ranks, " ranks"));
  }
  return p;
}

int64_t TokenBlockBegin(int64_t num_tokens, int num_ranks, int rank) {
  const int64_t base = num_tokens / num_ranks;
  const int64_t extra = num_tokens % num_ranks;
  return base * rank + std::min<int64_t>(rank, extra);
}

absl::StatusOr<std::vector<double>> GatherDoubles(comm::Communicator* comm, double value) {
  std::vector<double> all(static_cast<size_t>(comm->size()));
  MOE_RETURN_IF_ERROR(comm->AllGather(&value, sizeof(double), all.data()));
  return all;
}

absl::StatusOr<std::vector<int64_t>> GatherInts(comm::Communicator* comm, int64_t value) {
  std::vector<int64_t> all(static_cast<size_t>(comm->size()));
  MOE_RETURN_IF_ERROR(comm->AllGather(&value, sizeof(int64_t), all.data()));
  return all;
}

}  // namespace moe::tools
