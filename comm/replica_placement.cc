#include "comm/replica_placement.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "configs/placement.pb.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "moe/base/status_macros.h"

namespace moe::comm {
namespace {

constexpr int64_t kMaxPlacementFileBytes = int64_t{256} << 20;
constexpr int32_t kMaxRanks = 1 << 20;
constexpr int32_t kMaxExperts = 1 << 20;

class FirstErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (error_.empty()) {
      error_ = absl::StrFormat("line %d column %d: %s", line + 1, column + 1, message);
    }
  }
  void AddWarning(int line, int column, const std::string& message) override {}
  const std::string& error() const { return error_; }

 private:
  std::string error_;
};

}  // namespace

int64_t ReplicatedPlacement::num_slots() const {
  int64_t slots = 0;
  for (const auto& r : replicas) slots += static_cast<int64_t>(r.size());
  return slots;
}

absl::Status FillRankExperts(ReplicatedPlacement* p) {
  p->rank_experts.assign(static_cast<size_t>(std::max(p->num_ranks, 0)), {});
  for (size_t e = 0; e < p->replicas.size(); ++e) {
    auto& list = p->replicas[e];
    std::sort(list.begin(), list.end(),
              [](const ExpertReplica& a, const ExpertReplica& b) { return a.rank < b.rank; });
    for (size_t i = 0; i < list.size(); ++i) {
      if (list[i].rank < 0 || list[i].rank >= p->num_ranks) {
        return absl::InvalidArgumentError(absl::StrCat("expert ", e, " replica ", i, ": rank ",
                                                       list[i].rank, " outside [0, ", p->num_ranks,
                                                       ")"));
      }
      p->rank_experts[static_cast<size_t>(list[i].rank)].push_back(
          {static_cast<int32_t>(e), list[i].share});
    }
  }
  return absl::OkStatus();
}

ReplicatedPlacement ContiguousReplicatedPlacement(int32_t num_experts, int32_t num_ranks) {
  MOE_CHECK(num_experts >= 1 && num_ranks >= 1);
  ReplicatedPlacement p;
  p.num_experts = num_experts;
  p.num_ranks = num_ranks;
  p.replicas.resize(static_cast<size_t>(num_experts));
  const int32_t base = num_experts / num_ranks;
  const int32_t extra = num_experts % num_ranks;
  int32_t e = 0;
  for (int32_t r = 0; r < num_ranks; ++r) {
    for (int32_t i = 0; i < base + (r < extra ? 1 : 0); ++i) {
      p.replicas[static_cast<size_t>(e++)].push_back({r, 1.0});
    }
  }
  MOE_CHECK(FillRankExperts(&p).ok());
  return p;
}

absl::Status ValidateReplicaStructure(const ReplicatedPlacement& p, int32_t num_experts,
                                      int32_t num_ranks) {
  auto error = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("replicated placement: ", parts...));
  };
  if (num_experts < 1 || num_ranks < 1) {
    return error("num_experts and num_ranks must be >= 1, got ", num_experts, " and ", num_ranks);
  }
  if (p.num_experts != num_experts || p.num_ranks != num_ranks) {
    return error("made for ", p.num_experts, " experts on ", p.num_ranks, " ranks, expected ",
                 num_experts, " experts on ", num_ranks, " ranks");
  }
  if (p.replicas.size() != static_cast<size_t>(num_experts) ||
      p.rank_experts.size() != static_cast<size_t>(num_ranks)) {
    return error("replicas has ", p.replicas.size(), " experts and rank_experts ",
                 p.rank_experts.size(), " ranks, expected ", num_experts, " and ", num_ranks);
  }
  ReplicatedPlacement by_rank = p;
  for (int32_t e = 0; e < num_experts; ++e) {
    const auto& list = p.replicas[static_cast<size_t>(e)];
    if (list.empty()) return error("expert ", e, " has no replica");
    double sum = 0;
    for (size_t i = 0; i < list.size(); ++i) {
      const ExpertReplica& r = list[i];
      if (r.rank < 0 || r.rank >= num_ranks) {
        return error("expert ", e, " replica ", i, ": rank ", r.rank, " outside [0, ", num_ranks,
                     ")");
      }
      if (i > 0 && r.rank <= list[i - 1].rank) {
        return error(
            "expert ", e, " replica ", i, ": rank ", r.rank,
            r.rank == list[i - 1].rank ? " holds the expert twice" : " is not in ascending order");
      }
      if (!std::isfinite(r.share) || r.share < 0 || r.share > 1) {
        return error("expert ", e, " replica ", i, ": share ", r.share, " outside [0, 1]");
      }
      sum += r.share;
    }
    if (std::abs(sum - 1) > 1e-9) {
      return error("expert ", e, ": shares sum to ", absl::StrFormat("%.12g", sum),
                   ", expected 1 (within 1e-9)");
    }
  }
  MOE_RETURN_IF_ERROR(FillRankExperts(&by_rank));
  for (int32_t r = 0; r < num_ranks; ++r) {
    const auto& want = by_rank.rank_experts[static_cast<size_t>(r)];
    const auto& have = p.rank_experts[static_cast<size_t>(r)];
    bool same = want.size() == have.size();
    for (size_t i = 0; same && i < want.size(); ++i) {
      same = want[i].expert == have[i].expert && want[i].share == have[i].share;
    }
    if (!same) return error("rank_experts of rank ", r, " does not match replicas");
  }
  return absl::OkStatus();
}

absl::Status ValidateReplicatedPlacement(const ReplicatedPlacement& p, int32_t num_experts,
                                         int32_t num_ranks) {
  MOE_RETURN_IF_ERROR(ValidateReplicaStructure(p, num_experts, num_ranks));
  auto error = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("replicated placement: ", parts...));
  };
  const int64_t slots = p.num_slots();
  const int64_t low = slots / num_ranks;
  const int64_t high = low + (slots % num_ranks != 0 ? 1 : 0);
  for (int32_t r = 0; r < num_ranks; ++r) {
    const int64_t n = static_cast<int64_t>(p.rank_experts[static_cast<size_t>(r)].size());
    if (n < low || n > high) {
      return error("rank ", r, " holds ", n, " replicas, expected ",
                   low == high ? absl::StrCat(low) : absl::StrCat(low, " or ", high), " (", slots,
                   " replicas over ", num_ranks, " ranks)");
    }
  }
  return absl::OkStatus();
}

ReplicatedPlacement ReplicatedFromPlacement(const Placement& placement) {
  ReplicatedPlacement p;
  p.num_experts = placement.num_experts;
  p.num_ranks = placement.num_ranks;
  p.replicas.resize(static_cast<size_t>(placement.num_experts));
  for (size_t e = 0; e < placement.rank_of_expert.size() && e < p.replicas.size(); ++e) {
    p.replicas[e].push_back({placement.rank_of_expert[e], 1.0});
  }
  // A rank out of range is left for ValidateReplicaStructure to name.
  p.rank_experts.assign(static_cast<size_t>(std::max(p.num_ranks, 0)), {});
  for (size_t e = 0; e < p.replicas.size(); ++e) {
    for (const ExpertReplica& r : p.replicas[e]) {
      if (r.rank >= 0 && r.rank < p.num_ranks) {
        p.rank_experts[static_cast<size_t>(r.rank)].push_back({static_cast<int32_t>(e), r.share});
      }
    }
  }
  return p;
}

std::vector<int32_t> HeldExperts(const ReplicatedPlacement& placement, int rank) {
  std::vector<int32_t> ids;
  for (const RankExpert& x : placement.rank_experts[static_cast<size_t>(rank)]) {
    ids.push_back(x.expert);
  }
  return ids;
}

std::vector<double> PredictedRankLoads(const ReplicatedPlacement& p,
                                       const std::vector<double>& expert_loads) {
  MOE_CHECK(expert_loads.size() == p.replicas.size());
  std::vector<double> loads(static_cast<size_t>(p.num_ranks), 0.0);
  for (size_t e = 0; e < p.replicas.size(); ++e) {
    for (const ExpertReplica& r : p.replicas[e]) {
      loads[static_cast<size_t>(r.rank)] += r.share * expert_loads[e];
    }
  }
  return loads;
}

std::vector<uint64_t> CumulativeShareUnits(const std::vector<ExpertReplica>& replicas) {
  std::vector<uint64_t> units(replicas.size() + 1, 0);
  double cumulative = 0;
  for (size_t i = 0; i + 1 < replicas.size(); ++i) {
    cumulative += replicas[i].share;
    const double scaled = std::nearbyint(cumulative * static_cast<double>(kShareUnit));
    const uint64_t u = scaled <= 0                                 ? 0
                       : scaled >= static_cast<double>(kShareUnit) ? kShareUnit
                                                                   : static_cast<uint64_t>(scaled);
    units[i + 1] = std::max(units[i], u);
  }
  units.back() = kShareUnit;
  return units;
}

int64_t ReplicaRowBegin(int64_t count, uint64_t units) {
  const unsigned __int128 product =
      static_cast<unsigned __int128>(static_cast<uint64_t>(count)) * units + (kShareUnit / 2);
  return static_cast<int64_t>(product >> 32);
}

std::vector<int64_t> ReplicaRowRanges(int64_t count, const std::vector<uint64_t>& units) {
  std::vector<int64_t> begin(units.size());
  for (size_t i = 0; i < units.size(); ++i) begin[i] = ReplicaRowBegin(count, units[i]);
  return begin;
}

int32_t ReplicaOfRow(int64_t row, int64_t count, const std::vector<uint64_t>& units) {
  // The last replica i with B(i) <= row (empty ranges are skipped by taking the last).
  size_t lo = 0;
  size_t hi = units.size() - 1;  // B(hi) = count > row
  while (hi - lo > 1) {
    const size_t mid = (lo + hi) / 2;
    if (ReplicaRowBegin(count, units[mid]) <= row) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return static_cast<int32_t>(lo);
}

absl::Status WritePlacementFile(const std::string& path, const ReplicatedPlacement& p,
                                const std::vector<double>& expert_loads,
                                absl::string_view comment) {
  config::ExpertPlacement proto;
  proto.set_num_experts(p.num_experts);
  proto.set_num_ranks(p.num_ranks);
  std::string text =
      "# moe replicated expert placement (configs/placement.proto, ExpertPlacement)\n";
  for (absl::string_view line : absl::StrSplit(comment, '\n', absl::SkipEmpty())) {
    absl::StrAppend(&text, "# ", line, "\n");
  }
  absl::StrAppend(&text, "num_experts: ", p.num_experts, "\nnum_ranks: ", p.num_ranks, "\n");
  google::protobuf::TextFormat::Printer printer;
  printer.SetSingleLineMode(true);
  for (size_t e = 0; e < p.replicas.size(); ++e) {
    config::ExpertReplicas entry;
    entry.set_expert(static_cast<int32_t>(e));
    for (const ExpertReplica& r : p.replicas[e]) {
      config::Replica* replica = entry.add_replicas();
      replica->set_rank(r.rank);
      replica->set_share(r.share);
    }
    if (expert_loads.size() == p.replicas.size()) entry.set_load(expert_loads[e]);
    std::string line;
    printer.PrintToString(entry, &line);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&text, "experts { ", line, " }\n");
  }
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) return absl::NotFoundError(absl::StrCat(path, ": cannot open for writing"));
  file << text;
  file.flush();
  if (!file) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::StatusOr<ReplicatedPlacement> ParsePlacementText(absl::string_view text,
                                                       absl::string_view source) {
  if (static_cast<int64_t>(text.size()) > kMaxPlacementFileBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": ", text.size(), " bytes, more than the limit of ", kMaxPlacementFileBytes));
  }
  google::protobuf::TextFormat::Parser parser;
  FirstErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  config::ExpertPlacement proto;
  if (!parser.ParseFromString(std::string(text), &proto)) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", errors.error().empty() ? "cannot parse" : errors.error()));
  }
  auto error = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", parts...));
  };
  if (proto.num_experts() < 1 || proto.num_experts() > kMaxExperts) {
    return error("num_experts: expected 1 to ", kMaxExperts, ", got ", proto.num_experts());
  }
  if (proto.num_ranks() < 1 || proto.num_ranks() > kMaxRanks) {
    return error("num_ranks: expected 1 to ", kMaxRanks, ", got ", proto.num_ranks());
  }
  ReplicatedPlacement p;
  p.num_experts = proto.num_experts();
  p.num_ranks = proto.num_ranks();
  p.replicas.resize(static_cast<size_t>(p.num_experts));
  std::vector<int> entry_of(static_cast<size_t>(p.num_experts), -1);
  for (int i = 0; i < proto.experts_size(); ++i) {
    const config::ExpertReplicas& entry = proto.experts(i);
    if (!entry.has_expert()) return error("experts[", i, "].expert: missing");
    const int32_t e = entry.expert();
    if (e < 0 || e >= p.num_experts) {
      return error("experts[", i, "].expert: ", e, " outside [0, ", p.num_experts,
                   ") (num_experts)");
    }
    if (entry_of[static_cast<size_t>(e)] >= 0) {
      return error("experts[", i, "].expert: expert ", e, " already given by experts[",
                   entry_of[static_cast<size_t>(e)], "]");
    }
    entry_of[static_cast<size_t>(e)] = i;
    const std::string where = absl::StrCat("experts[", i, "] (expert ", e, "): ");
    if (entry.replicas_size() == 0) return error(where, "replicas: at least one expected");
    double sum = 0;
    for (int j = 0; j < entry.replicas_size(); ++j) {
      const config::Replica& r = entry.replicas(j);
      if (!r.has_rank() || !r.has_share()) {
        return error(where, "replicas[", j, "].", r.has_rank() ? "share" : "rank", ": missing");
      }
      if (r.rank() < 0 || r.rank() >= p.num_ranks) {
        return error(where, "replicas[", j, "].rank: ", r.rank(), " outside [0, ", p.num_ranks,
                     ") (num_ranks)");
      }
      if (j > 0 && r.rank() <= entry.replicas(j - 1).rank()) {
        return error(where, "replicas[", j, "].rank: ", r.rank(),
                     r.rank() == entry.replicas(j - 1).rank()
                         ? " appears twice (one replica per rank)"
                         : " not ascending (replicas are listed by ascending rank)");
      }
      if (!std::isfinite(r.share()) || r.share() < 0 || r.share() > 1) {
        return error(where, "replicas[", j, "].share: ", r.share(), " outside [0, 1]");
      }
      sum += r.share();
      p.replicas[static_cast<size_t>(e)].push_back({r.rank(), r.share()});
    }
    if (std::abs(sum - 1) > 1e-9) {
      return error(where, "replicas: shares sum to ", absl::StrFormat("%.12g", sum),
                   ", expected 1 (within 1e-9)");
    }
  }
  for (int32_t e = 0; e < p.num_experts; ++e) {
    if (entry_of[static_cast<size_t>(e)] < 0) {
      return error("experts: expert ", e, " is missing (every expert exactly once)");
    }
  }
  MOE_RETURN_IF_ERROR(FillRankExperts(&p));
  absl::Status valid = ValidateReplicatedPlacement(p, p.num_experts, p.num_ranks);
  if (!valid.ok()) return error(valid.message());
  return p;
}

absl::StatusOr<ReplicatedPlacement> ReadPlacementFile(const std::string& path) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, not a placement"));
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat(path, ": cannot open the placement file"));
  std::string text;
  char chunk[1 << 16];
  while (file && static_cast<int64_t>(text.size()) <= kMaxPlacementFileBytes) {
    file.read(chunk, sizeof(chunk));
    text.append(chunk, static_cast<size_t>(file.gcount()));
  }
  if (file.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return ParsePlacementText(text, path);
}

}  // namespace moe::comm
