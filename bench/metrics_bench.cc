// metrics_bench: the cost of Cortex's Prometheus metrics (src/common/metrics.h).
//
//  1. Scrape time with 10,000 series (8,000 counter series, 1,500 gauge series, 500 histogram
//     series of 14 buckets), against the floor: the very same text written with snprintf from a
//     flat array (no maps, no locks, no escaping).
//  2. One counter increment with two labels from 1 and 2 threads, against a bare relaxed atomic
//     increment (the least any counter costs).
// Figures only; nothing is asserted. Usage: metrics_bench [--scrapes N]
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "common/metrics.h"

namespace {

using cortex::bench::Percentile;
using Clock = std::chrono::steady_clock;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

void Usage() { std::fprintf(stderr, "usage: metrics_bench [--scrapes N]\n"); }

struct Flat {
  std::string name, labels;
  double value;
};

}  // namespace

int main(int argc, char** argv) {
  int scrapes = 50;
  cortex::bench::Flags flags(argc, argv, Usage);
  for (std::string a; flags.Next(&a);) {
    if (a == "--scrapes") {
      scrapes = std::max(1, std::atoi(flags.Value()));
    } else {
      Usage();
      return 2;
    }
  }

  std::printf("== 1. /metrics scrape with 10,000 series ==\n");
  cortex::metrics::Registry reg(20000);
  auto& calls = reg.NewCounter("cortex_tool_calls_total", "Calls.", {"tool", "status"});
  auto& depth = reg.NewGauge("cortex_relic_up", "Up.", {"relic", "state"});
  auto& time = reg.NewHistogram("cortex_tool_call_duration_seconds", "Time.", {"tool"});
  std::vector<Flat> flat;  // the baseline's data: the same lines, precomputed
  const char* statuses[] = {"succeeded", "failed", "timeout", "cancelled"};
  for (int i = 0; i < 2000; ++i) {
    for (const char* st : statuses) {
      std::string tool = "tool_" + std::to_string(i);
      calls.Inc({tool, st}, i);
      flat.push_back(
          {"cortex_tool_calls_total", "{tool=\"" + tool + "\",status=\"" + st + "\"}", double(i)});
    }
  }
  for (int i = 0; i < 1500; ++i) {
    std::string relic = "relic_" + std::to_string(i);
    depth.Set({relic, "running"}, 1);
    flat.push_back({"cortex_relic_up", "{relic=\"" + relic + "\",state=\"running\"}", 1});
  }
  const auto& buckets = cortex::metrics::LatencyBuckets();
  for (int i = 0; i < 500; ++i) {
    std::string tool = "tool_" + std::to_string(i);
    for (int k = 0; k < 20; ++k) time.Observe({tool}, 0.001 * k);
    for (size_t b = 0; b <= buckets.size(); ++b) {
      char le[32];
      if (b < buckets.size()) {
        std::snprintf(le, sizeof le, "%g", buckets[b]);
      } else {
        std::strcpy(le, "+Inf");
      }
      flat.push_back({"cortex_tool_call_duration_seconds_bucket",
                      "{tool=\"" + tool + "\",le=\"" + le + "\"}", 20});
    }
    flat.push_back({"cortex_tool_call_duration_seconds_sum", "{tool=\"" + tool + "\"}", 0.19});
    flat.push_back({"cortex_tool_call_duration_seconds_count", "{tool=\"" + tool + "\"}", 20});
  }
  std::vector<double> ours, floor;
  size_t bytes = 0, floor_bytes = 0;
  for (int s = 0; s < scrapes; ++s) {
    auto t0 = Clock::now();
    std::string text = reg.Render();
    ours.push_back(Ms(Clock::now() - t0));
    bytes = text.size();
    t0 = Clock::now();
    std::string base;
    base.reserve(1 << 16);
    char line[256];
    for (const Flat& f : flat) {
      int n = std::snprintf(line, sizeof line, "%s%s %.9g\n", f.name.c_str(), f.labels.c_str(),
                            f.value);
      base.append(line, static_cast<size_t>(n));
    }
    floor.push_back(Ms(Clock::now() - t0));
    floor_bytes = base.size();
  }
  double p50 = Percentile(ours, 50), b50 = Percentile(floor, 50);
  std::printf("series: 10000 (%zu sample lines), %d scrapes\n", flat.size(), scrapes);
  std::printf("Registry::Render  p50 %.2f ms  p90 %.2f ms  (%zu bytes)\n", p50,
              Percentile(ours, 90), bytes);
  std::printf("snprintf floor    p50 %.2f ms  p90 %.2f ms  (%zu bytes)\n", b50,
              Percentile(floor, 90), floor_bytes);
  std::printf("ratio: %.2fx the floor\n", b50 > 0 ? p50 / b50 : 0);

  std::printf("\n== 2. one counter increment (two labels) ==\n");
  for (int threads : {1, 2}) {
    const int n = 2000000 / threads;
    auto run = [&](auto&& body) {
      std::vector<std::thread> ts;
      auto t0 = Clock::now();
      for (int t = 0; t < threads; ++t) ts.emplace_back([&] { body(n); });
      for (auto& t : ts) t.join();
      return Ms(Clock::now() - t0) * 1e6 / (double(n) * threads);
    };
    double inc = run([&](int k) {
      for (int i = 0; i < k; ++i) calls.Inc({"tool_7", "succeeded"});
    });
    std::atomic<uint64_t> bare{0};
    double atom = run([&](int k) {
      for (int i = 0; i < k; ++i) bare.fetch_add(1, std::memory_order_relaxed);
    });
    std::printf("%d thread(s): Counter::Inc %.0f ns, bare atomic %.1f ns (per increment)\n",
                threads, inc, atom);
  }
  return 0;
}
