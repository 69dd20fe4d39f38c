#include "common/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/json.h"
#include "common/status.h"

namespace cortex::metrics {

namespace {

bool ValidName(std::string_view name, bool label) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (!label && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return !(label && name.rfind("__", 0) == 0);
}

// A label value as the text format wants it: valid UTF-8, with \\, \" and \n escaped.
void AppendLabelValue(std::string& out, std::string_view value) {
  std::string text = ToValidUtf8(value);
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

void AppendNumber(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else if (v == std::floor(v) && std::fabs(v) < 1e15) {
    out += std::to_string(static_cast<int64_t>(v));
  } else {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    out += buf;
  }
}

// `{a="x",b="y"` (no closing brace: a histogram adds le=); "" when there are no labels and no
// extra one follows.
void AppendLabels(std::string& out, const std::vector<std::string>& names,
                  const std::vector<std::string>& values) {
  for (size_t i = 0; i < names.size(); ++i) {
    out += i == 0 ? "{" : ",";
    out += names[i];
    out += "=\"";
    AppendLabelValue(out, values[i]);
    out += '"';
  }
}

template <class A, class B>
bool LexLess(const A& a, const B& b) {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(),
                                      [](std::string_view x, std::string_view y) { return x < y; });
}

}  // namespace

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> buckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                              0.1,    0.25,  0.5,    1,     2.5,  5,     10};
  return buckets;
}

bool Family::KeyLess::operator()(const std::vector<std::string>& a, LabelValues b) const {
  return LexLess(a, b);
}
bool Family::KeyLess::operator()(LabelValues a, const std::vector<std::string>& b) const {
  return LexLess(a, b);
}

Family::Family(Registry& owner, Type type, std::string name, std::string help,
               std::vector<std::string> label_names, std::vector<double> buckets)
    : owner_(owner),
      type_(type),
      name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      buckets_(std::move(buckets)) {
  CORTEX_CHECK_MSG(ValidName(name_, false), "bad metric name " + name_);
  for (const auto& l : label_names_) {
    CORTEX_CHECK_MSG(ValidName(l, true) && l != "le", "bad label name " + l + " on " + name_);
  }
  CORTEX_CHECK_MSG(std::is_sorted(buckets_.begin(), buckets_.end()), "unsorted buckets");
}

size_t Family::series() const {
  MutexLock lock(mu_);
  return series_.size();
}

Family::Series& Family::At(LabelValues values) {
  CORTEX_CHECK_MSG(values.size() == label_names_.size(),
                   "wrong number of label values for " + name_);
  auto it = series_.find(values);
  if (it != series_.end()) return it->second;
  std::vector<std::string> key;
  if (series_.size() >= owner_.max_series_per_family()) {
    owner_.Overflowed(name_);
    key.assign(values.size(), "_overflow");
    if (auto o = series_.find(key); o != series_.end()) return o->second;
  } else {
    key.assign(values.begin(), values.end());
  }
  Series s;
  if (type_ == Type::kHistogram) s.counts.assign(buckets_.size() + 1, 0);
  return series_.emplace(std::move(key), std::move(s)).first->second;
}

void Family::Render(std::string& out) const {
  out += "# HELP " + name_ + " ";
  for (char c : help_) out += c == '\n' ? ' ' : c;
  out += "\n# TYPE " + name_ + " ";
  out += type_ == Type::kCounter ? "counter" : type_ == Type::kGauge ? "gauge" : "histogram";
  out += '\n';
  MutexLock lock(mu_);
  for (const auto& [values, s] : series_) {
    if (type_ != Type::kHistogram) {
      out += name_;
      AppendLabels(out, label_names_, values);
      if (!label_names_.empty()) out += '}';
      out += ' ';
      AppendNumber(out, s.value);
      out += '\n';
      continue;
    }
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= buckets_.size(); ++i) {
      cumulative += s.counts[i];
      out += name_ + "_bucket";
      AppendLabels(out, label_names_, values);
      out += label_names_.empty() ? "{le=\"" : ",le=\"";
      if (i < buckets_.size()) {
        AppendNumber(out, buckets_[i]);
      } else {
        out += "+Inf";
      }
      out += "\"} ";
      out += std::to_string(cumulative);
      out += '\n';
    }
    for (const char* part : {"_sum", "_count"}) {
      out += name_ + part;
      AppendLabels(out, label_names_, values);
      if (!label_names_.empty()) out += '}';
      out += ' ';
      if (part[1] == 's') {
        AppendNumber(out, s.sum);
      } else {
        out += std::to_string(s.count);
      }
      out += '\n';
    }
  }
}

void Counter::Inc(LabelValues values, double by) {
  if (!(by >= 0)) return;
  MutexLock lock(mu_);
  At(values).value += by;
}

void Gauge::Set(LabelValues values, double v) {
  MutexLock lock(mu_);
  At(values).value = v;
}

void Gauge::Add(LabelValues values, double by) {
  MutexLock lock(mu_);
  At(values).value += by;
}

void Gauge::Clear() {
  MutexLock lock(mu_);
  series_.clear();
}

void Histogram::Observe(LabelValues values, double v) {
  if (std::isnan(v)) return;
  MutexLock lock(mu_);
  Series& s = At(values);
  size_t i = std::lower_bound(buckets_.begin(), buckets_.end(), v) - buckets_.begin();
  ++s.counts[i];
  s.sum += v;
  ++s.count;
}

Registry::Registry(size_t max_series_per_family) : max_series_(max_series_per_family) {
  overflow_ = &NewCounter("cortex_metrics_overflow_total",
                          "Label combinations counted as _overflow because their family was full.",
                          {"family"});
}

Registry::~Registry() = default;

Family& Registry::Adopt(Family* f) {
  MutexLock lock(mu_);
  for (const auto& other : families_) {
    CORTEX_CHECK_MSG(other->name() != f->name(), "metric " + f->name() + " made twice");
  }
  families_.emplace_back(f);
  return *f;
}

Counter& Registry::NewCounter(std::string name, std::string help,
                              std::vector<std::string> label_names) {
  return static_cast<Counter&>(Adopt(new Counter(*this, Family::Type::kCounter, std::move(name),
                                                 std::move(help), std::move(label_names))));
}

Gauge& Registry::NewGauge(std::string name, std::string help,
                          std::vector<std::string> label_names) {
  return static_cast<Gauge&>(Adopt(new Gauge(*this, Family::Type::kGauge, std::move(name),
                                             std::move(help), std::move(label_names))));
}

Histogram& Registry::NewHistogram(std::string name, std::string help,
                                  std::vector<std::string> label_names,
                                  std::vector<double> buckets) {
  return static_cast<Histogram&>(
      Adopt(new Histogram(*this, Family::Type::kHistogram, std::move(name), std::move(help),
                          std::move(label_names), std::move(buckets))));
}

Registry::CollectorHandle Registry::OnScrape(std::function<void()> collect) {
  uint64_t id;
  {
    MutexLock lock(mu_);
    id = next_collector_++;
    collectors_.emplace(id, std::move(collect));
  }
  // The handle's deleter waits for a scrape in progress, so the collector never outlives it.
  return CollectorHandle(reinterpret_cast<void*>(1), [this, id](void*) {
    MutexLock scrape(collect_mu_);
    MutexLock lock(mu_);
    collectors_.erase(id);
  });
}

void Registry::Overflowed(const std::string& family) {
  if (overflow_ && family != overflow_->name()) overflow_->Inc({family});
}

std::string Registry::Render() const {
  MutexLock scrape(collect_mu_);
  std::vector<std::function<void()>> collectors;
  std::vector<const Family*> families;
  {
    MutexLock lock(mu_);
    for (const auto& [_, c] : collectors_) collectors.push_back(c);
    for (const auto& f : families_) families.push_back(f.get());
  }
  for (const auto& c : collectors) c();
  std::string out;
  out.reserve(1 << 16);
  for (const Family* f : families) f->Render(out);
  return out;
}

}  // namespace cortex::metrics
