// A rank that stalls or dies before the dispatch or before the combine (mpirun -np 3, the
// victim is rank 1, timeouts 3 s). The survivors print "error: rank R: no data from rank 1
// within 3 s (...)" and exit 1 (tests.cmake checks the output). Usage:
//   ep_fault {stall|kill}_before_{dispatch|combine}
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "comm/dispatcher.h"
#include "comm/mpi_communicator.h"
#include "comm/placement.h"
#include "moe/ep_weights.h"
#include "moe/expert_parallel_layer.h"
#include "tests/support/test_inputs.h"

namespace moe {
namespace {

constexpr int kVictim = 1;

[[noreturn]] void Die(const absl::Status& s) {
  std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
  std::fflush(stderr);
  std::exit(1);  // no MPI_Finalize: it would wait for the stalled rank
}

void Fault(const std::string& mode, int rank) {
  if (rank != kVictim) return;
  std::fprintf(stderr, "rank %d: %s\n", rank, mode.c_str());
  std::fflush(stderr);
  if (mode.rfind("kill", 0) == 0) raise(SIGKILL);
  std::this_thread::sleep_for(std::chrono::seconds(60));
}

int Run(const std::string& mode) {
  absl::StatusOr<std::unique_ptr<comm::MpiCommunicator>> comm =
      comm::MpiCommunicator::Create(MPI_COMM_WORLD, {.timeout_seconds = 3});
  if (!comm.ok()) Die(comm.status());
  const int me = (*comm)->rank();
  const config::LayerConfig c = testing::FamilyConfig("mixtral", 6, 2);
  const comm::Placement placement = *comm::ContiguousPlacement(6, (*comm)->size());
  absl::StatusOr<ExpertParallelLayer> ep = ExpertParallelLayer::Create(
      c, RandomLocalLayerWeights(c, 1, placement, me), placement, comm->get());
  if (!ep.ok()) Die(ep.status());
  const Tensor hidden = testing::RandomHidden(9, c.d_model(), 2);
  absl::StatusOr<LayerOutput> out = ep->Forward(hidden);  // a healthy forward first
  if (!out.ok()) Die(out.status());

  if (mode.find("before_dispatch") != std::string::npos) {
    Fault(mode, me);
    out = ep->Forward(hidden);
    if (!out.ok()) Die(out.status());
  } else {
    absl::StatusOr<comm::Dispatcher> dispatcher =
        comm::Dispatcher::Create(comm->get(), placement, c.d_model(), c.top_k());
    if (!dispatcher.ok()) Die(dispatcher.status());
    comm::DispatchLayout layout;
    absl::StatusOr<comm::ExpertRows> rows = dispatcher->Dispatch(
        {hidden.data<float>(), out->topk_ids.data<int32_t>(), nullptr, hidden.dim(0)}, &layout);
    if (!rows.ok()) Die(rows.status());
    Fault(mode, me);
    absl::StatusOr<Tensor> back = dispatcher->Combine(rows->rows.data<float>(), &layout);
    if (!back.ok()) Die(back.status());
  }
  std::fprintf(stderr, "rank %d: no error\n", me);
  return 0;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  absl::StatusOr<std::unique_ptr<moe::comm::MpiSession>> session =
      moe::comm::MpiSession::Init(&argc, &argv);
  if (!session.ok() || argc != 2) {
    std::fprintf(stderr, "usage: ep_fault {stall|kill}_before_{dispatch|combine}\n");
    return 2;
  }
  const int rc = moe::Run(argv[1]);
  session->reset();
  return rc;
}
