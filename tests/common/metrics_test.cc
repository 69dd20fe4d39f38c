// The metrics registry: the text format (counters, gauges, histograms with cumulative buckets),
// label values escaped whatever their bytes, the bound on series per family, collectors that
// run at each scrape and are gone once their handle is, and increments from many threads.
#include "common/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace cortex::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(Metrics, CountersGaugesAndHistogramsInTheTextFormat) {
  Registry r;
  auto& calls = r.NewCounter("t_calls_total", "Calls.", {"tool", "status"});
  auto& depth = r.NewGauge("t_depth", "Depth.", {});
  auto& time = r.NewHistogram("t_seconds", "Time.", {"tool"}, {0.1, 1});
  calls.Inc({"calc", "ok"});
  calls.Inc({"calc", "ok"}, 2);
  calls.Inc({"calc", "ok"}, -5);  // ignored: counters only go up
  calls.Inc({"echo", "failed"});
  depth.Set({}, 3);
  depth.Add({}, 1.5);
  time.Observe({"calc"}, 0.05);
  time.Observe({"calc"}, 0.1);  // on a bound: counted in that bucket (le)
  time.Observe({"calc"}, 7);
  std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("# HELP t_calls_total Calls.\n# TYPE t_calls_total counter\n"));
  EXPECT_THAT(text, HasSubstr("t_calls_total{tool=\"calc\",status=\"ok\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("t_calls_total{tool=\"echo\",status=\"failed\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE t_depth gauge\nt_depth 4.5\n"));
  EXPECT_THAT(text, HasSubstr("t_seconds_bucket{tool=\"calc\",le=\"0.1\"} 2\n"
                              "t_seconds_bucket{tool=\"calc\",le=\"1\"} 2\n"
                              "t_seconds_bucket{tool=\"calc\",le=\"+Inf\"} 3\n"
                              "t_seconds_sum{tool=\"calc\"} 7.15\n"
                              "t_seconds_count{tool=\"calc\"} 3\n"));
}

TEST(Metrics, LabelValuesAreEscapedWhateverTheirBytes) {
  Registry r;
  auto& c = r.NewCounter("t_total", "With\nnewline in help.", {"v"});
  c.Inc({"a\"b\\c\nd"});
  c.Inc({"\xff\xfe"});
  std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("# HELP t_total With newline in help.\n"));
  EXPECT_THAT(text, HasSubstr("t_total{v=\"a\\\"b\\\\c\\nd\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("t_total{v=\"\xEF\xBF\xBD\xEF\xBF\xBD\"} 1\n"));
}

TEST(Metrics, AFullFamilyCountsNewSeriesAsOverflow) {
  Registry r(3);
  auto& c = r.NewCounter("t_total", "T.", {"name"});
  for (int i = 0; i < 10; ++i) c.Inc({"n" + std::to_string(i)});
  EXPECT_EQ(c.series(), 4u);  // three, then one for the rest
  std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("t_total{name=\"_overflow\"} 7\n"));
  EXPECT_THAT(text, HasSubstr("cortex_metrics_overflow_total{family=\"t_total\"} 7\n"));
  EXPECT_THAT(text, Not(HasSubstr("name=\"n5\"")));
}

TEST(Metrics, CollectorsRunAtEachScrapeUntilTheirHandleGoes) {
  Registry r;
  auto& g = r.NewGauge("t_live", "Live.", {});
  int value = 1;
  auto handle = r.OnScrape([&] { g.Set({}, value); });
  EXPECT_THAT(r.Render(), HasSubstr("t_live 1\n"));
  value = 2;
  EXPECT_THAT(r.Render(), HasSubstr("t_live 2\n"));
  handle.reset();
  value = 3;
  EXPECT_THAT(r.Render(), HasSubstr("t_live 2\n"));
}

TEST(Metrics, DroppingAHandleWaitsForAScrapeInProgress) {
  Registry r;
  std::atomic<bool> inside{false}, gone{false}, touched_after{false};
  auto handle = r.OnScrape([&] {
    inside = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    if (gone) touched_after = true;  // would be a use after the owner went
  });
  std::thread scrape([&] { (void)r.Render(); });
  while (!inside) std::this_thread::yield();
  handle.reset();  // must block until the collector has returned
  gone = true;
  scrape.join();
  EXPECT_FALSE(touched_after);
}

TEST(Metrics, IncrementsFromManyThreadsAreAllCounted) {
  Registry r;
  auto& c = r.NewCounter("t_total", "T.", {"k"});
  auto& h = r.NewHistogram("t_seconds", "T.", {"k"});
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10000; ++i) {
        c.Inc({t % 2 ? "odd" : "even"});
        h.Observe({"all"}, 0.001);
      }
    });
  }
  std::thread scraper([&] {
    for (int i = 0; i < 50; ++i) (void)r.Render();
  });
  for (auto& t : threads) t.join();
  scraper.join();
  std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("t_total{k=\"even\"} 40000\n"));
  EXPECT_THAT(text, HasSubstr("t_total{k=\"odd\"} 40000\n"));
  EXPECT_THAT(text, HasSubstr("t_seconds_count{k=\"all\"} 80000\n"));
}

TEST(MetricsDeathTest, BadNamesAndDuplicatesAreProgrammingErrors) {
  Registry r;
  EXPECT_DEATH(r.NewCounter("bad-name", "x", {}), "bad metric name");
  EXPECT_DEATH(r.NewCounter("ok_total", "x", {"le"}), "bad label name");
  r.NewGauge("dup", "x", {});
  EXPECT_DEATH(r.NewGauge("dup", "x", {}), "made twice");
}

}  // namespace
}  // namespace cortex::metrics
