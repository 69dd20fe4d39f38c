// http::Client on top of cpp-httplib. This is the only file in Cortex that includes <httplib.h>;
// everything above it sees http.h's own types. (The server is http/server.cc.)
//
// Debian's libcpp-httplib-dev 0.11.4 ships the *split* header (declarations only) and the
// implementation in libcpp-httplib.so, built with OpenSSL, zlib and brotli support. The
// CPPHTTPLIB_*_SUPPORT macros change the layout of httplib's classes, so this file is compiled
// with the package's pkg-config flags and linked against that library (see CMakeLists.txt).
#include <httplib.h>

#include <csignal>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/json.h"
#include "http/http.h"

namespace cortex::http {
namespace {

// The largest single server-sent event (data plus a partial line) we buffer.
constexpr size_t kMaxSseEventBytes = 16u << 20;
// How much of a non-2xx stream answer we keep for the error message.
constexpr size_t kMaxErrorBodyBytes = 64u << 10;

}  // namespace

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
    Headers headers{{"Accept", "text/event-stream"}};
    auto response = Send(body ? "POST" : "GET", path, body ? *body : std::string(),
                         "application/json", headers, on_event);
    if (!response.ok()) return response.status();
    if (response->status < 200 || response->status > 299) {
      return StatusForHttpError(response->status, response->body);
    }
    return Status::Ok();
  }

  // Any request; an event-stream answer (2xx) goes to on_event as it arrives, any other body is
  // returned whole (an error body up to kMaxErrorBodyBytes).
  Result<ClientResponse> Send(const std::string& method, const std::string& path,
                              const std::string& body, const std::string& content_type,
                              const Headers& headers,
                              const std::function<bool(const SseEvent&)>& on_event) {
    if (!config_error_.ok()) return config_error_;
    SseParser parser(on_event);
    ClientResponse out;
    bool events = false;
    httplib::Request req;
    req.method = method;
    req.path = EscapeTarget(path);
    req.headers = ToHttplibHeaders(headers);
    if (!body.empty() || method == "POST") {
      req.headers.emplace("Content-Type", content_type);
      req.body = body;
    }
    req.response_handler = [&](const httplib::Response& response) {
      out.status = response.status;
      for (const auto& [name, value] : response.headers) out.headers.emplace(name, value);
      events = response.status >= 200 && response.status <= 299 &&
               response.get_header_value("Content-Type").starts_with("text/event-stream");
      return true;
    };
    req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
      if (events) return parser.Feed(data, n);
      size_t limit =
          out.status >= 200 && out.status <= 299 ? kMaxSseEventBytes : kMaxErrorBodyBytes;
      out.body.append(data, std::min(n, limit - std::min(limit, out.body.size())));
      return true;
    };
    auto result = client_->send(req);
    if (parser.stopped()) return out;
    if (parser.too_large()) {
      return ResourceExhaustedError("event stream " + path + ": an event is larger than " +
                                    std::to_string(kMaxSseEventBytes) + " bytes");
    }
    if (!result) return Unreachable(result.error());
    return out;
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

Result<ClientResponse> Client::Send(const std::string& method, const std::string& path_and_query,
                                    const std::string& body, const std::string& content_type,
                                    const Headers& headers,
                                    const std::function<bool(const SseEvent&)>& on_event) {
  return impl_->Send(method, path_and_query, body, content_type, headers, on_event);
}

}  // namespace cortex::http
