// The API's OpenAPI 3.1 document (GET /openapi.json), generated from what the server serves:
// each registered route with the summary and role of its entry in the access table
// (api/auth.h), its path and query parameters, and the manifest kinds' JSON Schemas
// (registry::KindSchema) as components. A route the table does not describe gets no summary,
// which the OpenAPI test refuses, so the document cannot fall behind the routes.
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "http/http.h"

namespace cortex::api {

nlohmann::ordered_json OpenApiDocument(const std::vector<http::RouteKey>& routes);

// GET /openapi.json on `server`: the document of the routes registered on it.
void AddOpenApiRoute(http::Server& server);

}  // namespace cortex::api
