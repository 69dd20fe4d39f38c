#include "cli/client.h"

#include <cstdlib>
#include "common/json.h"

#include <sstream>

namespace cortex::cli {

namespace {

constexpr std::string_view kRequestFile = "<request>";
constexpr size_t kMaxShownBody = 300;

std::string ReplaceAll(std::string text, std::string_view from, std::string_view to) {
  if (from.empty() || to.empty()) return text;
  size_t pos = 0;
  while ((pos = text.find(from, pos)) != std::string::npos) {
    text.replace(pos, from.size(), to);
    pos += to.size();
  }
  return text;
}

std::string StringField(const Json& object, const char* name) {
  auto it = object.find(name);
  if (it == object.end()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

bool IsDiagnosticList(const Json& v) {
  if (!v.is_array()) return false;
  for (const Json& d : v) {
    if (!d.is_object() || !d.contains("message")) return false;
  }
  return true;
}

}  // namespace

std::string FormatDiagnostic(const Json& d, std::string_view request_name) {
  if (!d.is_object()) return DumpJson(d);
  std::string file = StringField(d, "file");
  if (file == kRequestFile && !request_name.empty()) file = request_name;
  std::string out = file;
  if (auto line = d.find("line"); line != d.end() && line->is_number_integer()) {
    out += ":" + std::to_string(line->get<int64_t>());
    if (auto col = d.find("column"); col != d.end() && col->is_number_integer()) {
      out += ":" + std::to_string(col->get<int64_t>());
    }
  }
  std::string severity = StringField(d, "severity");
  out += ": " + (severity.empty() ? std::string("error") : severity) + ": ";
  out += ReplaceAll(StringField(d, "message"), kRequestFile, request_name);
  return out;
}

std::string FormatApiError(int status, std::string_view body, std::string_view request_name) {
  Json j = Json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("error") || !j["error"].is_object()) {
    std::string shown = Truncate(body, kMaxShownBody);
    return "error: HTTP " + std::to_string(status) + (shown.empty() ? "" : ": " + shown) + "\n";
  }
  const Json& error = j["error"];
  std::string message = ReplaceAll(StringField(error, "message"), kRequestFile, request_name);
  if (message.empty())
    message = "HTTP " + std::to_string(status) + " " + StringField(error, "code");
  std::string lines;
  Json details = error.contains("details") ? error["details"] : Json();
  Json rest = Json::object();
  if (details.is_object()) {
    for (const auto& [key, value] : details.items()) {
      if (IsDiagnosticList(value)) {
        for (const Json& d : value) lines += FormatDiagnostic(d, request_name) + "\n";
      } else {
        rest[key] = value;
      }
    }
  } else if (!details.is_null()) {
    rest = details;
  }
  std::ostringstream out;
  out << "error: " << message << "\n" << lines;
  if (!rest.is_null() && !rest.empty()) PrintIndented(out, ToYaml(rest), "  ");
  return out.str();
}

std::string UnreachableMessage(std::string_view server) {
  return "error: cannot reach the Cortex server at " + std::string(server) +
         " (is `cortex serve` running?)";
}

std::string PathSegment(std::string_view s) { return http::UrlEncode(s); }

http::ClientOptions ClientOptionsWithToken(const Context& ctx, http::ClientOptions options) {
  if (!ctx.token.empty()) options.headers.emplace("Authorization", "Bearer " + ctx.token);
  if (!ctx.ca_file.empty()) options.ca_file = ctx.ca_file;
  return options;
}

ApiClient::ApiClient(const Context& ctx, std::ostream& err, http::ClientOptions options)
    : server_(ctx.server), err_(err), client_(server_, ClientOptionsWithToken(ctx, options)) {}

void ApiClient::Fail(int exit_code) {
  // Unreachable outranks an API error, which outranks bad usage: the worst failure wins.
  auto rank = [](int code) {
    return code == kExitUnreachable ? 3 : code == kExitApiError ? 2 : code == kExitUsage ? 1 : 0;
  };
  if (rank(exit_code) > rank(exit_code_)) exit_code_ = exit_code;
}

void ApiClient::ReportTransport(const Status& status) {
  if (status.code() != StatusCode::kUnavailable) {
    // The client refused the URL itself (not http://host:port).
    err_ << "error: --server: " << status.message() << "\n";
    Fail(kExitUsage);
    return;
  }
  err_ << UnreachableMessage(server_) << "\n";
  // The transport's reason, without its own "cannot reach URL: " prefix.
  std::string reason = status.message();
  std::string prefix = "cannot reach " + server_ + ": ";
  if (reason.starts_with(prefix)) reason = reason.substr(prefix.size());
  if (!reason.empty()) err_ << "  (transport error: " << reason << ")\n";
  Fail(kExitUnreachable);
}

std::optional<http::ClientResponse> ApiClient::Check(Result<http::ClientResponse> result) {
  if (!result.ok()) {
    ReportTransport(result.status());
    return std::nullopt;
  }
  if (result->status < 200 || result->status > 299) {
    err_ << FormatApiError(result->status, result->body, request_name_);
    Fail(kExitApiError);
    return std::nullopt;
  }
  return std::move(result).value();
}

std::optional<Json> ApiClient::ParseJson(std::optional<http::ClientResponse> response) {
  if (!response) return std::nullopt;
  Json j = Json::parse(response->body, nullptr, false);
  if (j.is_discarded()) {
    err_ << "error: the server at " << server_
         << " answered with something that is not JSON: " << Truncate(response->body, kMaxShownBody)
         << "\n";
    Fail(kExitApiError);
    return std::nullopt;
  }
  return j;
}

std::optional<http::ClientResponse> ApiClient::Get(const std::string& path_and_query) {
  return Check(client_.Get(path_and_query));
}

std::optional<http::ClientResponse> ApiClient::Post(const std::string& path_and_query,
                                                    std::string body, std::string content_type) {
  return Check(client_.Post(path_and_query, std::move(body), std::move(content_type)));
}

std::optional<http::ClientResponse> ApiClient::Delete(const std::string& path_and_query) {
  return Check(client_.Delete(path_and_query));
}

std::optional<Json> ApiClient::GetJson(const std::string& path_and_query) {
  return ParseJson(Get(path_and_query));
}

std::optional<Json> ApiClient::PostJson(const std::string& path_and_query, std::string body,
                                        std::string content_type) {
  return ParseJson(Post(path_and_query, std::move(body), std::move(content_type)));
}

std::optional<Json> ApiClient::DeleteJson(const std::string& path_and_query) {
  return ParseJson(Delete(path_and_query));
}

bool ApiClient::Stream(const std::string& path_and_query,
                       const std::function<bool(const http::SseEvent&)>& on_event) {
  return StreamStatus(client_.Stream(path_and_query, on_event));
}

bool ApiClient::StreamPost(const std::string& path_and_query, const std::string& json_body,
                           const std::function<bool(const http::SseEvent&)>& on_event) {
  return StreamStatus(client_.StreamPost(path_and_query, json_body, on_event));
}

bool ApiClient::StreamStatus(const Status& st) {
  if (st.ok()) return true;
  // http::Client reports an HTTP error answer as a Status whose message is
  // "HTTP <status>: <the API's message>"; anything else is the transport's.
  const std::string& message = st.message();
  if (message.starts_with("HTTP ")) {
    size_t colon = message.find(": ");
    err_ << "error: " << (colon == std::string::npos ? message : message.substr(colon + 2)) << "\n";
    Fail(kExitApiError);
  } else if (st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kInvalidArgument) {
    ReportTransport(st);
  } else {
    err_ << "error: " << message << "\n";
    Fail(kExitApiError);
  }
  return false;
}

std::string QueryString(std::initializer_list<std::pair<const char*, std::string>> pairs) {
  std::string query;
  for (const auto& [key, value] : pairs) {
    if (value.empty()) continue;
    query += (query.empty() ? "?" : "&") + std::string(key) + "=" + http::UrlEncode(value);
  }
  return query;
}

}  // namespace cortex::cli
