// HTTP routes of the registry (ingestion) service: /registry/...
#pragma once

#include "http/http.h"
#include "registry/registry.h"

namespace cortex::api {

struct RegistryRoutesOptions {
  std::chrono::seconds events_keepalive{15};
};

void AddRegistryRoutes(http::Server& router, registry::Registry& registry,
                       RegistryRoutesOptions options = {});

}  // namespace cortex::api
