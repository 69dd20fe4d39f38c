// Distributed tracing, W3C Trace Context and OpenTelemetry's span model: a request's
// `traceparent` is carried into the work it starts (tool processes get TRACEPARENT, relic calls
// the header, workflow steps and agent actions their own spans under the run's), and each span,
// once ended, goes to the Tracer's exporter (api/otlp_exporter: OTLP/HTTP JSON) when one is set.
// Without an exporter, contexts are still made and carried, so a tool can log its trace id.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace cortex::trace {

struct Context {
  std::string trace_id;  // 32 lowercase hex digits, not all zero
  std::string span_id;   // 16 lowercase hex digits, not all zero
  bool sampled = true;
  // "00-<trace_id>-<span_id>-01"
  std::string Traceparent() const;
};

// A `traceparent` header value: version 00 exactly as the spec gives it; a later version's first
// four fields. nullopt for anything else (a bad header starts a new trace, it is not an error).
std::optional<Context> ParseTraceparent(std::string_view text);

enum class SpanKind { kInternal = 1, kServer = 2, kClient = 3 };

// An ended span, as the exporter gets it.
struct SpanData {
  Context context;
  std::string parent_span_id;  // "" for a trace's root
  std::string name;
  SpanKind kind = SpanKind::kInternal;
  int64_t start_unix_ns = 0;
  int64_t end_unix_ns = 0;
  bool error = false;
  std::string status_message;
  // Text or integer values (OpenTelemetry's conventions give codes and counts as integers).
  std::vector<std::pair<std::string, std::variant<std::string, int64_t>>> attributes;
};

class Tracer;

// A span in progress; ends (and is exported) at End() or when destroyed. Moving hands it on; a
// default-made Span is a no-op with no context.
class Span {
 public:
  Span() = default;
  Span(Span&& other) noexcept;
  Span& operator=(Span&& other) noexcept;
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;
  ~Span();

  const Context& context() const { return data_.context; }
  // The context to hand to the work this span starts ("" for a no-op span).
  std::string traceparent() const;
  // Values (and the error message) are cut to 1 KiB: a span's size is bounded.
  void SetAttribute(std::string key, std::string value);
  void SetAttribute(std::string key, int64_t value);
  void SetError(std::string message);
  // Ends it: exported once (never throws). Its context stays readable.
  void End();
  // Ends it without exporting it (the work it stood for never started).
  void Discard();

 private:
  friend class Tracer;
  const Tracer* tracer_ = nullptr;
  SpanData data_;
};

class Tracer {
 public:
  using Exporter = std::function<void(SpanData&&)>;
  // `exporter` gets each ended span (on the thread that ended it: it must not block); null:
  // spans are made for their contexts and dropped.
  explicit Tracer(Exporter exporter = nullptr) : exporter_(std::move(exporter)) {}

  // A span under `parent` (a traceparent; "" or invalid: the root of a new trace).
  Span Start(std::string name, std::string_view parent, SpanKind kind = SpanKind::kInternal) const;

 private:
  friend class Span;
  Exporter exporter_;
};

}  // namespace cortex::trace
