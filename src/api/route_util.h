// Small helpers shared by the API's route files.
#pragma once

#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/json.h"
#include "common/status.h"
#include "http/http.h"

namespace cortex::api {

// A JSON answer (invalid UTF-8 in strings is replaced, never an exception).
inline http::Response Ok(const nlohmann::ordered_json& body, int status = 200) {
  return http::Response::Json(status, DumpJson(body));
}

// The caller's scope (Request::may_act_on): PermissionDenied when it may not act on the manifest
// `name` of `kind` ("tool", "workflow"...); Ok when it may, or has no scope.
inline Status MayActOn(const http::Request& req, std::string_view kind, std::string_view name) {
  return req.may_act_on ? req.may_act_on(kind, name) : Status::Ok();
}

// The client asked for server-sent events.
inline bool WantsEvents(const http::Request& req) {
  auto accept = req.Header("Accept");
  return accept && accept->find("text/event-stream") != std::string::npos;
}

// "true", "1", "yes" (a query flag).
inline bool IsTrue(const std::optional<std::string>& v) {
  return v && (*v == "true" || *v == "1" || *v == "yes");
}

// "30", "30s", "500ms", "2m" -> milliseconds (at most an hour).
inline std::optional<std::chrono::milliseconds> ParseWaitTimeout(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0 || i > 7) return std::nullopt;
  int64_t n = std::stoll(text.substr(0, i));
  std::string unit = text.substr(i);
  int64_t ms = unit.empty() || unit == "s" ? n * 1000
               : unit == "ms"              ? n
               : unit == "m"               ? n * 60000
                                           : -1;
  if (ms < 0 || ms > 3600000) return std::nullopt;
  return std::chrono::milliseconds(ms);
}

// An integer from a query parameter or header: `fallback` when absent; InvalidArgument naming
// `name` when it is not a plain decimal integer from `lo` to `hi`.
inline Result<int64_t> IntParam(const std::optional<std::string>& v, const std::string& name,
                                int64_t lo, int64_t hi, int64_t fallback) {
  if (!v) return fallback;
  int64_t n = 0;
  const char* end = v->data() + v->size();
  auto [ptr, ec] = std::from_chars(v->data(), end, n);
  if (v->empty() || ec != std::errc() || ptr != end || n < lo || n > hi) {
    return InvalidArgumentError("'" + name + "' must be an integer from " + std::to_string(lo) +
                                " to " + std::to_string(hi));
  }
  return n;
}

// The request's body as a JSON object ({} when empty); InvalidArgument otherwise.
inline Result<nlohmann::ordered_json> BodyObject(const http::Request& req) {
  if (req.body.empty()) return nlohmann::ordered_json::object();
  CORTEX_ASSIGN_OR_RETURN(auto body, ParseJson(req.body));
  if (!body.is_object()) return InvalidArgumentError("the body must be a JSON object");
  return body;
}

}  // namespace cortex::api
