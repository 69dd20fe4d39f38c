// The library-independent half of http.h: request accessors, response builders, the JSON error
// shape, URL encoding and the Router. Nothing here knows about cpp-httplib.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "common/json.h"
#include "http/http.h"

namespace cortex::http {
namespace {

char AsciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// "/a/{x}/b" -> {"a", "{x}", "b"}; "/" -> {""}. Empty segments are kept, so "/a/" differs from
// "/a" and "//a" differs from "/a".
std::vector<std::string> SplitPath(std::string_view path) {
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  std::vector<std::string> segments;
  while (true) {
    size_t slash = path.find('/');
    segments.emplace_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return segments;
}

bool IsCapture(std::string_view segment) {
  return segment.size() >= 3 && segment.front() == '{' && segment.back() == '}';
}

std::string_view CaptureName(std::string_view segment) {
  return segment.substr(1, segment.size() - 2);
}

}  // namespace

bool CaseInsensitiveLess::operator()(std::string_view a, std::string_view b) const {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return static_cast<unsigned char>(AsciiLower(x)) < static_cast<unsigned char>(AsciiLower(y));
  });
}

std::optional<std::string> Request::Header(std::string_view name) const {
  auto it = headers.lower_bound(name);
  if (it == headers.end() || CaseInsensitiveLess()(name, it->first)) return std::nullopt;
  return it->second;
}

std::optional<std::string> Request::Query(std::string_view name) const {
  auto it = query.lower_bound(std::string(name));
  if (it == query.end() || it->first != name) return std::nullopt;
  return it->second;
}

std::string Request::PathParam(std::string_view name) const {
  auto it = path_params.find(std::string(name));
  return it == path_params.end() ? std::string() : it->second;
}

Response Response::Json(int status, std::string body) {
  Response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

Response Response::Text(int status, std::string body, std::string content_type) {
  Response r;
  r.status = status;
  r.content_type = std::move(content_type);
  r.body = std::move(body);
  return r;
}

Response ErrorResponse(int status, std::string_view code, std::string_view message,
                       std::string_view details_json) {
  // ordered_json keeps the documented key order: code, message, details.
  nlohmann::ordered_json error;
  error["code"] = code;
  error["message"] = message;
  if (!details_json.empty()) {
    // A caller passing text that is not JSON is a bug, but an error answer must still go out:
    // keep the text as a JSON string rather than failing the response.
    error["details"] = ParseJsonOrString(details_json);
  }
  nlohmann::ordered_json body;
  body["error"] = std::move(error);
  // Messages may quote request bytes (a path, a header) that are not UTF-8: replace, not throw.
  return Response::Json(status, DumpJson(body));
}

std::string UrlEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    bool unreserved = (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') ||
                      u == '-' || u == '_' || u == '.' || u == '~';
    if (unreserved) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0x0F]);
    }
  }
  return out;
}

std::pair<std::string, std::string> SplitUrl(const std::string& url) {
  auto scheme = url.find("://");
  size_t from = scheme == std::string::npos ? 0 : scheme + 3;
  size_t slash = url.find_first_of("/?", from);
  if (slash == std::string::npos) return {url, "/"};
  std::string path = url.substr(slash);
  if (path[0] == '?') path = "/" + path;
  return {url.substr(0, slash), path};
}

void Router::Add(std::string method, std::string pattern, Handler handler) {
  CORTEX_CHECK_MSG(handler != nullptr, "route " + method + " " + pattern + " has no handler");
  std::vector<std::string> segments = SplitPath(pattern);
  CORTEX_CHECK_MSG(index_.emplace(RouteKey{method, pattern}, routes_.size()).second,
                   "route " + method + " " + pattern + " is registered twice");
  routes_.push_back(
      Route{std::move(method), std::move(pattern), std::move(segments), std::move(handler)});
}

// Whether `route` matches a path split into `segments`.
bool Router::Matches(const Route& route, const std::vector<std::string>& segments) {
  if (route.segments.size() != segments.size()) return false;
  for (size_t i = 0; i < segments.size(); ++i) {
    const std::string& want = route.segments[i];
    if (IsCapture(want) ? segments[i].empty() : want != segments[i]) return false;
  }
  return true;
}

const Router::Route* Router::Best(std::string_view method,
                                  const std::vector<std::string>& segments) const {
  // Where two patterns match the same path, the one whose first differing segment is literal
  // wins ("/runs/latest" over "/runs/{id}"); between equals, the one registered first.
  auto more_specific = [](const Route& a, const Route& b) {
    for (size_t i = 0; i < a.segments.size(); ++i) {
      bool a_literal = !IsCapture(a.segments[i]);
      bool b_literal = !IsCapture(b.segments[i]);
      if (a_literal != b_literal) return a_literal;
    }
    return false;
  };
  // HEAD is answered by the GET route when there is no HEAD route (the server sends no body).
  auto best_for = [&](std::string_view m) -> const Route* {
    const Route* best = nullptr;
    for (const Route& route : routes_) {
      if (route.method != m || !Matches(route, segments)) continue;
      if (best == nullptr || more_specific(route, *best)) best = &route;
    }
    return best;
  };
  const Route* best = best_for(method);
  if (best == nullptr && method == "HEAD") best = best_for("GET");
  return best;
}

const Router::Route* Router::Find(const RouteKey& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &routes_[it->second];
}

void Router::Resolve(Request& request) const {
  const std::vector<std::string> segments = SplitPath(request.path);
  const Route* best = Best(request.method, segments);
  request.path_params.clear();
  request.route.reset();
  if (best == nullptr) return;
  request.route = RouteKey{best->method, best->pattern};
  for (size_t i = 0; i < segments.size(); ++i) {
    if (IsCapture(best->segments[i])) {
      request.path_params[std::string(CaptureName(best->segments[i]))] = segments[i];
    }
  }
}

std::vector<RouteKey> Router::List() const {
  std::vector<RouteKey> out;
  for (const Route& r : routes_) out.push_back({r.method, r.pattern});
  return out;
}

Response Router::Dispatch(Request& request) const {
  Resolve(request);
  return Run(request);
}

Response Router::Run(Request& request) const {
  if (request.route) {
    const Route* route = Find(*request.route);
    CORTEX_CHECK_MSG(route != nullptr, "request resolved to an unregistered route");
    return route->handler(request);
  }

  const std::vector<std::string> segments = SplitPath(request.path);
  auto matches = [&](const Route& route) { return Matches(route, segments); };
  std::set<std::string> allowed;
  for (const Route& route : routes_) {
    if (matches(route)) allowed.insert(route.method);
  }
  if (allowed.empty()) {
    return ErrorResponse(404, "not_found", "no route for " + request.method + " " + request.path);
  }
  if (allowed.count("GET") > 0) allowed.insert("HEAD");
  std::string allow;
  for (const std::string& method : allowed) {
    if (!allow.empty()) allow += ", ";
    allow += method;
  }
  Response response = ErrorResponse(405, "method_not_allowed",
                                    "method " + request.method + " is not allowed on " +
                                        request.path + " (allowed: " + allow + ")");
  response.headers.emplace_back("Allow", allow);
  return response;
}

}  // namespace cortex::http
