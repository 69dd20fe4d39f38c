#include "api/tracing.h"

#include <memory>
#include <nlohmann/json.hpp>
#include <variant>

#include "common/json.h"
#include "common/log.h"
#include "cortex/version.h"

namespace cortex::api {
namespace {

using Json = nlohmann::ordered_json;

Json Attribute(const std::string& key, const std::variant<std::string, int64_t>& value) {
  if (const auto* n = std::get_if<int64_t>(&value)) {
    // int64 as a decimal string, as the protobuf JSON mapping has it.
    return {{"key", key}, {"value", {{"intValue", std::to_string(*n)}}}};
  }
  return {{"key", key}, {"value", {{"stringValue", std::get<std::string>(value)}}}};
}

}  // namespace

std::string OtlpJson(const std::deque<trace::SpanData>& spans, const std::string& service_name) {
  Json out = Json::array();
  for (const trace::SpanData& s : spans) {
    Json span = {{"traceId", s.context.trace_id},
                 {"spanId", s.context.span_id},
                 {"name", s.name},
                 {"kind", static_cast<int>(s.kind)},
                 // int64 as decimal strings, as the protobuf JSON mapping has them.
                 {"startTimeUnixNano", std::to_string(s.start_unix_ns)},
                 {"endTimeUnixNano", std::to_string(s.end_unix_ns)}};
    if (!s.parent_span_id.empty()) span["parentSpanId"] = s.parent_span_id;
    Json attrs = Json::array();
    for (const auto& [k, v] : s.attributes) attrs.push_back(Attribute(k, v));
    span["attributes"] = std::move(attrs);
    // STATUS_CODE_ERROR = 2; UNSET otherwise.
    span["status"] = s.error ? Json{{"code", 2}, {"message", s.status_message}} : Json::object();
    out.push_back(std::move(span));
  }
  Json body = {{"resourceSpans",
                {{{"resource",
                   {{"attributes",
                     {Attribute("service.name", service_name),
                      Attribute("service.version", std::string(kVersion))}}}},
                  {"scopeSpans",
                   {{{"scope", {{"name", "cortex"}, {"version", kVersion}}},
                     {"spans", std::move(out)}}}}}}}};
  return DumpJson(body);  // names and attributes may hold bytes that are not UTF-8: replaced
}

OtlpExporter::OtlpExporter(OtlpOptions options, metrics::Registry* metrics)
    : options_(std::move(options)) {
  url_ = options_.endpoint;
  if (!options_.endpoint_is_traces_url) {
    while (!url_.empty() && url_.back() == '/') url_.pop_back();
    url_ += "/v1/traces";
  }
  if (metrics) {
    exported_ = &metrics->NewCounter("cortex_trace_spans_exported_total",
                                     "Spans sent to the OTLP collector", {});
    dropped_ =
        &metrics->NewCounter("cortex_trace_spans_dropped_total",
                             "Spans dropped: the queue was full or the collector failed", {});
  }
  thread_ = std::thread([this] { Loop(); });
}

OtlpExporter::~OtlpExporter() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void OtlpExporter::Add(trace::SpanData&& span) {
  {
    MutexLock lock(mu_);
    if (queue_.size() >= options_.max_queue) {
      if (dropped_) dropped_->Inc({});
      return;
    }
    queue_.push_back(std::move(span));
    if (queue_.size() < options_.batch) return;
  }
  cv_.notify_one();
}

void OtlpExporter::Loop() {
  MutexLock lock(mu_);
  while (true) {
    cv_.wait_for(lock.native(), options_.interval, [this]() CORTEX_REQUIRES(mu_) {
      return stop_ || queue_.size() >= options_.batch;
    });
    while (!queue_.empty()) {
      std::deque<trace::SpanData> batch;
      while (!queue_.empty() && batch.size() < options_.batch) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      const bool stopping = stop_;
      lock.Unlock();
      const bool sent = Send(std::move(batch));
      lock.Lock();
      if (stopping && !sent) {
        // Stopping, and the collector does not answer: what is left is lost, not waited for.
        if (dropped_) dropped_->Inc({}, static_cast<double>(queue_.size()));
        queue_.clear();
      }
    }
    if (stop_) return;
  }
}

bool OtlpExporter::Send(std::deque<trace::SpanData> spans) {
  const auto [base, path] = http::SplitUrl(url_);
  http::ClientOptions co;
  co.connect_timeout = std::chrono::milliseconds(1000);
  co.read_timeout = std::chrono::milliseconds(5000);
  http::Client client(base, co);
  auto r = client.Post(path, OtlpJson(spans, options_.service_name));
  if (r.ok() && r->status / 100 == 2) {
    if (exported_) exported_->Inc({}, static_cast<double>(spans.size()));
    return true;
  }
  if (dropped_) dropped_->Inc({}, static_cast<double>(spans.size()));
  log::Warn("trace", "cannot export " + std::to_string(spans.size()) + " spans to " + url_ + ": " +
                         (r.ok() ? "HTTP " + std::to_string(r->status) : r.status().message()));
  return false;
}

http::Filter TraceRequests(const trace::Tracer& tracer, http::Filter next) {
  return [&tracer, next = std::move(next)](http::Request& req) {
    const std::string pattern = req.route ? req.route->pattern : std::string();
    auto span = std::make_shared<trace::Span>(
        tracer.Start(req.method + " " + (pattern.empty() ? std::string("unmatched") : pattern),
                     req.Header("traceparent").value_or(""), trace::SpanKind::kServer));
    span->SetAttribute("http.request.method", req.method);
    if (!pattern.empty()) span->SetAttribute("http.route", pattern);
    span->SetAttribute("url.path", req.path);
    req.traceparent = span->traceparent();
    http::FilterResult result;
    if (next) result = next(req);
    auto inner = std::move(result.after);
    result.after = [span, inner = std::move(inner)](const http::Request& r,
                                                    const http::Response& resp) {
      if (inner) inner(r, resp);
      span->SetAttribute("http.response.status_code", int64_t{resp.status});
      for (const auto& [name, value] : resp.headers) {
        if (name == "X-Request-Id") span->SetAttribute("cortex.request_id", value);
      }
      if (resp.status >= 500) span->SetError("HTTP " + std::to_string(resp.status));
      // A stream's span ends when its answer starts: its length is not the request's cost.
      span->End();
    };
    return result;
  };
}

}  // namespace cortex::api
