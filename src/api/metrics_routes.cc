#include "api/metrics_routes.h"

#include <chrono>

namespace cortex::api {

namespace {

// A method label from a bounded set: anything else is "OTHER".
std::string_view MethodLabel(std::string_view method) {
  for (std::string_view m : {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}) {
    if (method == m) return m;
  }
  return "OTHER";
}

}  // namespace

ApiMetrics::ApiMetrics(metrics::Registry& registry, const deploy::Deployer& deployer)
    : registry_(registry),
      requests_(registry.NewCounter(
          "cortex_http_requests_total",
          "HTTP requests answered, by method, route pattern (\"unmatched\" for none) and status.",
          {"method", "route", "code"})),
      duration_(registry.NewHistogram(
          "cortex_http_request_duration_seconds",
          "Time from a request's headers to its answer being ready (streams: until they start).",
          {"method", "route"})) {
  auto& up = registry.NewGauge("cortex_relic_up", "1 when a deployed relic is healthy.",
                               {"relic", "state"});
  auto& restarts =
      registry.NewGauge("cortex_relic_restarts", "Restarts of a deployed relic.", {"relic"});
  relics_ = registry.OnScrape([&deployer, &up, &restarts] {
    up.Clear();  // relics deleted since the last scrape go
    restarts.Clear();
    for (const auto& r : deployer.ListRelics()) {
      const std::string name = r.value("name", "");
      const std::string health =
          r.contains("health") && r["health"].is_object() ? r["health"].value("status", "") : "";
      up.Set({name, r.value("state", "")}, health == "healthy" ? 1 : 0);
      restarts.Set({name}, r.value("restarts", 0));
    }
  });
}

http::Filter ApiMetrics::Wrap(http::Filter next) {
  return [this, next = std::move(next)](http::Request& req) {
    const auto start = std::chrono::steady_clock::now();
    http::FilterResult result;
    if (next) result = next(req);
    const auto& route = req.route;
    auto inner = std::move(result.after);
    result.after = [this, inner = std::move(inner), start, method = MethodLabel(req.method),
                    pattern = route ? route->pattern : std::string("unmatched")](
                       const http::Request& r, const http::Response& resp) {
      if (inner) inner(r, resp);
      requests_.Inc({method, pattern, std::to_string(resp.status)});
      duration_.Observe(
          {method, pattern},
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    };
    return result;
  };
}

void AddMetricsRoutes(http::Server& server, metrics::Registry& registry) {
  server.Handle("GET", "/metrics", [&registry](const http::Request&) {
    return http::Response::Text(200, registry.Render(), "text/plain; version=0.0.4; charset=utf-8");
  });
}

}  // namespace cortex::api
