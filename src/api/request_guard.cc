#include "api/request_guard.h"

#include <algorithm>
#include <cctype>

namespace cortex::api {

namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool Contains(const std::vector<std::string>& list, std::string_view value) {
  return std::any_of(list.begin(), list.end(),
                     [&](const std::string& item) { return item == "*" || Lower(item) == value; });
}

// "example.com:8080" -> "example.com"; "[::1]:8080" -> "::1". Lower case.
std::string HostName(std::string_view host) {
  if (host.starts_with("[")) {
    size_t end = host.find(']');
    return Lower(host.substr(1, end == std::string_view::npos ? host.size() - 1 : end - 1));
  }
  size_t colon = host.rfind(':');
  if (colon != std::string_view::npos && host.find(':') == colon) host = host.substr(0, colon);
  return Lower(host);
}

bool IsIpLiteral(std::string_view name) {
  if (name.empty()) return false;
  if (name.find(':') != std::string_view::npos) {  // IPv6 (brackets already removed)
    return std::all_of(name.begin(), name.end(), [](char c) {
      return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
    });
  }
  int dots = 0;
  for (char c : name) {
    if (c == '.') {
      ++dots;
    } else if (!std::isdigit(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return dots == 3;
}

bool HostAllowed(const GuardOptions& options, std::string_view host_header) {
  std::string name = HostName(host_header);
  if (name.ends_with(".")) name.pop_back();  // "localhost." is localhost
  if (IsIpLiteral(name) || name == "localhost" || name == Lower(options.listen_host)) return true;
  return Contains(options.allowed_hosts, name);
}

bool IsWrite(std::string_view method) {
  return method == "POST" || method == "PUT" || method == "PATCH" || method == "DELETE";
}

// The media type without parameters, lower case: "application/json; charset=utf-8" -> ...json.
std::string MediaType(std::string_view content_type) {
  size_t semi = content_type.find(';');
  std::string_view type = content_type.substr(0, semi);
  while (!type.empty() && std::isspace(static_cast<unsigned char>(type.back()))) {
    type.remove_suffix(1);
  }
  while (!type.empty() && std::isspace(static_cast<unsigned char>(type.front()))) {
    type.remove_prefix(1);
  }
  return Lower(type);
}

bool AcceptedBodyType(std::string_view type) {
  return type == "application/json" ||
         (type.starts_with("application/") && type.ends_with("+json")) ||
         type == "application/yaml" || type == "application/x-yaml" || type == "text/yaml" ||
         type == "text/x-yaml" || type == "text/markdown";
}

bool HasBody(const http::Request& request) {
  if (auto length = request.Header("Content-Length")) return *length != "0";
  return request.Header("Transfer-Encoding").has_value();
}

}  // namespace

http::FilterResult CheckRequest(const GuardOptions& options, const http::Request& request) {
  http::FilterResult result;
  auto refuse = [&](int status, std::string_view code, std::string message) {
    result.refusal = http::ErrorResponse(status, code, message);
    return result;
  };

  auto host = request.Header("Host");
  if (host && !Contains(options.allowed_hosts, "*") && !HostAllowed(options, *host)) {
    return refuse(421, "misdirected_request",
                  "Host '" + *host +
                      "' does not name this server (add it to http.allowed_hosts to serve it)");
  }

  if (auto origin = request.Header("Origin")) {
    std::string o = Lower(*origin);
    while (o.ends_with("/")) o.pop_back();
    bool same_origin = host && (o == "http://" + Lower(*host) || o == "https://" + Lower(*host));
    if (!same_origin) {
      if (o == "null" || !Contains(options.allowed_origins, o)) {
        return refuse(403, "forbidden_origin",
                      "requests from origin '" + *origin +
                          "' are not allowed (add it to http.allowed_origins to allow them)");
      }
      result.headers.emplace_back("Access-Control-Allow-Origin", *origin);
      result.headers.emplace_back("Vary", "Origin");
      if (request.method == "OPTIONS" && request.Header("Access-Control-Request-Method")) {
        http::Response preflight;
        preflight.status = 204;
        preflight.content_type.clear();
        preflight.headers = result.headers;
        preflight.headers.emplace_back("Access-Control-Allow-Methods",
                                       "GET, POST, PUT, PATCH, DELETE, OPTIONS");
        preflight.headers.emplace_back("Access-Control-Allow-Headers",
                                       "Content-Type, Authorization, Accept, Last-Event-ID");
        preflight.headers.emplace_back("Access-Control-Max-Age", "600");
        result.refusal = std::move(preflight);  // answered here, not routed
        return result;
      }
    }
  }

  if (IsWrite(request.method) && HasBody(request)) {
    auto content_type = request.Header("Content-Type");
    std::string type = content_type ? MediaType(*content_type) : "";
    if (!AcceptedBodyType(type)) {
      return refuse(415, "unsupported_media_type",
                    (type.empty() ? std::string("a request body needs a Content-Type")
                                  : "Content-Type '" + type + "' is not accepted") +
                        ": send JSON with Content-Type: application/json (curl: --json, or -H "
                        "'Content-Type: application/json'); manifests may also be "
                        "application/yaml or text/markdown");
    }
  }
  return result;
}

http::Filter MakeRequestGuard(GuardOptions options) {
  return [options = std::move(options)](const http::Request& request) {
    return CheckRequest(options, request);
  };
}

}  // namespace cortex::api
