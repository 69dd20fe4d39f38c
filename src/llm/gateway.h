// The LLM gateway: the only code in Cortex that talks to a model provider (docs/llm.md).
//
// Providers sit behind one interface (Provider::Chat, streaming or not):
//   - "openai": OpenAI-compatible chat completions (OpenAI, Groq, Ollama's /v1, vLLM, llama.cpp,
//     LM Studio, OpenRouter, Gemini's OpenAI-compatible endpoint);
//   - "anthropic": the Anthropic Messages API, native;
//   - "replay": a recorded conversation played back, for tests and CI without a key.
// The Gateway adds what every call needs: retries with backoff and jitter on 429, 5xx and
// connection errors (honouring Retry-After), fallback along a chain of providers, a per-provider
// circuit breaker that half-opens by itself after its recovery time, a per-provider concurrency
// limit, and usage, latency and error counts per provider.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/cancel.h"
#include "common/metrics.h"
#include "common/mutex.h"
#include "common/status.h"

namespace cortex::llm {

using Json = nlohmann::ordered_json;

// A function call the model asked for (native function calling).
struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text, as the model wrote it
};

// A function the model may call: its name, what it does, its parameters as a JSON Schema.
struct ToolDef {
  std::string name;
  std::string description;
  Json parameters = Json::object();
};

struct Message {
  Message() = default;
  Message(std::string r, std::string c, std::vector<ToolCall> calls = {}, std::string call_id = {})
      : role(std::move(r)),
        content(std::move(c)),
        tool_calls(std::move(calls)),
        tool_call_id(std::move(call_id)) {}
  std::string role;  // system | user | assistant | tool
  std::string content;
  std::vector<ToolCall> tool_calls;  // assistant: the calls it made
  std::string tool_call_id;          // tool: the call this is the result of
};

struct ChatRequest {
  std::string model;  // "" = the provider's default model
  std::vector<Message> messages;
  std::vector<ToolDef> tools;  // native function calling: what the model may call
  // Streamed: called with each function call as soon as it is complete (its arguments whole),
  // before the reply ends. Not streamed (or not set): the calls are in ChatResult only.
  std::function<void(const ToolCall&)> on_tool_call;
  std::optional<double> temperature, top_p;
  std::optional<int64_t> max_tokens;
  Json extra = Json::object();  // provider-specific fields, passed through
  // Which turn of which run this is: a replay provider plays turn `turn` of its recording.
  std::string run_id;
  int turn = 0;
};

struct Usage {
  int64_t input_tokens = 0, output_tokens = 0;
  double cost = 0;  // in the configured currency, when prices are configured
  Usage& operator+=(const Usage& o) {
    input_tokens += o.input_tokens;
    output_tokens += o.output_tokens;
    cost += o.cost;
    return *this;
  }
};

struct ChatResult {
  std::string content;
  std::vector<ToolCall> tool_calls;
  std::string finish_reason;
  Usage usage;
  std::string provider, model;  // who answered
  int64_t latency_ms = 0;       // the whole call, retries included
  int attempts = 1;
};

// Called with each piece of text as it streams in; return false to stop the call.
using DeltaFn = std::function<bool(std::string_view text)>;

struct CallLimits {
  std::chrono::milliseconds connect_timeout{10000};
  std::chrono::milliseconds first_token_timeout{60000};  // from the request to the first byte
  std::chrono::milliseconds total_timeout{300000};
};

// An HTTP failure a retry may cure: a status (429, 5xx) or a connection error (status 0).
struct HttpFailure {
  int status = 0;
  std::optional<std::chrono::milliseconds> retry_after;
  std::string message;
};

class Provider {
 public:
  virtual ~Provider() = default;
  // One attempt. `on_delta` null: not streamed. Errors: Unavailable (with `failure` set when a
  // retry may help), InvalidArgument (the provider refused the request: 400, 401, 404...),
  // DeadlineExceeded, Cancelled-like (Unavailable with message "cancelled").
  virtual Result<ChatResult> Chat(const ChatRequest& request, const DeltaFn& on_delta,
                                  const CancelToken* cancel, HttpFailure* failure) = 0;
};

struct ProviderConfig {
  std::string name;          // what manifests name (cognitive_engine.primary.provider)
  std::string type;          // openai | anthropic | replay
  std::string base_url;      // e.g. https://api.openai.com/v1
  std::string api_key_env;   // the environment variable holding the key ("" = none needed)
  std::string model;         // the default model
  std::string replay_file;   // type replay: the recording
  std::string ca_bundle;     // a CA bundle file for HTTPS ("" = the system's)
  int max_concurrency = 8;   // calls at once; more wait
  int max_retries = 2;       // after the first attempt
  int breaker_failures = 5;  // consecutive failures that open the breaker
  std::chrono::milliseconds breaker_recovery{30000};  // then it half-opens by itself
  CallLimits limits;
  double input_price_per_mtok = 0, output_price_per_mtok = 0;  // cost per million tokens
  std::string derived_from;  // set for a provider made by Gateway::Derive: the one it is like
};

// The documented defaults of the names the corpus uses (google, openai, anthropic, ollama, groq,
// and gemini as google's other name); nullopt for another name.
std::optional<ProviderConfig> DefaultProvider(std::string_view name);
// Those names: providers every server knows.
const std::vector<std::string>& DefaultProviderNames();

// The provider for a configuration (with the environment's key read now).
Result<std::unique_ptr<Provider>> MakeProvider(const ProviderConfig& config);

enum class BreakerState { kClosed, kOpen, kHalfOpen };
std::string_view BreakerStateName(BreakerState s);

class Gateway {
 public:
  // `configured`: from cortex.yml; the default names are added for what it does not declare.
  // `metrics` (optional): where calls, tokens, latencies, in-flight calls and breakers are
  // counted.
  explicit Gateway(std::vector<ProviderConfig> configured, metrics::Registry* metrics = nullptr);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;
  // For tests: providers made by the caller.
  void AddProvider(ProviderConfig config, std::unique_ptr<Provider> provider);

  // Tries the chain in order (a provider name, with an optional model: "openai" or
  // "openai/gpt-4o-mini"), each with its retries, skipping providers whose breaker is open.
  // Deltas of a failed attempt are not withdrawn: an attempt is retried only while it has
  // delivered nothing.
  Result<ChatResult> Chat(const std::vector<std::pair<std::string, std::string>>& chain,
                          ChatRequest request, const DeltaFn& on_delta,
                          const CancelToken* cancel = nullptr);

  // A provider like `base` (its type, limits, prices, default model) that talks to `endpoint`
  // (an agent manifest's cognitive_engine.primary.endpoint; "" = base's own, for a manifest that
  // names only api_key_env): the name to put in a chain, made
  // once and kept, with its own breaker and figures. The key it sends: the variable
  // `api_key_env` names when given ("" = none); else `base`'s key, but only when `endpoint` is
  // on `base`'s own origin (scheme, host and port): a manifest cannot send a provider's key to
  // another host by naming that host. At most 64 such providers.
  Result<std::string> Derive(const std::string& base, const std::string& endpoint,
                             const std::optional<std::string>& api_key_env);

  // Whether `name` is a provider the gateway knows (configured or a default name).
  bool Knows(const std::string& name) const;
  // Why `name` cannot be used now ("" when it can): unknown, or its key is not set.
  std::string Unusable(const std::string& name) const;

  // GET /llm/providers: name, type, base_url, model, available, breaker, in_flight, calls,
  // failures, error_rate, latency_ms (p50 of the last 100), tokens, cost.
  Json Describe() const;
  Status ResetBreaker(const std::string& name);

  // For tests: the clock the breaker and backoff use.
  void SetClockForTesting(std::function<std::chrono::steady_clock::time_point()> now);
  void SetSleepForTesting(std::function<void(std::chrono::milliseconds)> sleep);

 private:
  struct Entry;  // its breaker, concurrency and figures are guarded by mu_ too
  Entry* Find(const std::string& name) const CORTEX_REQUIRES(mu_);
  BreakerState StateOf(Entry& e, std::chrono::steady_clock::time_point now) const
      CORTEX_REQUIRES(mu_);

  mutable Mutex mu_;
  std::map<std::string, std::unique_ptr<Entry>> entries_ CORTEX_GUARDED_BY(mu_);
  std::function<std::chrono::steady_clock::time_point()> now_;
  std::function<void(std::chrono::milliseconds)> sleep_;
  metrics::Counter* calls_metric_ = nullptr;
  metrics::Counter* tokens_metric_ = nullptr;
  metrics::Histogram* latency_metric_ = nullptr;
  metrics::Registry::CollectorHandle collector_;
};

// The pieces of an SSE stream: fed bytes, returns each complete event's `data` (lines joined)
// with its `event` name. Lines are bounded: a line longer than max_line_bytes is an error.
class SseReader {
 public:
  struct Event {
    std::string event;  // "" = message
    std::string data;
  };
  explicit SseReader(size_t max_line_bytes = 1 << 20) : max_line_(max_line_bytes) {}
  Status Feed(std::string_view bytes, std::vector<Event>* out);

 private:
  size_t max_line_;
  std::string line_;
  Event current_;
  bool has_data_ = false;
};

}  // namespace cortex::llm
