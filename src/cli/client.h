// What the HTTP verbs share: one call to the Cortex API, with failures printed the same way
// everywhere and turned into the CLI's exit codes.
//
//   0  success
//   1  the API answered with an error (4xx/5xx), or a verb's own check failed (`cortex errors`)
//   2  bad usage found by the verb itself (an unusable --server URL, `get all NAME`)
//   3  the server could not be reached
#pragma once

#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>

#include "cli/context.h"
#include "cli/output.h"
#include "http/http.h"

namespace cortex::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitApiError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;

// One diagnostic object of the API ({"severity","file","line","column","message"}) as
// "file:line:col: severity: message". A file named "<request>" (the body of a POST) is shown as
// `request_name` when that is not empty.
std::string FormatDiagnostic(const Json& diagnostic, std::string_view request_name = {});

// "?k1=v1&k2=v2" (URL-encoded) from the pairs whose value is not empty; "" when none is.
std::string QueryString(std::initializer_list<std::pair<const char*, std::string>> pairs);

// The lines shown for an API error answer: "error: <message>", then the details readably
// (diagnostics one per line, anything else as indented YAML). Bodies that are not the API's
// error shape are shown as "error: HTTP <status>: <start of the body>".
std::string FormatApiError(int status, std::string_view body, std::string_view request_name = {});

// The line shown when the server cannot be reached.
std::string UnreachableMessage(std::string_view server);

// A client of one Cortex server for one verb. Each call returns the answer when it is a 2xx;
// otherwise it prints why to `err` and returns nullopt, and exit_code() says which failure it
// was (the worst one so far, when a verb makes several calls).
// `options` with `Authorization: Bearer <ctx.token>` added when there is a token: the API key
// every verb sends to a server that needs one.
http::ClientOptions ClientOptionsWithToken(const Context& ctx, http::ClientOptions options = {});

class ApiClient {
 public:
  // Calls ctx.server, sending ctx.token, when there is one, as its bearer token.
  explicit ApiClient(const Context& ctx, std::ostream& err = std::cerr,
                     http::ClientOptions options = {});

  std::optional<http::ClientResponse> Get(const std::string& path_and_query);
  std::optional<http::ClientResponse> Post(const std::string& path_and_query, std::string body,
                                           std::string content_type);
  std::optional<http::ClientResponse> Delete(const std::string& path_and_query);

  // The same calls, with the answer parsed as JSON (a 2xx that is not JSON is an API error).
  std::optional<Json> GetJson(const std::string& path_and_query);
  std::optional<Json> PostJson(const std::string& path_and_query, std::string body,
                               std::string content_type = "application/json");
  std::optional<Json> DeleteJson(const std::string& path_and_query);

  // Follows a server-sent-events stream until on_event returns false or the server ends it.
  // False (after printing why) when the stream could not be opened or broke.
  bool Stream(const std::string& path_and_query,
              const std::function<bool(const http::SseEvent&)>& on_event);
  // The same, for a stream answered to a POST of a JSON body.
  bool StreamPost(const std::string& path_and_query, const std::string& json_body,
                  const std::function<bool(const http::SseEvent&)>& on_event);

  // Names the manifest sent in the next calls' bodies, shown in diagnostics instead of the
  // server's "<request>" (the file given to `apply -f`). Empty: leave "<request>".
  void set_request_name(std::string name) { request_name_ = std::move(name); }

  const std::string& server() const { return server_; }
  int exit_code() const { return exit_code_; }

 private:
  std::optional<http::ClientResponse> Check(Result<http::ClientResponse> result);
  std::optional<Json> ParseJson(std::optional<http::ClientResponse> response);
  void Fail(int exit_code);
  void ReportTransport(const Status& status);
  bool StreamStatus(const Status& status);  // a stream's end: true, or why it failed (printed)

  std::string server_;
  std::ostream& err_;
  http::Client client_;
  std::string request_name_;
  int exit_code_ = kExitOk;
};

// Percent-encodes one path segment (a kind or a name given on the command line).
std::string PathSegment(std::string_view s);

}  // namespace cortex::cli
