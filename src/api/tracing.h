// Tracing of the API: a server span for every request (its parent the request's `traceparent`
// header), handed to the handler as Request::traceparent, and the OTLP/HTTP JSON exporter that
// sends ended spans to a collector (`tracing.otlp_endpoint`, or OTEL_EXPORTER_OTLP_ENDPOINT).
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "common/metrics.h"
#include "common/mutex.h"
#include "common/trace.h"
#include "http/http.h"

namespace cortex::api {

struct OtlpOptions {
  // The collector's base URL ("http://127.0.0.1:4318"; spans go to <it>/v1/traces) or the full
  // traces URL (ending in /v1/traces).
  std::string endpoint;
  bool endpoint_is_traces_url = false;  // used as given (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
  std::string service_name = "cortex";
  size_t max_queue = 10000;  // spans waiting; past it new ones are dropped (and counted)
  size_t batch = 512;        // spans per request at most
  std::chrono::milliseconds interval{1000};
};

// Batches ended spans and POSTs them on its own thread; a collector that is down or slow costs
// dropped spans (counted in cortex_trace_spans_dropped_total), never a blocked request.
class OtlpExporter {
 public:
  OtlpExporter(OtlpOptions options, metrics::Registry* metrics);
  ~OtlpExporter();  // sends what is queued (one try), then stops
  OtlpExporter(const OtlpExporter&) = delete;
  OtlpExporter& operator=(const OtlpExporter&) = delete;

  void Add(trace::SpanData&& span);
  // The Tracer's exporter function.
  trace::Tracer::Exporter AsExporter() {
    return [this](trace::SpanData&& s) { Add(std::move(s)); };
  }

 private:
  void Loop();
  bool Send(std::deque<trace::SpanData> spans);  // false: not taken (and counted as dropped)

  OtlpOptions options_;
  std::string url_;
  metrics::Counter* exported_ = nullptr;
  metrics::Counter* dropped_ = nullptr;
  Mutex mu_;
  std::condition_variable cv_;
  std::deque<trace::SpanData> queue_ CORTEX_GUARDED_BY(mu_);
  bool stop_ CORTEX_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// The OTLP/JSON body of `spans` (ExportTraceServiceRequest).
std::string OtlpJson(const std::deque<trace::SpanData>& spans, const std::string& service_name);

// A filter that opens the request's server span, runs `next`, and ends the span with the answer.
http::Filter TraceRequests(const trace::Tracer& tracer, http::Filter next);

}  // namespace cortex::api
