#include "llm/gateway.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <random>
#include <thread>

#include "common/json.h"
#include "common/log.h"

namespace cortex::llm {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Read under Gateway::mu_ (which the analysis cannot be told: it is another object's); config
// and provider do not change once it is in entries_.
struct Gateway::Entry {
  ProviderConfig config;
  std::unique_ptr<Provider> provider;
  std::string unusable;  // why it cannot be used ("" = usable)
  // Breaker.
  int consecutive_failures = 0;
  std::optional<Clock::time_point> open_until;
  bool trial_in_flight = false;
  // Concurrency.
  int in_flight = 0;
  std::condition_variable slot_freed;
  // Figures.
  int64_t calls = 0, failures = 0;
  std::deque<int64_t> latencies;  // the last 100 successful calls, ms
  std::deque<bool> outcomes;      // the last 100 calls, true = failed
  Usage usage;
};

std::string_view BreakerStateName(BreakerState s) {
  switch (s) {
    case BreakerState::kClosed:
      return "closed";
    case BreakerState::kOpen:
      return "open";
    case BreakerState::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

Gateway::Gateway(std::vector<ProviderConfig> configured, metrics::Registry* metrics)
    : now_([] { return Clock::now(); }),
      sleep_([](milliseconds d) { std::this_thread::sleep_for(d); }) {
  if (metrics) {
    calls_metric_ = &metrics->NewCounter(
        "cortex_llm_calls_total", "Model calls (each retry counts), by provider and outcome.",
        {"provider", "outcome"});
    tokens_metric_ =
        &metrics->NewCounter("cortex_llm_tokens_total", "Tokens used, by provider and direction.",
                             {"provider", "direction"});
    latency_metric_ = &metrics->NewHistogram("cortex_llm_call_duration_seconds",
                                             "Duration of successful model calls.", {"provider"});
    auto& in_flight =
        metrics->NewGauge("cortex_llm_in_flight", "Model calls in progress.", {"provider"});
    auto& breaker = metrics->NewGauge("cortex_llm_breaker_open",
                                      "1 when a provider's circuit breaker is open (or half open).",
                                      {"provider"});
    collector_ = metrics->OnScrape([this, &in_flight, &breaker]() CORTEX_EXCLUDES(mu_) {
      MutexLock lock(mu_);
      const auto now = now_();
      for (const auto& [name, e] : entries_) {
        if (e->calls == 0 && e->in_flight == 0) continue;  // only providers in use
        in_flight.Set({name}, e->in_flight);
        breaker.Set({name}, StateOf(*e, now) == BreakerState::kClosed ? 0 : 1);
      }
    });
  }
  for (auto& c : configured) {
    if (auto def = DefaultProvider(c.name); def && c.type.empty()) {
      // A default name with some fields set: the defaults fill the rest.
      if (c.base_url.empty()) c.base_url = def->base_url;
      if (c.api_key_env.empty()) c.api_key_env = def->api_key_env;
      if (c.model.empty()) c.model = def->model;
      c.type = def->type;
    }
    if (c.type.empty()) c.type = "openai";
    auto made = MakeProvider(c);
    auto e = std::make_unique<Entry>();
    e->config = c;
    if (made.ok()) {
      e->provider = std::move(made).value();
    } else {
      e->unusable = made.status().message();
      log::Warn("llm", "provider " + c.name + ": " + e->unusable);
    }
    entries_[c.name] = std::move(e);
  }
  for (const std::string& name : DefaultProviderNames()) {
    if (entries_.count(name)) continue;
    auto def = DefaultProvider(name);
    auto e = std::make_unique<Entry>();
    e->config = *def;
    if (auto made = MakeProvider(*def); made.ok()) e->provider = std::move(made).value();
    entries_[name] = std::move(e);
  }
}

Gateway::~Gateway() = default;

void Gateway::AddProvider(ProviderConfig config, std::unique_ptr<Provider> provider) {
  MutexLock lock(mu_);
  auto e = std::make_unique<Entry>();
  e->config = std::move(config);
  e->provider = std::move(provider);
  entries_[e->config.name] = std::move(e);
}

void Gateway::SetClockForTesting(std::function<Clock::time_point()> now) { now_ = std::move(now); }
void Gateway::SetSleepForTesting(std::function<void(milliseconds)> sleep) {
  sleep_ = std::move(sleep);
}

Gateway::Entry* Gateway::Find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second.get();
}

namespace {

// "https://Host:8443/v1" -> "https://host:8443"; "" when `url` is not an http(s) URL.
std::string OriginOf(std::string_view url) {
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return "";
  std::string origin(url.substr(0, url.find('/', scheme_end + 3)));
  std::transform(origin.begin(), origin.end(), origin.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (origin.rfind("http://", 0) != 0 && origin.rfind("https://", 0) != 0) return "";
  return origin;
}

}  // namespace

Result<std::string> Gateway::Derive(const std::string& base, const std::string& endpoint,
                                    const std::optional<std::string>& api_key_env) {
  constexpr size_t kMaxDerived = 64;
  if (api_key_env && (api_key_env->size() > 128 ||
                      api_key_env->find_first_not_of(
                          "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
                          std::string::npos)) {
    return InvalidArgumentError("api_key_env must name an environment variable (got '" +
                                ToValidUtf8(api_key_env->substr(0, 200)) + "')");
  }
  MutexLock lock(mu_);
  const Entry* b = Find(base);
  if (!b) {
    return NotFoundError("llm provider '" + base +
                         "' is not configured (llm.providers in cortex.yml)");
  }
  const std::string url = endpoint.empty() ? b->config.base_url : endpoint;
  const std::string origin = OriginOf(url);
  if (origin.size() <= 8 || url.size() > 2048 || std::any_of(url.begin(), url.end(), [](char c) {
        return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
      })) {
    return InvalidArgumentError("an endpoint must be an http:// or https:// URL (got '" +
                                ToValidUtf8(url.substr(0, 200)) + "')");
  }
  std::string name = base + "@" + url;
  if (api_key_env) name += "#" + *api_key_env;
  if (Find(name)) return name;
  size_t derived = 0;
  for (const auto& [_, e] : entries_) derived += e->config.derived_from.empty() ? 0 : 1;
  if (derived >= kMaxDerived) {
    return ResourceExhaustedError("too many agent endpoints (at most " +
                                  std::to_string(kMaxDerived) + "); use llm.providers instead");
  }
  ProviderConfig c = b->config;
  c.name = name;
  c.derived_from = base;
  c.base_url = url;
  if (api_key_env) {
    c.api_key_env = *api_key_env;
  } else if (OriginOf(b->config.base_url) != origin) {
    c.api_key_env = "";
  }
  auto e = std::make_unique<Entry>();
  e->config = c;
  if (auto made = MakeProvider(c); made.ok()) {
    e->provider = std::move(made).value();
  } else {
    e->unusable = made.status().message();
  }
  entries_[name] = std::move(e);
  return name;
}

bool Gateway::Knows(const std::string& name) const {
  MutexLock lock(mu_);
  return Find(name) != nullptr;
}

std::string Gateway::Unusable(const std::string& name) const {
  MutexLock lock(mu_);
  const Entry* e = Find(name);
  if (!e) {
    std::string known;
    for (const auto& [n, _] : entries_) known += (known.empty() ? "" : ", ") + n;
    return "llm provider '" + name +
           "' is not configured (llm.providers in cortex.yml; known: " + known + ")";
  }
  if (!e->unusable.empty()) return e->unusable;
  if (!e->provider) return "llm provider '" + name + "' could not be set up";
  if (!e->config.api_key_env.empty() && !std::getenv(e->config.api_key_env.c_str())) {
    return "llm provider '" + name + "' needs its key in the environment variable " +
           e->config.api_key_env + ", which is not set";
  }
  return "";
}

BreakerState Gateway::StateOf(Entry& e, Clock::time_point now) const {
  if (!e.open_until) return BreakerState::kClosed;
  // Half-open by itself once the recovery time has passed, whether or not anyone calls.
  return now >= *e.open_until ? BreakerState::kHalfOpen : BreakerState::kOpen;
}

Status Gateway::ResetBreaker(const std::string& name) {
  MutexLock lock(mu_);
  Entry* e = Find(name);
  if (!e) return NotFoundError("llm provider '" + name + "' is not configured");
  e->open_until.reset();
  e->consecutive_failures = 0;
  e->trial_in_flight = false;
  return Status::Ok();
}

Result<ChatResult> Gateway::Chat(const std::vector<std::pair<std::string, std::string>>& chain,
                                 ChatRequest request, const DeltaFn& on_delta,
                                 const CancelToken* cancel) {
  if (chain.empty()) return FailedPreconditionError("no llm provider was named");
  const auto start = now_();
  std::vector<std::string> why;
  thread_local std::mt19937 rng(std::random_device{}());
  for (const auto& [name, model] : chain) {
    if (cancel && cancel->cancelled()) return UnavailableError("cancelled");
    if (std::string bad = Unusable(name); !bad.empty()) {
      why.push_back(bad);
      continue;
    }
    Entry* e = nullptr;
    bool trial = false;
    {
      MutexLock lock(mu_);
      e = Find(name);
      BreakerState state = StateOf(*e, now_());
      if (state == BreakerState::kOpen ||
          (state == BreakerState::kHalfOpen && e->trial_in_flight)) {
        why.push_back(name + ": circuit open after " + std::to_string(e->consecutive_failures) +
                      " failures in a row");
        continue;
      }
      if (state == BreakerState::kHalfOpen) trial = e->trial_in_flight = true;
      // A slot of the provider's concurrency limit; waiting is bounded by its total timeout.
      const auto wait_until = Clock::now() + e->config.limits.total_timeout;
      while (e->in_flight >= std::max(1, e->config.max_concurrency)) {
        if (e->slot_freed.wait_until(lock.native(),
                                     std::min(wait_until, Clock::now() + milliseconds(100))) ==
                std::cv_status::timeout &&
            (Clock::now() >= wait_until || (cancel && cancel->cancelled()))) {
          if (trial) e->trial_in_flight = false;
          return cancel && cancel->cancelled()
                     ? UnavailableError("cancelled")
                     : DeadlineExceededError(name + ": no free slot (max_concurrency " +
                                             std::to_string(e->config.max_concurrency) + ")");
        }
      }
      ++e->in_flight;
    }
    ChatRequest req = request;
    req.model = model;
    bool delivered = false;
    DeltaFn wrapped;
    if (on_delta) {
      wrapped = [&](std::string_view text) {
        delivered = true;
        return on_delta(text);
      };
    }
    if (request.on_tool_call) {
      // A call delivered has started an action: like text, it cannot be taken back.
      req.on_tool_call = [&](const ToolCall& call) {
        delivered = true;
        request.on_tool_call(call);
      };
    }
    Result<ChatResult> result = InternalError("not called");
    int attempts = 0;
    for (int attempt = 0; attempt <= std::max(0, e->config.max_retries); ++attempt) {
      ++attempts;
      HttpFailure failure;
      result = e->provider->Chat(req, wrapped, cancel, &failure);
      if (result.ok() || result.status().message() == "cancelled") break;
      bool retryable = !failure.message.empty() && !delivered;
      if (!retryable || attempt == e->config.max_retries) break;
      milliseconds backoff(static_cast<int64_t>(500.0 * (1 << std::min(attempt, 6)) *
                                                std::uniform_real_distribution(0.5, 1.5)(rng)));
      if (failure.retry_after) backoff = std::max(backoff, *failure.retry_after);
      backoff = std::min(backoff, milliseconds(30000));
      log::Info("llm", name + ": " + failure.message + "; retrying in " +
                           std::to_string(backoff.count()) + " ms");
      for (auto slept = milliseconds(0); slept < backoff; slept += milliseconds(50)) {
        if (cancel && cancel->cancelled()) break;
        sleep_(std::min(milliseconds(50), backoff - slept));
      }
    }
    const auto now = now_();
    {
      MutexLock lock(mu_);
      --e->in_flight;
      e->slot_freed.notify_one();
      if (trial) e->trial_in_flight = false;
      ++e->calls;
      bool failed = !result.ok() && result.status().message() != "cancelled";
      e->outcomes.push_back(failed);
      if (e->outcomes.size() > 100) e->outcomes.pop_front();
      if (calls_metric_) {
        calls_metric_->Inc({name, result.ok() ? "ok" : failed ? "failed" : "cancelled"});
      }
      if (result.ok()) {
        if (calls_metric_) {
          tokens_metric_->Inc({name, "input"}, static_cast<double>(result->usage.input_tokens));
          tokens_metric_->Inc({name, "output"}, static_cast<double>(result->usage.output_tokens));
          latency_metric_->Observe({name}, std::chrono::duration<double>(now - start).count());
        }
        e->consecutive_failures = 0;
        e->open_until.reset();
        e->usage += result->usage;
        e->latencies.push_back(std::chrono::duration_cast<milliseconds>(now - start).count());
        if (e->latencies.size() > 100) e->latencies.pop_front();
      } else if (failed) {
        ++e->failures;
        ++e->consecutive_failures;
        if (trial || e->consecutive_failures >= std::max(1, e->config.breaker_failures)) {
          e->open_until = now + e->config.breaker_recovery;
          log::Warn("llm", name + ": circuit open for " +
                               std::to_string(e->config.breaker_recovery.count()) + " ms after " +
                               std::to_string(e->consecutive_failures) + " failures in a row");
        }
      }
    }
    if (result.ok()) {
      result->attempts = attempts;
      result->latency_ms = std::chrono::duration_cast<milliseconds>(now - start).count();
      return result;
    }
    if (result.status().message() == "cancelled") return result.status();
    why.push_back(result.status().message());
    // Text already shown cannot be taken back: no fallback after it.
    if (delivered) return result.status();
    // A request the provider refused (400, 401) would be refused by the next one too only if it
    // is the same provider; another provider may take it.
  }
  std::string all;
  for (const auto& w : why) all += (all.empty() ? "" : "; then ") + w;
  return UnavailableError("no model answered: " + all);
}

Json Gateway::Describe() const {
  MutexLock lock(mu_);
  Json out = Json::array();
  auto now = now_();
  for (const auto& [name, e] : entries_) {
    Json j;
    j["name"] = name;
    j["type"] = e->config.type;
    if (!e->config.base_url.empty()) j["base_url"] = e->config.base_url;
    if (!e->config.model.empty()) j["model"] = e->config.model;
    if (!e->config.derived_from.empty()) j["derived_from"] = e->config.derived_from;
    std::string why = e->unusable;
    if (why.empty() && !e->config.api_key_env.empty() &&
        !std::getenv(e->config.api_key_env.c_str())) {
      why = "the environment variable " + e->config.api_key_env + " is not set";
    }
    j["available"] = why.empty() && e->provider != nullptr;
    if (!why.empty()) j["unavailable_because"] = why;
    BreakerState state = StateOf(*e, now);
    j["breaker"] = std::string(BreakerStateName(state));
    if (state == BreakerState::kOpen) {
      j["breaker_half_opens_in_ms"] =
          std::chrono::duration_cast<milliseconds>(*e->open_until - now).count();
    }
    j["consecutive_failures"] = e->consecutive_failures;
    j["in_flight"] = e->in_flight;
    j["max_concurrency"] = e->config.max_concurrency;
    j["calls"] = e->calls;
    j["failures"] = e->failures;
    size_t failed = static_cast<size_t>(std::count(e->outcomes.begin(), e->outcomes.end(), true));
    j["error_rate"] = e->outcomes.empty()
                          ? 0.0
                          : static_cast<double>(failed) / static_cast<double>(e->outcomes.size());
    if (!e->latencies.empty()) {
      std::vector<int64_t> l(e->latencies.begin(), e->latencies.end());
      std::nth_element(l.begin(), l.begin() + static_cast<long>(l.size() / 2), l.end());
      j["latency_ms_p50"] = l[l.size() / 2];
    }
    j["input_tokens"] = e->usage.input_tokens;
    j["output_tokens"] = e->usage.output_tokens;
    if (e->config.input_price_per_mtok > 0 || e->config.output_price_per_mtok > 0) {
      j["cost"] = e->usage.cost;
    }
    out.push_back(std::move(j));
  }
  return out;
}

// ---- SSE. ----

Status SseReader::Feed(std::string_view bytes, std::vector<Event>* out) {
  for (char c : bytes) {
    if (c != '\n') {
      if (line_.size() >= max_line_) {
        return ResourceExhaustedError("a server-sent event line is longer than " +
                                      std::to_string(max_line_) + " bytes");
      }
      line_ += c;
      continue;
    }
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (line_.empty()) {
      if (has_data_) out->push_back(std::move(current_));
      current_ = Event{};
      has_data_ = false;
    } else if (line_[0] != ':') {
      size_t colon = line_.find(':');
      std::string field = line_.substr(0, colon);
      std::string value = colon == std::string::npos ? "" : line_.substr(colon + 1);
      if (!value.empty() && value[0] == ' ') value.erase(0, 1);
      if (field == "data") {
        if (has_data_) current_.data += '\n';
        current_.data += value;
        has_data_ = true;
      } else if (field == "event") {
        current_.event = value;
      }
    }
    line_.clear();
  }
  return Status::Ok();
}

}  // namespace cortex::llm
