// The server's wire format without sockets (see wire.h).
#include "http/wire.h"

#include <strings.h>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange without it
//
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace cortex::http {
namespace {

namespace bhttp = boost::beast::http;

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX escapes (malformed ones are kept as they are) and, in query strings, '+' as space.
std::string PercentDecode(std::string_view s, bool plus_as_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int hi = HexValue(s[i + 1]);
      int lo = HexValue(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_as_space && s[i] == '+' ? ' ' : s[i]);
  }
  return out;
}

// The decoded parameters of a query string ("a=1&b=x%20y").
std::multimap<std::string, std::string> ParseQuery(std::string_view rest) {
  std::multimap<std::string, std::string> query;
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::string_view key = pair.substr(0, eq);
    std::string_view value =
        eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    query.emplace(PercentDecode(key, true), PercentDecode(value, true));
  }
  return query;
}

// Removes CR and LF so a header, an event name or an id cannot break the framing.
void AppendOneLine(std::string& out, std::string_view text) {
  for (char c : text) out.push_back(c == '\r' || c == '\n' ? ' ' : c);
}

// Calls fn for each line of text, splitting on "\r\n", "\n" and "\r" as SSE readers do.
template <typename Fn>
void ForEachLine(std::string_view text, Fn fn) {
  while (true) {
    size_t end = text.find_first_of("\r\n");
    fn(text.substr(0, end));
    if (end == std::string_view::npos) return;
    size_t skip = (text[end] == '\r' && end + 1 < text.size() && text[end + 1] == '\n') ? 2 : 1;
    text.remove_prefix(end + skip);
  }
}

bool IsToken(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7F || c == ':') return false;
  }
  return true;
}

void AppendStatusLine(std::string& out, int status) {
  out += "HTTP/1.1 ";
  out += std::to_string(status);
  out += ' ';
  auto reason = bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(status)));
  if (reason.empty() || reason == "<unknown-status>") {
    out += "Unknown";
  } else {
    out.append(reason.data(), reason.size());
  }
  out += "\r\n";
}

void AppendHeader(std::string& out, std::string_view name, std::string_view value) {
  if (!IsToken(name)) return;
  out.append(name);
  out += ": ";
  AppendOneLine(out, value);
  out += "\r\n";
}

bool Is(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// Headers the server frames itself; a handler's own are dropped.
bool IsFramingHeader(std::string_view name) {
  return Is(name, "Content-Length") || Is(name, "Transfer-Encoding") || Is(name, "Connection");
}

}  // namespace

BuiltRequest BuildRequest(RequestHead head, const ServerOptions& options) {
  BuiltRequest built;
  if (head.headers.size() > options.max_header_count) {
    built.refusal = ErrorResponse(
        431, "request_header_fields_too_large",
        "the request has more than " + std::to_string(options.max_header_count) + " headers");
    return built;
  }
  if (head.target.size() > options.max_target_bytes) {
    built.refusal = ErrorResponse(
        414, "uri_too_long",
        "request URI is longer than " + std::to_string(options.max_target_bytes) + " bytes");
    return built;
  }
  std::string_view target = head.target;
  // absolute-form ("http://host/p?q", sent to proxies): only its path and query matter here.
  for (std::string_view scheme : {"http://", "https://"}) {
    if (target.size() >= scheme.size() && Is(target.substr(0, scheme.size()), scheme)) {
      size_t slash = target.find('/', scheme.size());
      target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
  }
  if (size_t hash = target.find('#'); hash != std::string_view::npos)
    target.remove_suffix(target.size() - hash);
  if (target.empty() || (target.front() != '/' && target != "*")) {
    built.refusal = ErrorResponse(400, "bad_request", "malformed HTTP request: bad target");
    return built;
  }
  auto request = std::make_shared<Request>();
  request->method = std::move(head.method);
  const size_t mark = target.find('?');
  request->path = PercentDecode(target.substr(0, mark), false);
  if (mark != std::string_view::npos) request->query = ParseQuery(target.substr(mark + 1));
  request->remote_addr = std::move(head.remote_addr);
  for (auto& [name, value] : head.headers) {
    if (Is(name, "Expect") && Is(value, "100-continue")) built.expects_100 = true;
    request->headers.emplace(std::move(name), std::move(value));
  }
  built.request = std::move(request);
  return built;
}

std::string SerializeResponse(const Response& response, bool head, bool close) {
  const int status = response.status;
  const bool bodyless = (status >= 100 && status < 200) || status == 204 || status == 304;
  std::string out;
  out.reserve(128 + response.headers.size() * 48 + (head ? 0 : response.body.size()));
  AppendStatusLine(out, status);
  for (const auto& [name, value] : response.headers) {
    if (!IsFramingHeader(name)) AppendHeader(out, name, value);
  }
  if (!bodyless) {
    if (!response.content_type.empty()) AppendHeader(out, "Content-Type", response.content_type);
    out += "Content-Length: ";
    out += std::to_string(response.body.size());
    out += "\r\n";
  }
  if (close) out += "Connection: close\r\n";
  out += "\r\n";
  if (!head && !bodyless) out += response.body;
  return out;
}

std::string SerializeStreamHead(const Response& response) {
  std::string out;
  AppendStatusLine(out, response.status);
  for (const auto& [name, value] : response.headers) {
    if (!IsFramingHeader(name)) AppendHeader(out, name, value);
  }
  out +=
      "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: "
      "no\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
  return out;
}

std::string FormatSseEvent(std::string_view event, std::string_view data, std::string_view id) {
  std::string frame;
  frame.reserve(data.size() + event.size() + id.size() + 32);
  if (!event.empty()) {
    frame += "event: ";
    AppendOneLine(frame, event);
    frame += '\n';
  }
  if (!id.empty()) {
    frame += "id: ";
    AppendOneLine(frame, id);
    frame += '\n';
  }
  ForEachLine(data, [&](std::string_view line) {
    frame += "data: ";
    frame += line;
    frame += '\n';
  });
  frame += '\n';
  return frame;
}

std::string FormatSseComment(std::string_view text) {
  std::string frame;
  ForEachLine(text, [&](std::string_view line) {
    frame += ": ";
    frame += line;
    frame += '\n';
  });
  return frame;
}

std::string Chunk(std::string_view bytes) {
  char size[20];
  int n = std::snprintf(size, sizeof size, "%zx\r\n", bytes.size());
  std::string out;
  out.reserve(bytes.size() + static_cast<size_t>(n) + 2);
  out.append(size, static_cast<size_t>(n));
  out.append(bytes);
  out += "\r\n";
  return out;
}

bool AsksToClose(const std::vector<std::pair<std::string, std::string>>& headers) {
  for (const auto& [name, value] : headers) {
    if (Is(name, "Connection") && Is(value, "close")) return true;
  }
  return false;
}

ParsedBytes ParseRequestBytes(std::string_view bytes, const ServerOptions& options) {
  ParsedBytes parsed;
  bhttp::request_parser<bhttp::string_body> parser;
  parser.header_limit(static_cast<std::uint32_t>(options.max_header_bytes));
  parser.body_limit(options.max_body_bytes);
  parser.eager(true);
  boost::beast::error_code ec;
  size_t used = 0;
  while (used < bytes.size() && !parser.is_done()) {
    size_t n = parser.put(boost::asio::buffer(bytes.data() + used, bytes.size() - used), ec);
    if (ec == bhttp::error::need_more) break;
    if (ec) break;
    if (n == 0) break;
    used += n;
  }
  if (ec && ec != bhttp::error::need_more) {
    if (ec == bhttp::error::header_limit) {
      parsed.built.refusal = ErrorResponse(431, "request_header_fields_too_large", ec.message());
    } else if (ec == bhttp::error::body_limit) {
      parsed.built.refusal = ErrorResponse(413, "payload_too_large", ec.message());
    } else {
      parsed.built.refusal = ErrorResponse(400, "bad_request", ec.message());
    }
    return parsed;
  }
  if (!parser.is_header_done()) return parsed;
  const auto& message = parser.get();
  RequestHead head;
  head.method = std::string(message.method_string());
  head.target = std::string(message.target());
  for (const auto& field : message) {
    head.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  parsed.built = BuildRequest(std::move(head), options);
  parsed.complete = parser.is_done();
  if (parsed.complete && parsed.built.ok()) parsed.built.request->body = parser.get().body();
  return parsed;
}

}  // namespace cortex::http
