// The HTTP/1.1 wire format as the server writes and reads it, with no sockets: what a parsed
// request head becomes, how an answer and an event stream are framed. Internal to the http
// module (server.cc) and its tests and fuzzer.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/http.h"

namespace cortex::http {

// A request head as the parser saw it.
struct RequestHead {
  std::string method;
  std::string target;  // as sent: "/a%20b?x=1"
  std::vector<std::pair<std::string, std::string>> headers;
  std::string remote_addr;
};

struct BuiltRequest {
  std::shared_ptr<Request> request;  // set when ok()
  std::optional<Response> refusal;   // the error answer otherwise (400, 414, 431)
  bool expects_100 = false;          // "Expect: 100-continue"
  bool ok() const { return !refusal; }
  const Response& error() const { return *refusal; }
};

// Checks a head against the limits (header count, target length) and decodes its path and query.
BuiltRequest BuildRequest(RequestHead head, const ServerOptions& options);

// "HTTP/1.1 200 OK\r\n...": status line, headers (CR and LF in names or values are dropped),
// Content-Type and Content-Length, "Connection: close" when `close`, and the body unless `head`.
std::string SerializeResponse(const Response& response, bool head, bool close);
// The head of an event stream's answer (chunked, never kept alive).
std::string SerializeStreamHead(const Response& response);
// One event or comment in text/event-stream framing, and one chunk of a chunked body.
std::string FormatSseEvent(std::string_view event, std::string_view data, std::string_view id);
std::string FormatSseComment(std::string_view text);
std::string Chunk(std::string_view bytes);
// True when the handler's headers say "Connection: close".
bool AsksToClose(const std::vector<std::pair<std::string, std::string>>& headers);

// Parses bytes as one request the way the server does (Beast's parser with the options' limits,
// then BuildRequest), for the fuzzer and the tests. The refusal is set when the server would
// answer an error; `complete` says whether a whole request (body included) was read.
struct ParsedBytes {
  BuiltRequest built;
  bool complete = false;
};
ParsedBytes ParseRequestBytes(std::string_view bytes, const ServerOptions& options);

}  // namespace cortex::http
