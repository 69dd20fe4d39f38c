// http::Server: event-driven HTTP/1.1 on Boost.Asio, with requests parsed by Boost.Beast.
//
// Why this shape (docs/http.md has the user-facing version):
// - Connections cost no thread. A few I/O threads (one per core, at most four) own every socket:
//   idle keep-alive connections, clients that send one byte every few seconds, and open event
//   streams all wait in epoll, each under a deadline, so none of them can starve the others.
// - Handlers run on a fixed pool of workers (ServerOptions::threads). A handler may block (a
//   synchronous tool call waits for the tool), so it never runs on an I/O thread. The filter
//   (authentication, audit) runs there too.
// - An event stream's producer is a blocking function (see Response::sse), so each open stream
//   runs it on a thread of its own, bounded by max_streams; its writes go through the
//   connection's I/O thread, and a client that stops reading makes Send() wait, then fail.
// - Boost.Beast parses requests: its parser bounds the header bytes (431) and the body (413);
//   we bound the header count (431) and the target (414).
//
// A connection's state is touched only on its strand, except the output queue of an event stream
// (out_mu_), which its producer thread fills.
#include <sys/resource.h>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange without it
//
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "common/fd.h"
#include "common/log.h"
#include "common/mutex.h"
#include "http/http.h"
#include "http/wire.h"

namespace cortex::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

// Pending TCP connections the kernel queues for accept().
constexpr int kListenBacklog = 1024;
// An event stream's bytes not yet written to a slow client; past this Send() waits (up to the
// write timeout) for the client to read.
constexpr size_t kMaxPendingStreamBytes = 1u << 20;
// After answering with "Connection: close", how long (and how much of) what the client still
// sends is drained, so the close does not reset the connection before it has read the answer.
// Many clients (cpp-httplib, curl without 100-continue) write a whole refused body before they
// read: one over the 8 MiB body limit must still be drained.
constexpr auto kLingerTime = std::chrono::seconds(2);
constexpr size_t kLingerBytes = 64u << 20;
// How long Stop() lets answers already written reach their clients.
constexpr auto kStopGrace = std::chrono::seconds(2);

// Through the server's log (text or JSON lines, control bytes and bad UTF-8 escaped).
void LogLine(const std::string& line) { log::Error("http", line); }

std::string CurrentExceptionText() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

// A fixed set of workers running handlers, first come first served.
class WorkerPool {
 public:
  explicit WorkerPool(size_t threads) {
    workers_.reserve(threads);
    for (size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~WorkerPool() { Shutdown(); }
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void Post(std::function<void()> fn) {
    {
      MutexLock lock(mu_);
      pending_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }

  // Runs what is queued, then joins the workers.
  void Shutdown() {
    {
      MutexLock lock(mu_);
      shutdown_ = true;
    }
    cv_.notify_all();
    for (std::thread& worker : workers_) {
      if (worker.joinable()) worker.join();
    }
  }

 private:
  void Work() {
    while (true) {
      std::function<void()> fn;
      {
        MutexLock lock(mu_);
        cv_.wait(lock.native(),
                 [&]() CORTEX_REQUIRES(mu_) { return !pending_.empty() || shutdown_; });
        if (pending_.empty()) return;
        fn = std::move(pending_.front());
        pending_.pop_front();
      }
      try {
        fn();
      } catch (...) {
        LogLine("worker task threw: " + CurrentExceptionText());
      }
    }
  }

  Mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> pending_ CORTEX_GUARDED_BY(mu_);
  bool shutdown_ CORTEX_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

class Session;

// What every connection shares: the options, the routes, the workers, and the books Stop() needs.
struct Core {
  explicit Core(ServerOptions o) : options(std::move(o)) {}
  const ServerOptions options;
  Router router;
  Filter filter;
  std::atomic<bool> stopping{false};
  std::unique_ptr<WorkerPool> pool;

  Mutex mu;
  std::condition_variable cv;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions CORTEX_GUARDED_BY(mu);
  int streams CORTEX_GUARDED_BY(mu) = 0;
};

// One exchange in flight: the request, and what the filter said about it.
struct Exchange {
  std::shared_ptr<Request> request;
  FilterResult filtered;
  bool head = false;         // a HEAD request: the answer has no body
  bool keep_alive = true;    // the client allows another request on this connection
  bool has_body = false;     // a body follows the head
  bool expects_100 = false;  // "Expect: 100-continue"
};

// The steps every request goes through, with or without a socket (Server::Serve).

// Routes the request and runs the filter. Returns the refusal to answer with, if any (the body
// is then never read).
std::optional<Response> RouteAndFilter(Core& core, Exchange& exchange) {
  Request& request = *exchange.request;
  core.router.Resolve(request);
  if (core.filter) {
    try {
      exchange.filtered = core.filter(request);
    } catch (...) {
      LogLine(request.method + " " + request.path +
              ": request filter threw: " + CurrentExceptionText());
      exchange.filtered.refusal = ErrorResponse(500, "internal", "internal error");
    }
  }
  if (!exchange.filtered.refusal) return std::nullopt;
  Response refusal = std::move(*exchange.filtered.refusal);
  exchange.filtered.refusal.reset();
  exchange.filtered.headers.clear();
  exchange.keep_alive = false;
  return refusal;
}

// Runs the handler; the filter's headers are added to its answer.
Response RunHandler(Core& core, Exchange& exchange) {
  Request& request = *exchange.request;
  Response response;
  try {
    response = core.router.Run(request);
  } catch (...) {
    LogLine(request.method + " " + request.path + ": handler threw: " + CurrentExceptionText());
    response = ErrorResponse(500, "internal", "internal error");
  }
  for (auto& header : exchange.filtered.headers) response.headers.push_back(std::move(header));
  return response;
}

// Tells the filter's observer (the audit log, metrics) about the answer.
void Observe(Exchange& exchange, const Response& response) {
  if (!exchange.filtered.after) return;
  try {
    exchange.filtered.after(*exchange.request, response);
  } catch (...) {
    LogLine(exchange.request->method + " " + exchange.request->path +
            ": request observer threw: " + CurrentExceptionText());
  }
}

// The transport-independent half of a connection: the output queue and the protocol steps.
// Its subclass (plain TCP or TLS) owns the socket and does the reads and writes.
class Session : public std::enable_shared_from_this<Session> {
 public:
  explicit Session(Core& core) : core_(core) {}
  virtual ~Session() {
    MutexLock lock(core_.mu);
    core_.sessions.erase(this);
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  virtual void Start() = 0;
  // From any thread: closes the connection on its strand if it is waiting for a request.
  virtual void CloseIfIdleSoon() = 0;
  virtual void CloseSoon() = 0;

  // Called from a stream's producer thread. False once the connection is closed or its client
  // has stopped reading for longer than the write timeout.
  bool Push(std::string bytes) {
    MutexLock lock(out_mu_);
    if (closed_) return false;
    if (pending_.size() > kMaxPendingStreamBytes) {
      out_cv_.wait_for(lock.native(), core_.options.write_timeout, [&]() CORTEX_REQUIRES(out_mu_) {
        return closed_ || pending_.size() <= kMaxPendingStreamBytes;
      });
      if (closed_) return false;
      if (pending_.size() > kMaxPendingStreamBytes) {
        lock.Unlock();
        CloseSoon();  // the client does not read: give up on it
        return false;
      }
    }
    pending_ += bytes;
    ScheduleFlushLocked();
    return true;
  }

  bool closed() const {
    MutexLock lock(out_mu_);
    return closed_;
  }

  // Called from a stream's producer thread once it returned: the end of the chunked body.
  void EndStream() {
    MutexLock lock(out_mu_);
    ended_ = true;
    if (!closed_) pending_ += "0\r\n\r\n";
    ScheduleFlushLocked();
  }

 protected:
  virtual void PostFlush() = 0;

  void ScheduleFlushLocked() CORTEX_REQUIRES(out_mu_) {
    if (flush_posted_) return;
    flush_posted_ = true;
    PostFlush();
  }

  Core& core_;
  mutable Mutex out_mu_;
  std::condition_variable out_cv_;
  std::string pending_ CORTEX_GUARDED_BY(out_mu_);  // a stream's bytes not yet handed to a write
  bool flush_posted_ CORTEX_GUARDED_BY(out_mu_) = false;
  bool writing_ CORTEX_GUARDED_BY(out_mu_) = false;  // a stream write is in flight
  bool ended_ CORTEX_GUARDED_BY(out_mu_) = false;    // the stream's producer returned
  bool closed_ CORTEX_GUARDED_BY(out_mu_) = false;
};

class StreamWriter final : public SseWriter {
 public:
  StreamWriter(Session& session, const std::atomic<bool>& stopping)
      : session_(session), stopping_(stopping) {}

  bool Send(std::string_view event, std::string_view data, std::string_view id) override {
    return Write(FormatSseEvent(event, data, id));
  }
  bool Comment(std::string_view text) override { return Write(FormatSseComment(text)); }
  bool IsOpen() const override { return !failed_ && !stopping_.load() && !session_.closed(); }

 private:
  bool Write(const std::string& frame) {
    if (!IsOpen()) return false;
    if (!session_.Push(Chunk(frame))) failed_ = true;
    return !failed_;
  }

  Session& session_;
  const std::atomic<bool>& stopping_;
  bool failed_ = false;
};

template <class Stream>
class Connection final : public Session {
 public:
  static constexpr bool kTls = !std::is_same_v<Stream, tcp::socket>;

  Connection(Core& core, Stream stream)
      : Session(core), stream_(std::move(stream)), timer_(stream_.get_executor()) {
    beast::error_code ec;
    auto endpoint = Socket().remote_endpoint(ec);
    if (!ec) remote_addr_ = endpoint.address().to_string();
  }

  // Called by the acceptor: the connection's first steps run on its own strand, like the rest.
  void Start() override {
    asio::post(stream_.get_executor(), [self = Self()] { self->Begin(); });
  }

  void CloseIfIdleSoon() override {
    asio::post(stream_.get_executor(), [self = Self()] {
      if (self->phase_ == Phase::kIdle || self->phase_ == Phase::kLingering) self->Close();
    });
  }

  void CloseSoon() override {
    asio::post(stream_.get_executor(), [self = Self()] { self->Close(); });
  }

 private:
  enum class Phase { kIdle, kBusy, kStreaming, kLingering };

  void Begin() {
    if constexpr (kTls) {
      Arm(core_.options.read_timeout);
      stream_.async_handshake(asio::ssl::stream_base::server,
                              [self = Self()](beast::error_code ec) {
                                self->timer_.cancel();
                                if (ec) return self->Close();
                                self->ReadHead();
                              });
    } else {
      ReadHead();
    }
  }

  std::shared_ptr<Connection> Self() {
    return std::static_pointer_cast<Connection>(shared_from_this());
  }
  tcp::socket& Socket() { return beast::get_lowest_layer(stream_); }

  // A deadline for the operation about to start: when it passes, the connection is closed.
  void Arm(std::chrono::nanoseconds after) {
    timer_.expires_after(after);
    timer_.async_wait([self = Self()](beast::error_code ec) {
      // A wait that completed just before it was re-armed must not close the connection.
      if (!ec && self->timer_.expiry() <= SteadyClock::now()) self->Close();
    });
  }

  // --- reading a request (strand) ---

  void ReadHead() {
    phase_ = Phase::kIdle;
    if (core_.stopping) return Close();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(core_.options.max_header_bytes));
    parser_->body_limit(core_.options.max_body_bytes);
    // The first request may take the read timeout; a kept-alive connection waits for the next
    // one only as long as keep_alive_timeout.
    Arm(served_ == 0
            ? std::chrono::duration_cast<std::chrono::nanoseconds>(core_.options.read_timeout)
            : core_.options.keep_alive_timeout);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = Self()](beast::error_code ec, size_t) { self->OnHead(ec); });
  }

  void OnHead(beast::error_code ec) {
    timer_.cancel();
    if (ec) {
      if (IsDisconnect(ec)) return Close();
      auto exchange = std::make_shared<Exchange>();
      exchange->request = std::make_shared<Request>();
      exchange->keep_alive = false;
      if (ec == bhttp::error::header_limit) {
        return Answer(exchange,
                      ErrorResponse(431, "request_header_fields_too_large",
                                    "the request's headers are larger than " +
                                        std::to_string(core_.options.max_header_bytes) + " bytes"));
      }
      if (ec == bhttp::error::body_limit) return Answer(exchange, BodyTooLarge());
      return Answer(exchange,
                    ErrorResponse(400, "bad_request", "malformed HTTP request: " + ec.message()));
    }
    phase_ = Phase::kBusy;
    ++served_;
    const auto& message = parser_->get();
    RequestHead head;
    head.method = std::string(message.method_string());
    head.target = std::string(message.target());
    head.remote_addr = remote_addr_;
    for (const auto& field : message) {
      head.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    auto exchange = std::make_shared<Exchange>();
    exchange->head = message.method() == bhttp::verb::head;
    exchange->keep_alive = parser_->keep_alive();
    exchange->has_body = !parser_->is_done();
    auto built = BuildRequest(std::move(head), core_.options);
    if (!built.ok()) {
      exchange->request = std::make_shared<Request>();
      exchange->keep_alive = false;
      return Answer(exchange, built.error());
    }
    exchange->request = std::move(built.request);
    exchange->expects_100 = built.expects_100;
    core_.pool->Post([self = Self(), exchange] { self->Filter(exchange); });
  }

  // Worker: route and filter; a refusal is answered without reading the body.
  void Filter(const std::shared_ptr<Exchange>& exchange) {
    if (auto refusal = RouteAndFilter(core_, *exchange)) {
      // The body stays unread: the connection cannot carry another request.
      return Finish(exchange, std::move(*refusal));
    }
    if (exchange->has_body) {
      asio::post(stream_.get_executor(), [self = Self(), exchange] { self->ReadBody(exchange); });
      return;
    }
    Handle(exchange);
  }

  void ReadBody(const std::shared_ptr<Exchange>& exchange) {
    if (closed()) return;
    if (exchange->expects_100) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      Arm(core_.options.write_timeout);
      asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = Self(), exchange](beast::error_code ec, size_t) {
                          self->timer_.cancel();
                          if (ec) return self->Close();
                          exchange->expects_100 = false;
                          self->ReadBody(exchange);
                        });
      return;
    }
    Arm(core_.options.read_timeout);
    bhttp::async_read(
        stream_, buffer_, *parser_,
        [self = Self(), exchange](beast::error_code ec, size_t) { self->OnBody(exchange, ec); });
  }

  void OnBody(const std::shared_ptr<Exchange>& exchange, beast::error_code ec) {
    timer_.cancel();
    if (ec) {
      if (ec != bhttp::error::body_limit && IsDisconnect(ec)) return Close();
      exchange->keep_alive = false;
      Response error =
          ec == bhttp::error::body_limit
              ? BodyTooLarge()
              : ErrorResponse(400, "bad_request", "cannot read the request body: " + ec.message());
      core_.pool->Post([self = Self(), exchange, error = std::move(error)]() mutable {
        self->Finish(exchange, std::move(error));
      });
      return;
    }
    exchange->request->body = std::move(parser_->get().body());
    core_.pool->Post([self = Self(), exchange] { self->Handle(exchange); });
  }

  Response BodyTooLarge() const {
    return ErrorResponse(
        413, "payload_too_large",
        "request body is larger than " + std::to_string(core_.options.max_body_bytes) + " bytes");
  }

  // Worker: run the handler.
  void Handle(const std::shared_ptr<Exchange>& exchange) {
    Finish(exchange, RunHandler(core_, *exchange));
  }

  // Worker (or strand for errors found while parsing): tell the filter, then write the answer.
  void Finish(const std::shared_ptr<Exchange>& exchange, Response response) {
    Observe(*exchange, response);
    if (response.sse && !exchange->head) return StartStream(exchange, std::move(response));
    const bool close =
        !exchange->keep_alive || core_.stopping || served_ >= core_.options.keep_alive_max_count ||
        core_.options.keep_alive_timeout.count() == 0 || AsksToClose(response.headers);
    std::string bytes = SerializeResponse(response, exchange->head, close);
    asio::post(stream_.get_executor(), [self = Self(), bytes = std::move(bytes), close]() mutable {
      self->WriteAnswer(std::move(bytes), close);
    });
  }

  // Answers from the strand (errors found while parsing): the filter never saw the request.
  void Answer(const std::shared_ptr<Exchange>& exchange, Response response) {
    phase_ = Phase::kBusy;
    WriteAnswer(SerializeResponse(response, exchange->head, true), true);
  }

  void WriteAnswer(std::string bytes, bool close) {
    if (closed()) return;
    answer_ = std::move(bytes);
    Arm(core_.options.write_timeout);
    asio::async_write(stream_, asio::buffer(answer_),
                      [self = Self(), close](beast::error_code ec, size_t) {
                        self->timer_.cancel();
                        self->answer_.clear();
                        if (ec) return self->Close();
                        if (close) return self->Linger();
                        self->ReadHead();
                      });
  }

  // --- event streams ---

  // Worker: the answer is a stream; its producer gets a thread of its own.
  void StartStream(const std::shared_ptr<Exchange>& exchange, Response response) {
    {
      MutexLock lock(core_.mu);
      if (core_.streams >= core_.options.max_streams || core_.stopping) {
        exchange->keep_alive = false;
        response =
            ErrorResponse(503, "unavailable",
                          core_.stopping ? "the server is stopping"
                                         : "too many open event streams (" +
                                               std::to_string(core_.options.max_streams) + ")");
        std::string bytes = SerializeResponse(response, false, true);
        asio::post(stream_.get_executor(), [self = Self(), bytes = std::move(bytes)]() mutable {
          self->WriteAnswer(std::move(bytes), true);
        });
        return;
      }
      ++core_.streams;
    }
    asio::post(stream_.get_executor(), [self = Self()] { self->WatchStream(); });
    Push(SerializeStreamHead(response));
    try {
      std::thread([self = Self(), producer = std::move(response.sse),
                   request = exchange->request]() mutable {
        Core& core = self->core_;
        {
          StreamWriter writer(*self, core.stopping);
          try {
            producer(writer);
          } catch (...) {
            LogLine(request->method + " " + request->path +
                    ": event stream producer threw: " + CurrentExceptionText());
          }
        }
        self->EndStream();
        producer = nullptr;  // what the producer holds goes before the server may
        request.reset();
        self.reset();
        MutexLock lock(core.mu);
        --core.streams;
        core.cv.notify_all();
      }).detach();
    } catch (const std::system_error& e) {  // no thread to be had
      LogLine("cannot start an event stream: " + std::string(e.what()));
      EndStream();
      MutexLock lock(core_.mu);
      --core_.streams;
      core_.cv.notify_all();
    }
  }

  // Strand: a stream reads from its client only to notice that it went away.
  void WatchStream() {
    phase_ = Phase::kStreaming;
    if (closed()) return;
    stream_.async_read_some(asio::buffer(scratch_), [self = Self()](beast::error_code ec, size_t) {
      if (ec) return self->Close();
      self->WatchStream();  // a client has nothing to say on a stream; what it sends is dropped
    });
  }

  void PostFlush() override {
    asio::post(stream_.get_executor(), [self = Self()] { self->Flush(); });
  }

  // Strand: writes what the producer queued, one write at a time.
  void Flush() {
    bool write = false;
    {
      MutexLock lock(out_mu_);
      flush_posted_ = false;
      if (writing_ || closed_) return;
      if (pending_.empty()) {
        if (!ended_) return;
      } else {
        stream_out_.swap(pending_);
        pending_.clear();
        writing_ = write = true;
      }
    }
    out_cv_.notify_all();
    if (!write) return Linger();  // the stream ended and all of it is written
    Arm(core_.options.write_timeout);
    asio::async_write(stream_, asio::buffer(stream_out_),
                      [self = Self()](beast::error_code ec, size_t) {
                        self->timer_.cancel();
                        {
                          MutexLock lock(self->out_mu_);
                          self->writing_ = false;
                          self->stream_out_.clear();
                        }
                        if (ec) return self->Close();
                        self->Flush();
                      });
  }

  // --- closing (strand) ---

  // Closes our side for writing, then drains what the client still sends for a short while, so
  // the answer is not lost to a reset.
  void Linger() {
    if (closed() || phase_ == Phase::kLingering) return;
    // A stream's watch read is already pending, and notices the client's close.
    const bool watching = phase_ == Phase::kStreaming;
    phase_ = Phase::kLingering;
    beast::error_code ignored;
    Socket().shutdown(tcp::socket::shutdown_send, ignored);
    Arm(kLingerTime);
    if (!watching) Drain();
  }

  void Drain() {
    Socket().async_read_some(asio::buffer(scratch_),
                             [self = Self()](beast::error_code ec, size_t n) {
                               self->drained_ += n;
                               if (ec || self->drained_ > kLingerBytes) return self->Close();
                               self->Drain();
                             });
  }

  void Close() {
    {
      MutexLock lock(out_mu_);
      if (closed_) return;
      closed_ = true;
    }
    out_cv_.notify_all();
    timer_.cancel();
    beast::error_code ignored;
    Socket().shutdown(tcp::socket::shutdown_both, ignored);
    Socket().close(ignored);
  }

  static bool IsDisconnect(const beast::error_code& ec) {
    return ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ||
           ec == asio::error::eof || ec == asio::error::operation_aborted ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
           ec == asio::error::timed_out || ec == asio::ssl::error::stream_truncated;
  }

  Stream stream_;
  asio::steady_timer timer_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::string remote_addr_;
  std::string answer_;      // the answer being written
  std::string stream_out_;  // the stream bytes being written
  std::array<char, 4096> scratch_{};
  int served_ = 0;
  size_t drained_ = 0;
  Phase phase_ = Phase::kIdle;
};

// Raises the soft limit on open files to the hard one: every connection is a descriptor.
void RaiseOpenFileLimit() {
  struct rlimit limit {};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  limit.rlim_cur = limit.rlim_max;
  (void)setrlimit(RLIMIT_NOFILE, &limit);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

class Server::Impl {
 public:
  explicit Impl(ServerOptions options) : core_(std::move(options)) {}
  ~Impl() { Stop(); }

  void Handle(std::string method, std::string pattern, Handler handler) {
    MutexLock lock(lifecycle_mu_);
    // The router is read without a lock by the workers, so it is frozen once serving starts.
    CORTEX_CHECK_MSG(!frozen_, "Server::Handle called after Start: " + method + " " + pattern);
    core_.router.Add(std::move(method), std::move(pattern), std::move(handler));
  }

  void SetFilter(Filter filter) {
    MutexLock lock(lifecycle_mu_);
    CORTEX_CHECK_MSG(!frozen_, "Server::SetFilter called after Start");
    core_.filter = std::move(filter);
  }

  const Router& router() const { return core_.router; }

  Response Serve(Request request) {
    {
      MutexLock lock(lifecycle_mu_);
      frozen_ = true;  // the routes are read without a lock from here on, as after Start
    }
    Exchange exchange;
    exchange.request = std::make_shared<Request>(std::move(request));
    if (auto refusal = RouteAndFilter(core_, exchange)) {
      Observe(exchange, *refusal);
      return std::move(*refusal);
    }
    Response response = RunHandler(core_, exchange);
    Observe(exchange, response);
    return response;
  }

  Status Start() {
    MutexLock lock(lifecycle_mu_);
    if (started_) return FailedPreconditionError("server was already started");
    if (core_.stopping) return FailedPreconditionError("server was stopped");
    const ServerOptions& o = core_.options;
    const std::string address = o.host + ":" + std::to_string(o.port);

    if (!o.tls_cert_file.empty() || !o.tls_key_file.empty()) {
      CORTEX_RETURN_IF_ERROR(LoadTls(address));
    }
    beast::error_code ec;
    tcp::resolver resolver(io_);
    auto endpoints = resolver.resolve(o.host, std::to_string(o.port),
                                      tcp::resolver::passive | tcp::resolver::numeric_service, ec);
    if (ec) return UnavailableError("cannot listen on " + address + ": " + ec.message());
    beast::error_code last = asio::error::host_not_found;
    for (const auto& entry : endpoints) {
      tcp::acceptor acceptor(io_);
      acceptor.open(entry.endpoint().protocol(), last);
      if (last) continue;
      acceptor.set_option(asio::socket_base::reuse_address(true), last);
      acceptor.bind(entry.endpoint(), last);
      if (last) continue;
      acceptor.listen(kListenBacklog, last);
      if (last) continue;
      acceptor_.emplace(std::move(acceptor));
      break;
    }
    if (!acceptor_) {
      const std::string reason =
          last == asio::error::address_in_use ? "address already in use" : last.message();
      return UnavailableError("cannot listen on " + address + ": " + reason);
    }
    port_ = acceptor_->local_endpoint().port();
    RaiseOpenFileLimit();

    core_.pool = std::make_unique<WorkerPool>(static_cast<size_t>(std::max(1, o.threads)));
    started_ = true;
    frozen_ = true;
    Accept();
    int io_threads =
        o.io_threads > 0
            ? o.io_threads
            : static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 4u));
    for (int i = 0; i < io_threads; ++i) {
      io_threads_.emplace_back([this] {
        while (true) {
          try {
            io_.run();
            return;
          } catch (...) {
            LogLine("I/O thread: " + CurrentExceptionText());
          }
        }
      });
    }
    return Status::Ok();
  }

  int port() const { return port_.load(); }

  // Must not be called from a handler or stream producer: it waits for them.
  void Stop() {
    MutexLock lock(lifecycle_mu_);
    if (core_.stopping.exchange(true) || !started_) return;
    // No new connections; connections waiting for a request close now; answers being worked on
    // are written with "Connection: close"; streams end (their producers see IsOpen() false).
    asio::post(io_, [this] {
      beast::error_code ignored;
      acceptor_->close(ignored);
    });
    ForEachSession([](Session& s) { s.CloseIfIdleSoon(); });
    {
      MutexLock books(core_.mu);
      core_.cv.wait(books.native(), [&]() CORTEX_REQUIRES(core_.mu) { return core_.streams == 0; });
    }
    core_.pool->Shutdown();  // the handlers in flight finish and their answers are queued
    // Let those answers reach their clients, then close whatever is left.
    WaitForSessions(kStopGrace);
    ForEachSession([](Session& s) { s.CloseSoon(); });
    WaitForSessions(kStopGrace);
    work_.reset();
    io_.stop();
    for (std::thread& t : io_threads_) t.join();
  }

 private:
  Status LoadTls(const std::string& address) {
    const ServerOptions& o = core_.options;
    auto bad = [&] {
      return InvalidArgumentError(
          "cannot serve TLS on " + address + ": the certificate (" + o.tls_cert_file +
          ") or key (" + o.tls_key_file +
          ") cannot be read, is not PEM, or the key does not match the certificate");
    };
    ssl_.emplace(asio::ssl::context::tls_server);
    ssl_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                      asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                      asio::ssl::context::no_tlsv1_1);
    beast::error_code ec;
    ssl_->use_certificate_chain_file(o.tls_cert_file, ec);
    if (ec) return bad();
    ssl_->use_private_key_file(o.tls_key_file, asio::ssl::context::pem, ec);
    if (ec) return bad();
    if (SSL_CTX_check_private_key(ssl_->native_handle()) != 1) return bad();
    return Status::Ok();
  }

  void Accept() {
    acceptor_->async_accept(asio::make_strand(io_),
                            [this](beast::error_code ec, tcp::socket socket) {
                              if (ec) {
                                if (core_.stopping || !acceptor_->is_open()) return;
                                // Out of descriptors, most likely: wait a moment instead of
                                // spinning.
                                LogLine("accept: " + ec.message());
                                retry_.expires_after(std::chrono::milliseconds(100));
                                retry_.async_wait([this](beast::error_code) {
                                  if (!core_.stopping) Accept();
                                });
                                return;
                              }
                              Adopt(std::move(socket));
                              Accept();
                            });
  }

  void Adopt(tcp::socket socket) {
    beast::error_code ignored;
    // Small request/response exchanges: Nagle's algorithm costs ~100x in throughput here.
    socket.set_option(tcp::no_delay(true), ignored);
    std::shared_ptr<Session> session;
    if (ssl_) {
      session = std::make_shared<Connection<asio::ssl::stream<tcp::socket>>>(
          core_, asio::ssl::stream<tcp::socket>(std::move(socket), *ssl_));
    } else {
      session = std::make_shared<Connection<tcp::socket>>(core_, std::move(socket));
    }
    {
      MutexLock lock(core_.mu);
      if (core_.sessions.size() >= static_cast<size_t>(core_.options.max_connections)) {
        return;  // over the limit: the connection closes as `session` goes
      }
      core_.sessions.emplace(session.get(), session);
    }
    session->Start();
  }

  void ForEachSession(const std::function<void(Session&)>& fn) {
    std::vector<std::shared_ptr<Session>> live;
    {
      MutexLock lock(core_.mu);
      for (auto& [raw, weak] : core_.sessions) {
        if (auto s = weak.lock()) live.push_back(std::move(s));
      }
    }
    for (auto& s : live) fn(*s);
  }

  void WaitForSessions(std::chrono::milliseconds grace) {
    MutexLock lock(core_.mu);
    const auto deadline = SteadyClock::now() + grace;
    while (!core_.sessions.empty() && SteadyClock::now() < deadline) {
      lock.Unlock();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      lock.Lock();
    }
  }

  Core core_;
  std::optional<asio::ssl::context> ssl_;
  // Destroyed before core_ and ssl_ (declared after them): the connections it still holds
  // unregister from core_ as they go, and their TLS streams use ssl_.
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::optional<tcp::acceptor> acceptor_;
  asio::steady_timer retry_{io_};
  std::vector<std::thread> io_threads_;
  std::atomic<int> port_{0};
  // Serializes Handle/Start/Stop; Stop takes core_.mu under it.
  Mutex lifecycle_mu_ CORTEX_ACQUIRED_BEFORE(core_.mu);
  bool started_ CORTEX_GUARDED_BY(lifecycle_mu_) = false;
  bool frozen_ CORTEX_GUARDED_BY(lifecycle_mu_) = false;  // no more routes: Start or Serve ran
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Server::~Server() = default;

void Server::Handle(std::string method, std::string pattern, Handler handler) {
  impl_->Handle(std::move(method), std::move(pattern), std::move(handler));
}

void Server::SetFilter(Filter filter) { impl_->SetFilter(std::move(filter)); }
std::vector<RouteKey> Server::Routes() const { return impl_->router().List(); }

Status Server::Start() { return impl_->Start(); }
Response Server::Serve(Request request) { return impl_->Serve(std::move(request)); }
int Server::port() const { return impl_->port(); }
void Server::Stop() { impl_->Stop(); }

}  // namespace cortex::http
