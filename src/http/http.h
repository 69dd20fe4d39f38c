// Cortex's own HTTP types: a small server with a router, server-sent events, and a client.
// This header is the only HTTP surface the rest of Cortex sees. The server is event-driven on
// Boost.Asio and Boost.Beast (http/server.cc, http/wire.cc); the client is cpp-httplib, included
// by exactly one file, http/httplib_adapter.cc.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace cortex::http {

// Header names compare case-insensitively.
struct CaseInsensitiveLess {
  bool operator()(std::string_view a, std::string_view b) const;
  using is_transparent = void;
};
using Headers = std::multimap<std::string, std::string, CaseInsensitiveLess>;

// A registered route: its method and pattern ("/workflows/{id}").
struct RouteKey {
  std::string method;
  std::string pattern;
  friend bool operator==(const RouteKey&, const RouteKey&) = default;
  friend auto operator<=>(const RouteKey&, const RouteKey&) = default;
};

struct Request {
  std::string method;                              // "GET", "POST", ...
  std::string path;                                // decoded path, without the query string
  std::map<std::string, std::string> path_params;  // from the route pattern's {placeholders}
  std::multimap<std::string, std::string> query;   // decoded query parameters
  Headers headers;
  std::string body;
  std::string remote_addr;
  // The registered route this request reaches, matched once by the server before its filter
  // runs (path_params filled too); nullopt when none matches (the router answers 404/405).
  std::optional<RouteKey> route;
  // The W3C trace context of this request's span, for the work it starts (set by the server's
  // filter; "" when none).
  std::string traceparent;
  // Set by the server's filter when the caller may act only on some manifests (a scoped key):
  // a handler that finds the manifest it acts on in the body asks this before acting, and
  // answers its error (PermissionDenied). nullptr: any manifest.
  std::function<Status(std::string_view kind, std::string_view name)> may_act_on;
  // The caller's role as the server's filter found it ("viewer", "operator", "admin"), for a
  // handler whose route admits several roles and decides per action (/mcp); "" when
  // authentication is off.
  std::string role;

  // First value of a header or query parameter, if present.
  std::optional<std::string> Header(std::string_view name) const;
  std::optional<std::string> Query(std::string_view name) const;
  // Path parameter by name; empty when absent.
  std::string PathParam(std::string_view name) const;
};

// Writes one server-sent-events stream. Send returns false once the client has gone away or the
// server is stopping: the producer must then return.
class SseWriter {
 public:
  virtual ~SseWriter() = default;
  // One event: "event: <event>\nid: <id>\ndata: <data line>...\n\n". Multi-line data is split
  // into several data: lines. Empty event/id are omitted.
  virtual bool Send(std::string_view event, std::string_view data, std::string_view id = {}) = 0;
  // A comment line (": text"), used as a keep-alive.
  virtual bool Comment(std::string_view text) = 0;
  // False once the client disconnected or the server is stopping.
  virtual bool IsOpen() const = 0;
};

// A stream that may go quiet (a slow tool, a paused run, an idle registry) sends a comment line
// once `every` has passed without anything sent, so clients and proxies do not take it for a dead
// server. The producer calls Sent() after each event and Tick() in its loop.
class SseKeepAlive {
 public:
  explicit SseKeepAlive(SseWriter& writer,
                        std::chrono::milliseconds every = std::chrono::seconds(15))
      : writer_(writer), every_(every), last_(std::chrono::steady_clock::now()) {}
  void Sent() { last_ = std::chrono::steady_clock::now(); }
  // False once the client is gone.
  bool Tick() {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < every_) return writer_.IsOpen();
    last_ = now;
    return writer_.Comment("keep-alive");
  }

 private:
  SseWriter& writer_;
  std::chrono::milliseconds every_;
  std::chrono::steady_clock::time_point last_;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // When set, the response is a text/event-stream: the function runs on a thread of its own and
  // the stream ends when it returns. It must return promptly once the writer reports !IsOpen():
  // a producer that waits should wait with a short timeout (e.g. 200 ms) and check again.
  std::function<void(SseWriter&)> sse;

  static Response Json(int status, std::string body);
  static Response Text(int status, std::string body, std::string content_type = "text/plain");
};

// The one JSON error shape of the API: {"error":{"code":..., "message":..., "details":...}}.
// `details_json` must be a JSON value (object, array, ...) or empty for none.
Response ErrorResponse(int status, std::string_view code, std::string_view message,
                       std::string_view details_json = {});

using Handler = std::function<Response(const Request&)>;

// What a Server's filter decides about a request, from its method, path and headers alone.
struct FilterResult {
  // When set, the request is answered with this and not routed; its body is not read and the
  // connection is closed after the answer.
  std::optional<Response> refusal;
  // Added to the routed request's answer (e.g. CORS headers).
  std::vector<std::pair<std::string, std::string>> headers;
  // Called with the request (its body read) and its answer once the answer is ready, before it is
  // written: refusals included (e.g. the audit log).
  std::function<void(const Request&, const Response&)> after;
};
// Runs on every request once its headers are read, before its body is (Request::body is empty).
// It may annotate the request for the handler (Request::traceparent).
using Filter = std::function<FilterResult(Request&)>;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0 picks a free port; see Server::port()
  // Workers that run filters and handlers. Connections do not hold a worker: idle keep-alive
  // connections, slow senders and open event streams wait on the I/O threads (and each stream's
  // producer on a thread of its own), so this bounds concurrent handlers, not connections.
  int threads = 64;
  // I/O threads that own the sockets (0 = one per core, at most four).
  int io_threads = 0;
  // Requests served on one keep-alive connection before it is closed, and how long an idle
  // keep-alive connection waits for its next request (0 = close after each answer).
  int keep_alive_max_count = 10000;
  std::chrono::seconds keep_alive_timeout{5};
  // A request's head, and then its body, must each arrive within read_timeout (a client that
  // sends a byte now and then is closed); an answer must be taken within write_timeout.
  std::chrono::seconds read_timeout{10};
  std::chrono::seconds write_timeout{10};
  size_t max_body_bytes = 8u << 20;
  // Past these a request is answered 431 (header bytes or count) or 414 (target).
  size_t max_header_bytes = 64u << 10;
  size_t max_header_count = 100;
  size_t max_target_bytes = 8192;
  // Open connections past this are closed as they are accepted; open event streams past
  // max_streams are answered 503.
  int max_connections = 10000;
  int max_streams = 4096;
  // TLS: when both are set (PEM files), the server speaks HTTPS only. A file that cannot be
  // read or a key that does not match the certificate fails Start() with a clear error.
  std::string tls_cert_file, tls_key_file;
};

// Matches "/a/{x}/b" style patterns. A path that matches a pattern under another method gets
// 405; a path that matches nothing gets 404; both as ErrorResponse JSON.
class Router {
 public:
  void Add(std::string method, std::string pattern, Handler handler);
  // Sets request.route and path_params to the route Dispatch will choose (HEAD falls back to
  // GET), or clears them when none matches.
  void Resolve(Request& request) const;
  // Resolve, then Run.
  Response Dispatch(Request& request) const;
  // Runs the handler of request.route as Resolve set it, or produces the 404/405 answer when
  // it is unset.
  Response Run(Request& request) const;
  std::vector<RouteKey> List() const;  // in registration order

 private:
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<std::string> segments;  // "{name}" segments capture
    Handler handler;
  };
  const Route* Find(const RouteKey& key) const;
  static bool Matches(const Route& route, const std::vector<std::string>& segments);
  const Route* Best(std::string_view method, const std::vector<std::string>& segments) const;
  std::vector<Route> routes_;
  std::map<RouteKey, size_t> index_;  // into routes_
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // Stops if running.
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Registers a route. Patterns are matched by segments; "{name}" captures one segment.
  void Handle(std::string method, std::string pattern, Handler handler);
  // Sets the filter every request passes first (before Start; one filter per server).
  void SetFilter(Filter filter);
  // The registered routes (a filter that decides by route reads Request::route).
  std::vector<RouteKey> Routes() const;

  // Answers one request the way a connection would (route, filter, handler, the filter's
  // observer), without a socket: for tests and fuzzers. The request's body is as given; an event
  // stream's producer is not run (Response::sse is returned as it is). Freezes the routes.
  Response Serve(Request request);

  // Binds and starts serving on a background thread. Returns once the socket is listening, or an
  // Unavailable error naming the address (e.g. port already in use).
  Status Start();
  // The bound port (useful with port 0). Valid after Start().
  int port() const;
  // Stops accepting, ends open SSE streams, waits for in-flight requests. Idempotent.
  void Stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds read_timeout{30000};
  Headers headers;  // sent with every request (e.g. Authorization)
  // https:// URLs: the CA certificates (PEM) the server's certificate must chain to; "" = the
  // system's. The certificate is always verified.
  std::string ca_file;
  // Get only: an answer whose body is larger than this (0 = no bound) or that takes longer than
  // `total_timeout` in all (0 = none; a server that drips bytes) is an error, not read further.
  size_t max_response_bytes = 0;
  std::chrono::milliseconds total_timeout{0};
};

struct ClientResponse {
  int status = 0;
  std::string body;
  Headers headers;
};

struct SseEvent {
  std::string event;  // "message" when the stream gave none
  std::string data;   // data lines joined with "\n"
  std::string id;
};

// A blocking HTTP/1.1 client for one base URL ("http://127.0.0.1:8080"). Transport failures
// (connection refused, timeout) are Unavailable errors; any HTTP status is a ClientResponse.
class Client {
 public:
  explicit Client(std::string base_url, ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Result<ClientResponse> Get(const std::string& path_and_query, const Headers& headers = {});
  Result<ClientResponse> Post(const std::string& path_and_query, std::string body,
                              std::string content_type = "application/json",
                              const Headers& headers = {});
  Result<ClientResponse> Put(const std::string& path_and_query, std::string body,
                             std::string content_type = "application/json");
  Result<ClientResponse> Delete(const std::string& path_and_query);
  // Reads a text/event-stream until on_event returns false or the server ends the stream.
  Status Stream(const std::string& path_and_query,
                const std::function<bool(const SseEvent&)>& on_event);
  // POSTs a JSON body and reads the answer as a text/event-stream, as Stream does.
  Status StreamPost(const std::string& path_and_query, const std::string& json_body,
                    const std::function<bool(const SseEvent&)>& on_event);
  // Any method: the answer's status and headers, and its body; an event-stream answer (2xx) is
  // handed to on_event as it arrives instead (its body is then empty). A transport failure, or an
  // event larger than 16 MiB, is an error.
  Result<ClientResponse> Send(const std::string& method, const std::string& path_and_query,
                              const std::string& body, const std::string& content_type,
                              const Headers& headers,
                              const std::function<bool(const SseEvent&)>& on_event);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Percent-encodes one path segment or query value.
std::string UrlEncode(std::string_view s);

// "http://host:port/a?b" -> {"http://host:port", "/a?b"}: a Client's base URL and the path and
// query to ask it for ("/" when there is none).
std::pair<std::string, std::string> SplitUrl(const std::string& url);

}  // namespace cortex::http
