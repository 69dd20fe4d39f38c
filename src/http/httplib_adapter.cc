// Server and Client on top of cpp-httplib. This is the only file in Cortex that includes
// <httplib.h>; everything above it sees http.h's own types.
//
// Debian's libcpp-httplib-dev 0.11.4 ships the *split* header (declarations only) and the
// implementation in libcpp-httplib.so, built with OpenSSL, zlib and brotli support. The
// CPPHTTPLIB_*_SUPPORT macros change the layout of httplib's classes, so this file is compiled
// with the package's pkg-config flags and linked against that library (see CMakeLists.txt).
//
// Notes on httplib 0.11.4 behaviour that shaped this file:
// - Every accepted connection runs on one worker of the task queue for its whole life: a
//   keep-alive connection holds its worker until it has been idle for keep_alive_timeout, an SSE
//   stream until the producer returns. Size ServerOptions::threads for concurrent connections.
// - An idle keep-alive connection does not notice stop(): it is closed only when its
//   keep_alive_timeout runs out, so Stop() can take up to keep_alive_timeout while a client holds
//   an idle connection open.
// - The default socket options set SO_REUSEPORT, which lets a second server bind a port that is
//   already in use; we replace them with SO_REUSEADDR only.
// - It listens with a backlog of 5; we raise it (kListenBacklog).
// - httplib::Server's constructor ignores SIGPIPE process-wide; Client does the same (below).
#include <httplib.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/fd.h"
#include "common/json.h"
#include "http/http.h"

namespace cortex::http {
namespace {

// Accepted connections waiting for a free worker, per worker. Past this the accept loop blocks,
// so the kernel's listen backlog pushes back on clients instead of this queue growing.
constexpr size_t kMaxPendingConnectionsPerWorker = 4;
// Pending TCP connections the kernel queues for accept(). httplib 0.11.4 listens with a backlog
// of 5, so a burst of more than a handful of connects sees dropped SYNs and ~1s retransmits.
constexpr int kListenBacklog = 1024;
// Client side: the largest single server-sent event (data plus a partial line) we buffer.
constexpr size_t kMaxSseEventBytes = 16u << 20;
// Client side: how much of a non-2xx stream answer we keep for the error message.
constexpr size_t kMaxErrorBodyBytes = 64u << 10;
// Matches any path, including ones with decoded newlines.
constexpr char kAnyPath[] = R"([\s\S]*)";

void LogLine(const std::string& line) {
  std::string clean = line;
  for (char& c : clean) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  std::fprintf(stderr, "cortex http: %s\n", clean.c_str());
}

std::string CurrentExceptionText() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

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

// The decoded parameters of a request target's query string ("/p?a=1&b=x%20y").
std::multimap<std::string, std::string> ParseQuery(std::string_view target) {
  std::multimap<std::string, std::string> query;
  size_t mark = target.find('?');
  if (mark == std::string_view::npos) return query;
  std::string_view rest = target.substr(mark + 1);
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

// httplib adds the peer and local addresses to the request headers; they are not the client's.
bool IsHttplibPseudoHeader(const std::string& name) {
  static const char* const kNames[] = {"REMOTE_ADDR", "REMOTE_PORT", "LOCAL_ADDR", "LOCAL_PORT"};
  for (const char* pseudo : kNames) {
    if (strcasecmp(name.c_str(), pseudo) == 0) return true;
  }
  return false;
}

// The JSON error for a status httplib produced itself (malformed request, body too large, ...).
Response ErrorForHttplibStatus(int status, const httplib::Request& request) {
  switch (status) {
    case 400:
      return ErrorResponse(status, "bad_request", "malformed HTTP request");
    case 404:
      return ErrorResponse(status, "not_found",
                           "no route for " + request.method + " " + request.path);
    case 413:
      return ErrorResponse(status, "payload_too_large", "request body is too large");
    case 414:
      return ErrorResponse(status, "uri_too_long", "request URI is too long");
    case 416:
      return ErrorResponse(status, "range_not_satisfiable", "invalid Range header");
    case 500:
      return ErrorResponse(status, "internal", "internal error");
    default:
      return ErrorResponse(status, "http_error", "HTTP status " + std::to_string(status));
  }
}

// A fixed set of workers for httplib's accepted connections with a bounded wait queue (httplib's
// own ThreadPool queues without limit).
class WorkerPool final : public httplib::TaskQueue {
 public:
  WorkerPool(size_t threads, size_t max_pending) : max_pending_(max_pending) {
    workers_.reserve(threads);
    for (size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~WorkerPool() override { shutdown(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void enqueue(std::function<void()> fn) override {
    std::unique_lock lock(mu_);
    not_full_.wait(lock, [&] { return pending_.size() < max_pending_ || shutdown_; });
    pending_.push_back(std::move(fn));
    not_empty_.notify_one();
  }

  // Runs what is queued (after stop() each queued connection closes at once), then joins.
  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      shutdown_ = true;
    }
    not_empty_.notify_all();
    not_full_.notify_all();
    for (std::thread& worker : workers_) {
      if (worker.joinable()) worker.join();
    }
  }

 private:
  void Work() {
    while (true) {
      std::function<void()> fn;
      {
        std::unique_lock lock(mu_);
        not_empty_.wait(lock, [&] { return !pending_.empty() || shutdown_; });
        if (pending_.empty()) return;
        fn = std::move(pending_.front());
        pending_.pop_front();
      }
      not_full_.notify_one();
      try {
        fn();
      } catch (...) {
        LogLine("connection task threw: " + CurrentExceptionText());
      }
    }
  }

  const size_t max_pending_;
  std::mutex mu_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<std::function<void()>> pending_;
  bool shutdown_ = false;
  std::vector<std::thread> workers_;
};

// Removes CR and LF so an event name or id cannot break the stream's framing.
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

// Writes events into httplib's chunked response. A failed write means the client went away.
class SinkSseWriter final : public SseWriter {
 public:
  SinkSseWriter(httplib::DataSink& sink, const std::atomic<bool>& stopping)
      : sink_(sink), stopping_(stopping) {}

  bool Send(std::string_view event, std::string_view data, std::string_view id) override {
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
    return Write(frame);
  }

  bool Comment(std::string_view text) override {
    std::string frame;
    ForEachLine(text, [&](std::string_view line) {
      frame += ": ";
      frame += line;
      frame += '\n';
    });
    return Write(frame);
  }

  // A disconnected client is noticed on the next write, so a producer that has nothing to send
  // should send a Comment now and then (well within the client's read timeout).
  bool IsOpen() const override { return !failed_ && !stopping_.load(); }

  bool failed() const { return failed_; }

 private:
  bool Write(const std::string& frame) {
    if (!IsOpen()) return false;
    if (!sink_.write(frame.data(), frame.size())) failed_ = true;
    return !failed_;
  }

  httplib::DataSink& sink_;
  const std::atomic<bool>& stopping_;
  bool failed_ = false;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Server

class Server::Impl {
 public:
  explicit Impl(ServerOptions options) : options_(std::move(options)), port_(options_.port) {
    if (!options_.tls_cert_file.empty() || !options_.tls_key_file.empty()) {
      server_ = std::make_unique<httplib::SSLServer>(options_.tls_cert_file.c_str(),
                                                     options_.tls_key_file.c_str());
    } else {
      server_ = std::make_unique<httplib::Server>();
    }
  }
  ~Impl() { Stop(); }

  void Handle(std::string method, std::string pattern, Handler handler) {
    std::lock_guard lock(lifecycle_mu_);
    // The router is read without a lock by the workers, so it is frozen once serving starts.
    CORTEX_CHECK_MSG(!started_, "Server::Handle called after Start: " + method + " " + pattern);
    router_.Add(std::move(method), std::move(pattern), std::move(handler));
  }

  void SetFilter(Filter filter) {
    std::lock_guard lock(lifecycle_mu_);
    CORTEX_CHECK_MSG(!started_, "Server::SetFilter called after Start");
    filter_ = std::move(filter);
  }

  Status Start() {
    std::lock_guard lock(lifecycle_mu_);
    if (started_) return FailedPreconditionError("server was already started");
    if (stopping_) return FailedPreconditionError("server was stopped");
    if (!configured_) {  // a Start that failed to bind may be retried
      Configure();
      configured_ = true;
    }

    const std::string address = options_.host + ":" + std::to_string(options_.port);
    if (!server_->is_valid()) {
      return InvalidArgumentError(
          "cannot serve TLS on " + address + ": the certificate (" + options_.tls_cert_file +
          ") or key (" + options_.tls_key_file +
          ") cannot be read, is not PEM, or the key does not match the certificate");
    }
    errno = 0;
    int port = -1;
    if (options_.port == 0) {
      port = server_->bind_to_any_port(options_.host);
    } else if (server_->bind_to_port(options_.host, options_.port)) {
      port = options_.port;
    }
    if (port < 0) {
      // httplib reports only failure; errno still holds bind()'s (or getaddrinfo's) reason.
      int err = errno;
      return UnavailableError("cannot listen on " + address + ": " +
                              (err != 0 ? ErrnoText(err) : "cannot bind the address"));
    }
    port_ = port;
    started_ = true;
    // listen() again on a listening socket only changes its backlog (see kListenBacklog).
    if (listen_socket_ >= 0 && ::listen(listen_socket_, kListenBacklog) != 0) {
      LogLine("cannot raise the listen backlog: " + ErrnoText(errno));
    }

    thread_ = std::thread([this] {
      if (!server_->listen_after_bind()) LogLine("accept loop ended with an error");
      std::lock_guard ready_lock(ready_mu_);
      listen_ended_ = true;
      ready_cv_.notify_all();
    });
    // httplib marks itself running and then creates the task queue (our factory signals), so
    // once this wait ends, stop() will reach the accept loop.
    std::unique_lock ready_lock(ready_mu_);
    ready_cv_.wait(ready_lock, [&] { return listening_ || listen_ended_; });
    if (!listening_)
      return UnavailableError("cannot listen on " + address + ": accept loop failed");
    return Status::Ok();
  }

  int port() const { return port_.load(); }

  // Must not be called from a handler or SSE producer: it waits for them.
  void Stop() {
    std::lock_guard lock(lifecycle_mu_);
    // Every SseWriter sees IsOpen() == false from here on; producers return and their streams
    // end, which frees their workers.
    stopping_ = true;
    if (thread_.joinable()) {
      server_->stop();  // closes the listening socket; the accept loop ends and joins the workers
      thread_.join();
    }
  }

 private:
  void Configure() {
    const size_t threads = static_cast<size_t>(std::max(1, options_.threads));
    server_->new_task_queue = [this, threads]() -> httplib::TaskQueue* {
      auto* pool = new WorkerPool(threads, threads * kMaxPendingConnectionsPerWorker);
      std::lock_guard ready_lock(ready_mu_);
      listening_ = true;
      ready_cv_.notify_all();
      return pool;
    };
    // Small request/response exchanges: Nagle's algorithm costs ~100x in throughput here.
    server_->set_tcp_nodelay(true);
    server_->set_socket_options([this](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
      listen_socket_ = sock;  // the last socket tried is the one that gets bound
    });
    server_->set_keep_alive_max_count(
        static_cast<size_t>(std::max(1, options_.keep_alive_max_count)));
    server_->set_keep_alive_timeout(static_cast<time_t>(options_.keep_alive_timeout.count()));
    server_->set_read_timeout(options_.read_timeout);
    server_->set_write_timeout(options_.write_timeout);
    server_->set_payload_max_length(options_.max_body_bytes);

    auto without_body = [this](const httplib::Request& req, httplib::Response& res) {
      Serve(req, res, nullptr);
    };
    auto with_body = [this](const httplib::Request& req, httplib::Response& res,
                            const httplib::ContentReader& reader) { Serve(req, res, &reader); };
    // GET also answers HEAD in httplib; the router maps HEAD to the GET route.
    server_->Get(kAnyPath, without_body);
    server_->Options(kAnyPath, without_body);
    server_->Post(kAnyPath, with_body);
    server_->Put(kAnyPath, with_body);
    server_->Patch(kAnyPath, with_body);
    server_->Delete(kAnyPath, with_body);

    // Statuses httplib answers by itself (400, 413, 414, 404 for methods we do not route, ...)
    // get our JSON body. Our own answers already carry a Content-Type and are left alone.
    server_->set_error_handler(httplib::Server::HandlerWithResponse(
        [](const httplib::Request& req, httplib::Response& res) {
          if (res.has_header("Content-Type") || res.content_provider_) {
            return httplib::Server::HandlerResponse::Unhandled;
          }
          Response error = ErrorForHttplibStatus(res.status, req);
          res.body = std::move(error.body);
          res.set_header("Content-Type", error.content_type);
          return httplib::Server::HandlerResponse::Handled;
        }));
    // The backstop for anything that escapes Serve's own handling.
    server_->set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unknown exception";
          try {
            std::rethrow_exception(ep);
          } catch (...) {
            what = CurrentExceptionText();
          }
          LogLine(req.method + " " + req.path + ": exception in the HTTP layer: " + what);
          res = httplib::Response();
          res.status = 500;
          Response error = ErrorResponse(500, "internal", "internal error");
          res.body = std::move(error.body);
          res.set_header("Content-Type", error.content_type);
        });
  }

  // Reads the request body into `body`, bounded by max_body_bytes. Returns the error answer when
  // the body cannot be read or is too large.
  std::optional<Response> ReadBody(const httplib::Request& req, httplib::Response& res,
                                   const httplib::ContentReader& reader, std::string& body) {
    const size_t limit = options_.max_body_bytes;
    bool too_large = false;
    bool ok = false;
    if (!req.has_header("Content-Length") && !req.has_header("Transfer-Encoding")) {
      // No body framing: by HTTP/1.1 the body is empty (e.g. `curl -X POST` without -d).
      return std::nullopt;
    }
    if (req.is_multipart_form_data()) {
      // Not an API format of ours; drain it (bounded) so the connection stays in sync.
      size_t seen = 0;
      ok = reader([](const httplib::MultipartFormData&) { return true; },
                  [&](const char*, size_t n) {
                    seen += n;
                    too_large = seen > limit;
                    return !too_large;
                  });
      if (ok) {
        return ErrorResponse(415, "unsupported_media_type",
                             "multipart/form-data request bodies are not supported");
      }
    } else {
      // httplib checks Content-Length against the payload limit itself (answering 413); this
      // bound also covers chunked bodies, which it would otherwise read without limit.
      ok = reader([&](const char* data, size_t n) {
        if (n > limit - body.size()) {
          too_large = true;
          return false;
        }
        body.append(data, n);
        return true;
      });
    }
    if (too_large || res.status == 413) {
      return ErrorResponse(413, "payload_too_large",
                           "request body is larger than " + std::to_string(limit) + " bytes");
    }
    if (!ok) return ErrorResponse(400, "bad_request", "cannot read the request body");
    return std::nullopt;
  }

  void Serve(const httplib::Request& req, httplib::Response& res,
             const httplib::ContentReader* reader) {
    // Heap-allocated and kept alive by an SSE producer, so a producer that captured the request
    // by reference stays valid while it streams.
    auto request = std::make_shared<Request>();
    request->method = req.method;
    request->path = req.path;  // httplib decoded it (without turning '+' into a space)
    request->query = ParseQuery(req.target);
    request->remote_addr = req.remote_addr;
    for (const auto& [name, value] : req.headers) {
      if (!IsHttplibPseudoHeader(name)) request->headers.emplace(name, value);
    }

    router_.Resolve(*request);  // once: the filter and the dispatch share it

    Response response;
    FilterResult filtered;
    if (filter_) {
      try {
        filtered = filter_(*request);
      } catch (...) {
        LogLine(req.method + " " + req.path + ": request filter threw: " + CurrentExceptionText());
        filtered.refusal = ErrorResponse(500, "internal", "internal error");
      }
    }
    auto after = [&] {
      if (!filtered.after) return;
      try {
        filtered.after(*request, response);
      } catch (...) {
        LogLine(req.method + " " + req.path +
                ": request observer threw: " + CurrentExceptionText());
      }
    };
    if (filtered.refusal) {
      // The body stays unread: the connection cannot carry another request.
      response = std::move(*filtered.refusal);
      response.sse = nullptr;
      response.headers.emplace_back("Connection", "close");
      after();
      Write(std::move(response), std::move(request), res);
      return;
    }
    std::optional<Response> body_error;
    if (reader != nullptr) body_error = ReadBody(req, res, *reader, request->body);
    if (body_error) {
      response = std::move(*body_error);
    } else {
      try {
        response = router_.Run(*request);
      } catch (...) {
        LogLine(req.method + " " + req.path + ": handler threw: " + CurrentExceptionText());
        response = ErrorResponse(500, "internal", "internal error");
      }
    }
    for (auto& header : filtered.headers) response.headers.push_back(std::move(header));
    after();
    Write(std::move(response), std::move(request), res);
  }

  void Write(Response response, std::shared_ptr<Request> request, httplib::Response& res) {
    res = httplib::Response();
    res.status = response.status;
    for (const auto& [name, value] : response.headers) res.set_header(name, value);
    if (!response.sse) {
      if (!response.content_type.empty()) res.set_header("Content-Type", response.content_type);
      res.body = std::move(response.body);
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    // A stream is not followed by another request on its connection: the client closes it when
    // the stream ends, and we close our side as soon as the producer returns.
    res.set_header("Connection", "close");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, producer = std::move(response.sse), request = std::move(request)](
            size_t /*offset*/, httplib::DataSink& sink) {
          // Producers run here, on the connection's worker. Stop() cannot interrupt a producer
          // that is blocked on its own condition variable: producers must wait with a short
          // timeout (e.g. 200ms) and re-check IsOpen(), so that Stop() returns promptly.
          SinkSseWriter writer(sink, stopping_);
          try {
            producer(writer);
          } catch (...) {
            LogLine(request->method + " " + request->path +
                    ": event stream producer threw: " + CurrentExceptionText());
          }
          if (!writer.failed()) sink.done();  // a clean end of the chunked body
          // false ends the connection now instead of waiting for the client to close it.
          return false;
        });
  }

 public:
  const Router& router() const { return router_; }

 private:
  const ServerOptions options_;
  Router router_;
  Filter filter_;                            // frozen once serving starts, like the router
  std::unique_ptr<httplib::Server> server_;  // an SSLServer with TLS
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> port_;
  int listen_socket_ = -1;  // recorded while binding, used once to raise the backlog

  std::mutex lifecycle_mu_;  // serializes Handle/Start/Stop
  bool configured_ = false;
  bool started_ = false;

  std::mutex ready_mu_;
  std::condition_variable ready_cv_;
  bool listening_ = false;
  bool listen_ended_ = false;
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Server::~Server() = default;

void Server::Handle(std::string method, std::string pattern, Handler handler) {
  impl_->Handle(std::move(method), std::move(pattern), std::move(handler));
}

void Server::SetFilter(Filter filter) { impl_->SetFilter(std::move(filter)); }
std::vector<RouteKey> Server::Routes() const { return impl_->router().List(); }

Status Server::Start() { return impl_->Start(); }
int Server::port() const { return impl_->port(); }
void Server::Stop() { impl_->Stop(); }

// ---------------------------------------------------------------------------------------------
// Client

namespace {

// Incremental text/event-stream parser (the WHATWG "event stream interpretation"): fields
// event/data/id, comments, data lines joined with "\n", dispatch on a blank line.
class SseParser {
 public:
  explicit SseParser(const std::function<bool(const SseEvent&)>& on_event) : on_event_(on_event) {}

  // False once on_event asked to stop or an event outgrew kMaxSseEventBytes.
  bool Feed(const char* data, size_t n) {
    std::string_view chunk(data, n);
    while (!chunk.empty() && !stopped_ && !too_large_) {
      if (skip_lf_) {
        skip_lf_ = false;
        if (chunk.front() == '\n') {
          chunk.remove_prefix(1);
          continue;
        }
      }
      size_t end = chunk.find_first_of("\r\n");
      if (end == std::string_view::npos) {
        line_.append(chunk);
        break;
      }
      line_.append(chunk.substr(0, end));
      skip_lf_ = chunk[end] == '\r';  // a CRLF may be split across chunks
      chunk.remove_prefix(end + 1);
      Line(line_);
      line_.clear();
    }
    if (line_.size() + data_.size() > kMaxSseEventBytes) too_large_ = true;
    return !stopped_ && !too_large_;
  }

  bool stopped() const { return stopped_; }
  bool too_large() const { return too_large_; }

 private:
  void Line(std::string_view line) {
    if (line.empty()) {
      Dispatch();
      return;
    }
    if (line.front() == ':') return;  // comment
    size_t colon = line.find(':');
    std::string_view field = line.substr(0, colon);
    std::string_view value;
    if (colon != std::string_view::npos) {
      value = line.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    }
    if (field == "event") {
      event_type_ = value;
    } else if (field == "data") {
      data_.append(value);
      data_.push_back('\n');
      has_data_ = true;
    } else if (field == "id") {
      if (value.find('\0') == std::string_view::npos) last_id_ = value;
    }
    // "retry" and unknown fields are ignored.
  }

  void Dispatch() {
    if (has_data_) {
      SseEvent event;
      event.event = event_type_.empty() ? "message" : event_type_;
      event.data = std::move(data_);
      event.data.pop_back();  // the "\n" after the last data line
      event.id = last_id_;
      if (!on_event_(event)) stopped_ = true;
    }
    data_.clear();
    has_data_ = false;
    event_type_.clear();
  }

  const std::function<bool(const SseEvent&)>& on_event_;
  std::string line_;
  std::string data_;
  std::string event_type_;
  std::string last_id_;  // per the SSE spec, the last id seen stays until another replaces it
  bool has_data_ = false;
  bool skip_lf_ = false;
  bool stopped_ = false;
  bool too_large_ = false;
};

// The Status for a non-2xx answer to a stream request, with the server's error message.
Status StatusForHttpError(int status, const std::string& body) {
  std::string message = body;
  auto json = ParseJsonOrString(body);
  if (json.is_object() && json.contains("error") && json["error"].is_object() &&
      json["error"].contains("message") && json["error"]["message"].is_string()) {
    message = json["error"]["message"].get<std::string>();
  }
  message = "HTTP " + std::to_string(status) + ": " + message;
  switch (status) {
    case 400:
      return InvalidArgumentError(std::move(message));
    case 401:
      return Status(StatusCode::kUnauthenticated, std::move(message));
    case 403:
      return Status(StatusCode::kPermissionDenied, std::move(message));
    case 404:
      return NotFoundError(std::move(message));
    case 409:
      return ConflictError(std::move(message));
    case 412:
      return FailedPreconditionError(std::move(message));
    case 429:
      return ResourceExhaustedError(std::move(message));
    case 501:
      return UnimplementedError(std::move(message));
    case 503:
      return UnavailableError(std::move(message));
    case 504:
      return DeadlineExceededError(std::move(message));
    default:
      return status >= 500 ? InternalError(std::move(message))
                           : FailedPreconditionError(std::move(message));
  }
}

// The caller's path and query are sent as given (already percent-encoded with UrlEncode where
// needed); only bytes that can never appear in a request target are escaped, so a stray space or
// non-ASCII byte cannot corrupt the request line. httplib's own encoding is off: it would also
// turn '+' into "%2B" and change what a query means.
std::string EscapeTarget(std::string_view target) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(target.size());
  for (char c : target) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7F || std::strchr("\"<>\\^`{|}", c) != nullptr) {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0x0F]);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

httplib::Headers ToHttplibHeaders(const Headers& headers) {
  httplib::Headers out;
  for (const auto& [name, value] : headers) out.emplace(name, value);
  return out;
}

}  // namespace

// One httplib::Client with one keep-alive connection. Its methods must be called from one thread
// at a time (give each thread its own Client).
class Client::Impl {
 public:
  Impl(std::string base_url, ClientOptions options) : base_url_(std::move(base_url)) {
    // A server closing a kept-alive connection must not kill the process with SIGPIPE when we
    // write to it; the write fails and httplib reports it. (httplib::Server does the same.)
    std::signal(SIGPIPE, SIG_IGN);

    std::string_view url = base_url_;
    std::string_view scheme;
    for (std::string_view candidate : {"http://", "https://"}) {
      if (url.substr(0, candidate.size()) == candidate) scheme = candidate;
    }
    if (scheme.empty()) {
      config_error_ = InvalidArgumentError("unsupported base URL \"" + base_url_ +
                                           "\": only http://host[:port] and https://host[:port]");
      return;
    }
    const bool tls = scheme == "https://";
    const std::string_view kScheme = scheme;
    url.remove_prefix(kScheme.size());
    while (!url.empty() && url.back() == '/') url.remove_suffix(1);
    std::string host;
    std::string_view port_text;
    if (!url.empty() && url.front() == '[') {  // [v6 address]:port
      size_t close = url.find(']');
      if (close != std::string_view::npos) {
        host = url.substr(1, close - 1);
        if (close + 1 < url.size() && url[close + 1] == ':') port_text = url.substr(close + 2);
      }
    } else {
      size_t colon = url.rfind(':');
      host = url.substr(0, colon);
      if (colon != std::string_view::npos) port_text = url.substr(colon + 1);
    }
    int port = tls ? 443 : 80;
    if (!port_text.empty()) {
      port = 0;
      for (char c : port_text) {
        if (c < '0' || c > '9' || port > 65535) {
          port = -1;
          break;
        }
        port = port * 10 + (c - '0');
      }
    }
    if (host.empty() || host.find('/') != std::string::npos || port <= 0 || port > 65535) {
      config_error_ = InvalidArgumentError("invalid base URL \"" + base_url_ +
                                           "\": expected http(s)://host[:port]");
      return;
    }
    if (tls) {
      const std::string bracketed = host.find(':') != std::string::npos ? "[" + host + "]" : host;
      client_ =
          std::make_unique<httplib::Client>("https://" + bracketed + ":" + std::to_string(port));
      client_->enable_server_certificate_verification(true);
      if (!options.ca_file.empty()) client_->set_ca_cert_path(options.ca_file.c_str());
    } else {
      client_ = std::make_unique<httplib::Client>(host, port);
    }
    max_response_bytes_ = options.max_response_bytes;
    total_timeout_ = options.total_timeout;
    client_->set_connection_timeout(options.connect_timeout);
    client_->set_read_timeout(options.read_timeout);
    client_->set_write_timeout(options.read_timeout);
    client_->set_keep_alive(true);
    client_->set_url_encode(false);  // see EscapeTarget
    client_->set_tcp_nodelay(true);
    if (!options.headers.empty()) client_->set_default_headers(ToHttplibHeaders(options.headers));
  }

  ~Impl() {
    if (client_) client_->stop();
  }

  Result<ClientResponse> Get(const std::string& path, const Headers& headers) {
    if (!config_error_.ok()) return config_error_;
    if (max_response_bytes_ == 0 && total_timeout_.count() == 0) {
      return Finish(client_->Get(EscapeTarget(path), ToHttplibHeaders(headers)));
    }
    // Bounded: the body is read piece by piece and the read stops at either bound.
    const auto deadline = std::chrono::steady_clock::now() + total_timeout_;
    std::string body;
    std::string over;
    auto result = client_->Get(
        EscapeTarget(path), ToHttplibHeaders(headers),
        [](const httplib::Response&) { return true; },
        [&](const char* data, size_t n) {
          if (max_response_bytes_ > 0 && body.size() + n > max_response_bytes_) {
            over = "the answer is larger than " + std::to_string(max_response_bytes_) + " bytes";
            return false;
          }
          if (total_timeout_.count() > 0 && std::chrono::steady_clock::now() > deadline) {
            over = "the answer took longer than " + std::to_string(total_timeout_.count()) + " ms";
            return false;
          }
          body.append(data, n);
          return true;
        });
    if (!over.empty()) return UnavailableError(base_url_ + path + ": " + over);
    auto response = Finish(std::move(result));
    if (response.ok()) response->body = std::move(body);
    return response;
  }

  Result<ClientResponse> Post(const std::string& path, const std::string& body,
                              const std::string& content_type, const Headers& headers) {
    if (!config_error_.ok()) return config_error_;
    return Finish(client_->Post(EscapeTarget(path), ToHttplibHeaders(headers), body, content_type));
  }

  Result<ClientResponse> Put(const std::string& path, const std::string& body,
                             const std::string& content_type) {
    if (!config_error_.ok()) return config_error_;
    return Finish(client_->Put(EscapeTarget(path), body, content_type));
  }

  Result<ClientResponse> Delete(const std::string& path) {
    if (!config_error_.ok()) return config_error_;
    return Finish(client_->Delete(EscapeTarget(path)));
  }

  // The read timeout applies between reads: a stream's server should send keep-alive comments
  // more often than that.
  // GET (body null) or POST (a JSON body) answered with an event stream.
  Status Stream(const std::string& path, const std::string* body,
                const std::function<bool(const SseEvent&)>& on_event) {
    if (!config_error_.ok()) return config_error_;
    SseParser parser(on_event);
    int status = 0;
    std::string error_body;
    httplib::Request req;
    req.method = body ? "POST" : "GET";
    req.path = EscapeTarget(path);
    req.headers = httplib::Headers{{"Accept", "text/event-stream"}};
    if (body) {
      req.headers.emplace("Content-Type", "application/json");
      req.body = *body;
    }
    req.response_handler = [&](const httplib::Response& response) {
      status = response.status;
      return true;
    };
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      if (status < 200 || status > 299) {
        error_body.append(data, std::min(n, kMaxErrorBodyBytes - error_body.size()));
        return true;
      }
      return parser.Feed(data, n);
    };
    auto result = client_->send(req);
    if (parser.stopped()) return Status::Ok();
    if (parser.too_large()) {
      return ResourceExhaustedError("event stream " + path + ": an event is larger than " +
                                    std::to_string(kMaxSseEventBytes) + " bytes");
    }
    if (!result) return Unreachable(result.error());
    if (status < 200 || status > 299) return StatusForHttpError(status, error_body);
    return Status::Ok();
  }

 private:
  Status Unreachable(httplib::Error error) const {
    return UnavailableError("cannot reach " + base_url_ + ": " + httplib::to_string(error));
  }

  Result<ClientResponse> Finish(httplib::Result result) const {
    if (!result) return Unreachable(result.error());
    ClientResponse response;
    response.status = result->status;
    response.body = std::move(result->body);
    for (const auto& [name, value] : result->headers) response.headers.emplace(name, value);
    return response;
  }

  const std::string base_url_;
  size_t max_response_bytes_ = 0;
  std::chrono::milliseconds total_timeout_{0};
  Status config_error_;  // set when base_url_ is unusable; every call returns it
  std::unique_ptr<httplib::Client> client_;
};

Client::Client(std::string base_url, ClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(base_url), options)) {}
Client::~Client() = default;

Result<ClientResponse> Client::Get(const std::string& path_and_query, const Headers& headers) {
  return impl_->Get(path_and_query, headers);
}

Result<ClientResponse> Client::Post(const std::string& path_and_query, std::string body,
                                    std::string content_type, const Headers& headers) {
  return impl_->Post(path_and_query, body, content_type, headers);
}

Result<ClientResponse> Client::Put(const std::string& path_and_query, std::string body,
                                   std::string content_type) {
  return impl_->Put(path_and_query, body, content_type);
}

Result<ClientResponse> Client::Delete(const std::string& path_and_query) {
  return impl_->Delete(path_and_query);
}

Status Client::Stream(const std::string& path_and_query,
                      const std::function<bool(const SseEvent&)>& on_event) {
  return impl_->Stream(path_and_query, nullptr, on_event);
}

Status Client::StreamPost(const std::string& path_and_query, const std::string& json_body,
                          const std::function<bool(const SseEvent&)>& on_event) {
  return impl_->Stream(path_and_query, &json_body, on_event);
}

}  // namespace cortex::http
