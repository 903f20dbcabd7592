// moe/base/trace: off by default and silent then; scopes nest per thread; OpenMP threads get
// their own tracks; the JSON is well formed.
#include "moe/base/trace.h"

#include <omp.h>

#include <map>
#include <set>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace moe::trace {
namespace {

const Event* Find(const std::vector<Event>& events, const std::string& name) {
  for (const Event& e : events) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

bool Contains(const Event& outer, const Event& inner) {
  return outer.tid == inner.tid && outer.begin_ns <= inner.begin_ns &&
         inner.begin_ns + inner.duration_ns <= outer.begin_ns + outer.duration_ns;
}

TEST(TraceTest, OffByDefaultRecordsNothingAndBuildsNoNames) {
  EXPECT_FALSE(Enabled());
  Clear();
  bool named = false;
  {
    TraceScope scope("off", "test");
    TraceScope dynamic(
        [&] {
          named = true;
          return std::string("never");
        },
        "test");
    dynamic.Arg("rows", 3);
  }
  EXPECT_FALSE(named);
  EXPECT_TRUE(Collect().empty());
}

TEST(TraceTest, ScopesNestOnTheCallingThreadWithArgs) {
  Enable();
  {
    TraceScope outer("outer", "test");
    outer.Arg("tokens", 7);
    for (int i = 0; i < 2; ++i) {
      TraceScope inner([&] { return "inner " + std::to_string(i); }, "test");
      inner.Arg("rows", i + 1);
    }
  }
  Disable();
  { TraceScope after("after disable", "test"); }
  const std::vector<Event> events = Collect();
  ASSERT_EQ(events.size(), 3u);
  const Event* outer = Find(events, "outer");
  const Event* inner0 = Find(events, "inner 0");
  const Event* inner1 = Find(events, "inner 1");
  ASSERT_TRUE(outer && inner0 && inner1);
  EXPECT_TRUE(Contains(*outer, *inner0));
  EXPECT_TRUE(Contains(*outer, *inner1));
  EXPECT_LE(inner0->begin_ns + inner0->duration_ns, inner1->begin_ns);
  ASSERT_EQ(outer->num_args, 1);
  EXPECT_STREQ(outer->arg_names[0], "tokens");
  EXPECT_EQ(outer->arg_values[0], 7);
  EXPECT_EQ(inner1->arg_values[0], 2);
  EXPECT_STREQ(outer->category, "test");
}

TEST(TraceTest, EnableDropsEarlierEvents) {
  Enable();
  { TraceScope scope("first", "test"); }
  Enable();
  { TraceScope scope("second", "test"); }
  Disable();
  const std::vector<Event> events = Collect();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].name, "second");
}

TEST(TraceTest, OpenMpThreadsGetTheirOwnNestedTracksInTheJson) {
  Enable();
  {
    TraceScope region("region", "test");
#pragma omp parallel num_threads(3)
    {
#pragma omp for schedule(static, 1)
      for (int i = 0; i < 12; ++i) {
        TraceScope item([&] { return "item " + std::to_string(i); }, "test \"quoted\"");
        TraceScope gemm("gemm", "test");
        gemm.Arg("rows", i);
      }
    }
  }
  Disable();
  const nlohmann::json json = nlohmann::json::parse(ToJson(), nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << ToJson();
  std::map<int, std::vector<const nlohmann::json*>> tracks;
  std::set<int> named;
  for (const nlohmann::json& e : json["traceEvents"]) {
    if (e["ph"] == "M") {
      if (e["name"] == "thread_name") named.insert(e["tid"].get<int>());
      continue;
    }
    ASSERT_EQ(e["ph"], "X");
    EXPECT_EQ(e["pid"], 0);
    tracks[e["tid"].get<int>()].push_back(&e);
  }
  // With schedule(static, 1) over 3 threads, thread t runs items t, t + 3, ...: its track
  // holds 4 items, each with its gemm inside; the region is on the main thread's track 0.
  {
    EXPECT_EQ(tracks.size(), named.size());
    int items = 0;
    for (const auto& [tid, events] : tracks) {
      for (const nlohmann::json* e : events) {
        const std::string name = (*e)["name"];
        if (name.rfind("item ", 0) != 0) continue;
        ++items;
        EXPECT_EQ((*e)["cat"], "test \"quoted\"");
        const int i = std::stoi(name.substr(5));
        bool has_gemm = false;
        for (const nlohmann::json* g : events) {
          if ((*g)["name"] != "gemm" || (*g)["args"]["rows"] != i) continue;
          has_gemm = true;
          EXPECT_GE((*g)["ts"].get<double>() + 1e-3, (*e)["ts"].get<double>());
          EXPECT_LE((*g)["ts"].get<double>() + (*g)["dur"].get<double>(),
                    (*e)["ts"].get<double>() + (*e)["dur"].get<double>() + 1e-3);
        }
        EXPECT_TRUE(has_gemm) << name;
      }
    }
    EXPECT_EQ(items, 12);
    ASSERT_EQ(tracks.count(0), 1u);
    EXPECT_EQ((*tracks[0].front())["name"], "region") << "sorted by begin, the region first";
  }
}

}  // namespace
}  // namespace moe::trace
