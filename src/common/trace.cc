#include "common/trace.h"

#include <chrono>

#include "common/random_id.h"

namespace cortex::trace {
namespace {

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool AllZero(std::string_view s) { return s.find_first_not_of('0') == std::string_view::npos; }

constexpr size_t kMaxValueBytes = 1024;

void Cut(std::string& s) {
  if (s.size() <= kMaxValueBytes) return;
  size_t n = kMaxValueBytes;
  // Not inside a UTF-8 sequence: back up over continuation bytes.
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  s.resize(n);
}

int64_t NowUnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A random id of `digits` hex digits that is not all zero.
std::string NewId(size_t digits) {
  std::string id;
  do {
    id = RandomId("", digits);
  } while (AllZero(id));
  return id;
}

}  // namespace

std::string Context::Traceparent() const {
  return "00-" + trace_id + "-" + span_id + (sampled ? "-01" : "-00");
}

std::optional<Context> ParseTraceparent(std::string_view text) {
  // version "-" trace-id "-" parent-id "-" trace-flags: 2+1+32+1+16+1+2 = 55 characters.
  if (text.size() < 55) return std::nullopt;
  const std::string_view version = text.substr(0, 2);
  if (!IsLowerHex(version) || version == "ff") return std::nullopt;
  if (version == "00" && text.size() != 55) return std::nullopt;
  if (text.size() > 55 && text[55] != '-') return std::nullopt;  // a later version's extra fields
  if (text[2] != '-' || text[35] != '-' || text[52] != '-') return std::nullopt;
  Context c;
  c.trace_id = std::string(text.substr(3, 32));
  c.span_id = std::string(text.substr(36, 16));
  const std::string_view flags = text.substr(53, 2);
  if (!IsLowerHex(c.trace_id) || !IsLowerHex(c.span_id) || !IsLowerHex(flags)) return std::nullopt;
  if (AllZero(c.trace_id) || AllZero(c.span_id)) return std::nullopt;
  c.sampled = (std::stoi(std::string(flags), nullptr, 16) & 1) != 0;
  return c;
}

Span::Span(Span&& other) noexcept
    : tracer_(std::exchange(other.tracer_, nullptr)), data_(std::move(other.data_)) {}

Span& Span::operator=(Span&& other) noexcept {
  if (this != &other) {
    End();
    tracer_ = std::exchange(other.tracer_, nullptr);
    data_ = std::move(other.data_);
  }
  return *this;
}

Span::~Span() { End(); }

std::string Span::traceparent() const {
  return data_.context.trace_id.empty() ? std::string() : data_.context.Traceparent();
}

void Span::SetAttribute(std::string key, std::string value) {
  if (tracer_ == nullptr) return;
  Cut(key);
  Cut(value);
  for (auto& [k, v] : data_.attributes) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  data_.attributes.emplace_back(std::move(key), std::move(value));
}

void Span::SetAttribute(std::string key, int64_t value) {
  if (tracer_ == nullptr) return;
  Cut(key);
  for (auto& [k, v] : data_.attributes) {
    if (k == key) {
      v = value;
      return;
    }
  }
  data_.attributes.emplace_back(std::move(key), value);
}

void Span::SetError(std::string message) {
  if (tracer_ == nullptr) return;
  data_.error = true;
  Cut(message);
  data_.status_message = std::move(message);
}

void Span::End() {
  const Tracer* tracer = std::exchange(tracer_, nullptr);
  if (tracer == nullptr) return;
  data_.end_unix_ns = NowUnixNs();
  // Not sampled: carried on, never exported.
  if (!tracer->exporter_ || !data_.context.sampled) return;
  try {
    Context context = data_.context;
    tracer->exporter_(std::move(data_));
    data_ = SpanData();
    data_.context = std::move(context);
  } catch (...) {
    // Out of memory while handing it on: the span is lost, not the process.
  }
}

void Span::Discard() { tracer_ = nullptr; }

Span Tracer::Start(std::string name, std::string_view parent, SpanKind kind) const {
  Span span;
  span.tracer_ = this;
  SpanData& d = span.data_;
  if (auto p = ParseTraceparent(parent)) {
    d.context.trace_id = std::move(p->trace_id);
    d.context.sampled = p->sampled;
    d.parent_span_id = std::move(p->span_id);
  } else {
    d.context.trace_id = NewId(32);
  }
  d.context.span_id = NewId(16);
  d.name = std::move(name);
  d.kind = kind;
  d.start_unix_ns = NowUnixNs();
  return span;
}

}  // namespace cortex::trace
