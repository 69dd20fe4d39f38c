// Prometheus metrics of the API: every request by method, route pattern and status code, with
// a latency histogram (counted by a request filter, refused requests included), relics' health
// from the deployer, and GET /metrics, which renders the registry every module counts into.
#pragma once

#include "common/metrics.h"
#include "deploy/deployer.h"
#include "http/http.h"

namespace cortex::api {

class ApiMetrics {
 public:
  // Makes the API's families in `registry`, and reads relics' health from `deployer` at each
  // scrape (until this is destroyed: destroy it before the deployer).
  ApiMetrics(metrics::Registry& registry, const deploy::Deployer& deployer);

  // A filter that runs `next` (the access control, ...) and counts the request once answered.
  http::Filter Wrap(http::Filter next);

  metrics::Registry& registry() { return registry_; }

 private:
  metrics::Registry& registry_;
  metrics::Counter& requests_;
  metrics::Histogram& duration_;
  metrics::Registry::CollectorHandle relics_;
};

// GET /metrics: the text format, version 0.0.4.
void AddMetricsRoutes(http::Server& server, metrics::Registry& registry);

}  // namespace cortex::api
