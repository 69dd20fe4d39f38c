#include "api/openapi.h"

#include <map>
#include <string>
#include <string_view>

#include "api/auth.h"
#include "api/route_util.h"
#include "cortex/version.h"
#include "registry/manifest.h"

namespace cortex::api {
namespace {

using Json = nlohmann::ordered_json;

struct QueryParam {
  const char* name;
  const char* type;  // "string" | "integer" | "boolean"
  const char* description;
};

// The query parameters routes read (the handlers in *_routes.cc).
const std::map<http::RouteKey, std::vector<QueryParam>>& QueryParams() {
  static const std::vector<QueryParam> page = {
      {"before", "string", "Only records older than this id (the next page)"},
      {"limit", "integer", "At most this many records (1-1000, default 50)"}};
  static const QueryParam wait = {"wait", "boolean", "Answer once it has finished"};
  static const QueryParam timeout = {"timeout", "string",
                                     "How long to wait (\"30s\", \"500ms\", \"2m\")"};
  static const QueryParam after = {"after", "integer",
                                   "Only entries after this sequence number (resuming)"};
  auto with = [](std::vector<QueryParam> a, const std::vector<QueryParam>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  static const std::map<http::RouteKey, std::vector<QueryParam>> params = {
      {{"GET", "/registry/manifests"}, {{"kind", "string", "Only manifests of this kind"}}},
      {{"GET", "/registry/manifest/{kind}/{name}"},
       {{"format", "string", "\"yaml\" for the manifest's text"}}},
      {{"GET", "/registry/graph"}, {{"format", "string", "\"json\" (default) or \"dot\""}}},
      {{"POST", "/execute/tool"}, {{"tool_name", "string", "The tool, when the body omits it"}}},
      {{"GET", "/executions"},
       with({{"tool", "string", "Only executions of this tool"},
             {"status", "string", "Only executions in this state"}},
            page)},
      {{"GET", "/executions/{id}/logs"}, {after}},
      {{"POST", "/execute/workflow"}, {wait, timeout}},
      {{"POST", "/execute/workflow/{name}"}, {wait, timeout}},
      {{"GET", "/workflows"},
       with({{"workflow", "string", "Only runs of this workflow"},
             {"status", "string", "Only runs in this state"}},
            page)},
      {{"GET", "/workflows/{id}/logs"}, {after}},
      {{"POST", "/deploy/relic"},
       {{"name", "string", "The relic, when the body omits it"}, wait, timeout}},
      {{"POST", "/deploy/relic/{name}"}, {wait, timeout}},
      {{"POST", "/deploy/monument"},
       {{"name", "string", "The monument, when the body omits it"}, wait, timeout}},
      {{"POST", "/deploy/monument/{name}"}, {wait, timeout}},
      {{"GET", "/relics"}, {{"state", "string", "Only relics in this state"}}},
      {{"POST", "/relics/{name}/stop"}, {wait}},
      {{"GET", "/relics/{name}/logs"},
       {{"service", "string", "Only this service's lines"},
        {"tail", "integer", "The last this many lines (0-100000, default 100)"},
        {"follow", "boolean", "Stream new lines as server-sent events"}}},
      {{"GET", "/monuments/{name}/logs"},
       {{"service", "string", "Only this service's lines"},
        {"tail", "integer", "The last this many lines (0-100000, default 100)"}}},
      {{"GET", "/agent-runs"},
       {{"agent", "string", "Only runs of this agent"},
        {"session_id", "string", "Only runs of this session"},
        {"limit", "integer", "At most this many runs (1-1000, default 50)"}}},
      {{"GET", "/agents/usage"}, {{"agent", "string", "Only this agent"}}},
      {{"GET", "/agent-runs/{id}/events"}, {after}},
      {{"GET", "/audit"},
       with({{"actor", "string", "Only entries of this caller"},
             {"path", "string", "Only entries whose path contains this"},
             {"since_ms", "integer", "Only entries from this time (Unix ms)"}},
            page)},
  };
  return params;
}

// The tag of a route: its first path segment ("/relics/{name}" -> "relics").
std::string Tag(std::string_view pattern) {
  std::string_view s = pattern.substr(1);
  s = s.substr(0, s.find('/'));
  if (s == "execute" || s == "deploy") {
    // "/execute/tool" -> "tools"-like groups read better by what is run.
    std::string_view rest = pattern.substr(pattern.find('/', 1) + 1);
    rest = rest.substr(0, rest.find('/'));
    return std::string(s) + " " + std::string(rest);
  }
  return s.empty() ? "service" : std::string(s);
}

// "GET /relics/{name}/logs" -> "getRelicsNameLogs": unique, as OpenAPI wants.
std::string OperationId(const http::RouteKey& route) {
  std::string id;
  for (char c : route.method) id += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  bool upper = true;
  for (char c : route.pattern) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      id += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
      upper = false;
    } else {
      upper = true;
    }
  }
  if (route.pattern == "/registry/") id += "Index";
  return id;
}

Json ErrorRef(const char* description) {
  return {
      {"description", description},
      {"content", {{"application/json", {{"schema", {{"$ref", "#/components/schemas/Error"}}}}}}}};
}

Json Components() {
  Json schemas = Json::object();
  schemas["Error"] = {
      {"type", "object"},
      {"required", {"error"}},
      {"properties",
       {{"error",
         {{"type", "object"},
          {"required", {"code", "message"}},
          {"properties",
           {{"code", {{"type", "string"}, {"description", "A stable code (\"not_found\")"}}},
            {"message", {{"type", "string"}}},
            {"details", {{"description", "More about the error (any JSON)"}}}}}}}}}};
  Json kinds = Json::array();
  for (registry::Kind kind : registry::kAllKinds) {
    const std::string name(registry::EnumName(kind));
    Json schema = registry::KindSchema(kind);
    schema.erase("$schema");  // the document's dialect (2020-12) already
    schemas[name] = std::move(schema);
    kinds.push_back({{"$ref", "#/components/schemas/" + name}});
  }
  schemas["Manifest"] = {{"oneOf", std::move(kinds)}};
  schemas["ManifestText"] = {
      {"type", "object"},
      {"required", {"content"}},
      {"properties",
       {{"content", {{"type", "string"}, {"description", "The manifest's YAML or Markdown text"}}},
        {"format", {{"type", "string"}, {"enum", {"yaml", "yml", "markdown", "md"}}}}}}};
  return {{"schemas", std::move(schemas)},
          {"securitySchemes",
           {{"bearer",
             {{"type", "http"},
              {"scheme", "bearer"},
              {"description",
               "An API key (cortex auth create-key) or a JWT of the configured "
               "identity provider"}}}}}};
}

Json Operation(const http::RouteKey& route) {
  Json op = Json::object();
  const RouteRule* rule = FindRule(route);
  if (rule != nullptr && rule->summary != nullptr && *rule->summary != '\0') {
    op["summary"] = rule->summary;
  }
  op["operationId"] = OperationId(route);
  op["tags"] = {Tag(route.pattern)};
  Json params = Json::array();
  // Path parameters, in the pattern's order.
  for (size_t at = route.pattern.find('{'); at != std::string::npos;
       at = route.pattern.find('{', at + 1)) {
    const size_t end = route.pattern.find('}', at);
    params.push_back({{"name", route.pattern.substr(at + 1, end - at - 1)},
                      {"in", "path"},
                      {"required", true},
                      {"schema", {{"type", "string"}}}});
  }
  if (auto it = QueryParams().find(route); it != QueryParams().end()) {
    for (const QueryParam& q : it->second) {
      params.push_back({{"name", q.name},
                        {"in", "query"},
                        {"description", q.description},
                        {"schema", {{"type", q.type}}}});
    }
  }
  if (!params.empty()) op["parameters"] = std::move(params);
  if (route.method == "POST" || route.method == "PUT") {
    Json schema = {{"type", "object"}};
    if (route.pattern == "/registry/manifests") {
      schema = {{"oneOf",
                 {{{"$ref", "#/components/schemas/ManifestText"}},
                  {{"$ref", "#/components/schemas/Manifest"}}}}};
    }
    op["requestBody"] = {{"required", false},
                         {"content", {{"application/json", {{"schema", std::move(schema)}}}}}};
  }
  Json ok = {{"description", "Success"}};
  if (route.method == "GET" && route.pattern == "/registry/manifest/{kind}/{name}") {
    ok["content"] = {
        {"application/json", {{"schema", {{"$ref", "#/components/schemas/Manifest"}}}}}};
  } else if (route.pattern == "/metrics") {
    ok["content"] = {{"text/plain", {{"schema", {{"type", "string"}}}}}};
  } else {
    ok["content"] = {{"application/json", {{"schema", {{"type", "object"}}}}}};
  }
  Json responses = {{"200", std::move(ok)}};
  responses["400"] = ErrorRef("Bad input (the message names what)");
  const Role role = rule != nullptr ? rule->role : Role::kAdmin;
  if (role != Role::kPublic) {
    responses["401"] = ErrorRef("No valid key or token (when authentication is on)");
    responses["403"] = ErrorRef(
        (std::string("The caller's role is below ") + std::string(RoleName(role))).c_str());
    responses["429"] = ErrorRef("Past the caller's rate limit (see Retry-After)");
    op["security"] = Json::array({{{"bearer", Json::array()}}});
    op["x-cortex-role"] = RoleName(role);
  } else {
    op["security"] = Json::array({Json::object()});
  }
  if (route.pattern.find('{') != std::string::npos) responses["404"] = ErrorRef("Not found");
  op["responses"] = std::move(responses);
  return op;
}

}  // namespace

Json OpenApiDocument(const std::vector<http::RouteKey>& routes) {
  Json paths = Json::object();
  for (const http::RouteKey& route : routes) {
    std::string method = route.method;
    for (char& c : method) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    paths[route.pattern][method] = Operation(route);
  }
  Json doc;
  doc["openapi"] = "3.1.0";
  doc["info"] = {{"title", "Cortex API"},
                 {"version", kVersion},
                 {"description",
                  "Manifests, tools, workflows, agents, relics and monuments. Errors are "
                  "{\"error\": {\"code\", \"message\", \"details\"}}; every answer carries "
                  "X-Request-Id. See docs/api.md."}};
  doc["servers"] = Json::array({{{"url", "/"}}});
  doc["paths"] = std::move(paths);
  doc["components"] = Components();
  return doc;
}

void AddOpenApiRoute(http::Server& server) {
  server.Handle("GET", "/openapi.json",
                [&server](const http::Request&) { return Ok(OpenApiDocument(server.Routes())); });
}

}  // namespace cortex::api
