// Metrics in the Prometheus text format (version 0.0.4): counters, gauges and histograms with
// labels, kept in a Registry that the composition root makes and hands to each module (there is
// no global one). Values that are state rather than events (queue depths, a relic's health) are
// read at scrape time by collectors.
//
// Bounds: each family holds at most `max_series_per_family` label combinations; past that,
// new combinations are counted in one series whose label values are all "_overflow" (and
// cortex_metrics_overflow_total says so), so a caller cannot grow memory without end.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"

namespace cortex::metrics {

using LabelValues = std::initializer_list<std::string_view>;

class Registry;

// A metric family: one name and its label names; a series per combination of label values.
class Family {
 public:
  enum class Type { kCounter, kGauge, kHistogram };
  virtual ~Family() = default;
  const std::string& name() const { return name_; }
  size_t series() const;

 protected:
  friend class Registry;
  struct Series {
    double value = 0;              // counter, gauge
    std::vector<uint64_t> counts;  // histogram: one per bucket (not cumulative), then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  struct KeyLess {
    using is_transparent = void;
    bool operator()(const std::vector<std::string>& a, const std::vector<std::string>& b) const {
      return a < b;
    }
    bool operator()(const std::vector<std::string>& a, LabelValues b) const;
    bool operator()(LabelValues a, const std::vector<std::string>& b) const;
  };
  Family(Registry& owner, Type type, std::string name, std::string help,
         std::vector<std::string> label_names, std::vector<double> buckets = {});
  // The series for `values` (made on first use), with the family's lock held by the caller.
  Series& At(LabelValues values) CORTEX_REQUIRES(mu_);
  void Render(std::string& out) const;

  Registry& owner_;
  Type type_;
  std::string name_, help_;
  std::vector<std::string> label_names_;
  std::vector<double> buckets_;  // histogram upper bounds, ascending
  mutable Mutex mu_;
  std::map<std::vector<std::string>, Series, KeyLess> series_ CORTEX_GUARDED_BY(mu_);
};

class Counter : public Family {
 public:
  // Adds `by` (>= 0; a negative amount is ignored) to the series of `values`.
  void Inc(LabelValues values, double by = 1);

 private:
  friend class Registry;
  using Family::Family;
};

class Gauge : public Family {
 public:
  void Set(LabelValues values, double v);
  void Add(LabelValues values, double by);
  // Forgets every series (a collector that sets the whole family afresh at each scrape).
  void Clear();

 private:
  friend class Registry;
  using Family::Family;
};

class Histogram : public Family {
 public:
  void Observe(LabelValues values, double v);

 private:
  friend class Registry;
  using Family::Family;
};

// Latency buckets in seconds, from 0.5 ms to 10 s.
const std::vector<double>& LatencyBuckets();

class Registry {
 public:
  explicit Registry(size_t max_series_per_family = 10000);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Families are made once (at start-up) and live as long as the registry. Names must match
  // [a-zA-Z_:][a-zA-Z0-9_:]* and be new (a programming error otherwise: CORTEX_CHECK).
  Counter& NewCounter(std::string name, std::string help, std::vector<std::string> label_names);
  Gauge& NewGauge(std::string name, std::string help, std::vector<std::string> label_names);
  Histogram& NewHistogram(std::string name, std::string help, std::vector<std::string> label_names,
                          std::vector<double> buckets = LatencyBuckets());

  // Runs `collect` at each Render, before the families are written: it sets gauges from live
  // state. The collector is removed when the returned handle is destroyed, so a module that
  // stops first cannot be called after it is gone.
  using CollectorHandle = std::shared_ptr<void>;
  [[nodiscard]] CollectorHandle OnScrape(std::function<void()> collect);

  // Every family, in the order they were made.
  std::string Render() const;
  size_t max_series_per_family() const { return max_series_; }

 private:
  friend class Family;
  Family& Adopt(Family* family);  // takes ownership
  void Overflowed(const std::string& family);

  size_t max_series_;
  mutable Mutex mu_ CORTEX_ACQUIRED_AFTER(collect_mu_);
  std::vector<std::unique_ptr<Family>> families_ CORTEX_GUARDED_BY(mu_);
  std::map<uint64_t, std::function<void()>> collectors_ CORTEX_GUARDED_BY(mu_);
  uint64_t next_collector_ CORTEX_GUARDED_BY(mu_) = 0;
  mutable Mutex collect_mu_;  // one scrape's collectors at a time
  Counter* overflow_ = nullptr;
};

}  // namespace cortex::metrics
