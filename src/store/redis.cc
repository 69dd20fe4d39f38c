// The Redis client: RESP2 encoding and a pull parser over a buffered blocking socket.
//
// Parsing never trusts the server: every length is checked against a cap before anything is
// allocated for it, nesting is bounded (the parser recurses), lines are bounded, and anything
// unexpected is a Status. Memory grows only as bytes actually arrive.
#include "store/redis.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <functional>
#include <system_error>
#include <utility>

#include "common/fd.h"

namespace cortex::store {
namespace {

constexpr int64_t kMaxBulkBytes = int64_t{512} << 20;  // Redis's own proto-max-bulk-len
constexpr int64_t kMaxArrayElements = int64_t{1} << 24;
constexpr size_t kMaxLineBytes = size_t{1} << 20;  // a simple string, error or length line
constexpr int kMaxDepth = 64;                      // nested arrays
constexpr size_t kCompactAfterBytes = size_t{64} << 10;

bool ParseInt64(std::string_view text, int64_t* out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size();
}

Status ProtocolError(std::string m) { return InvalidArgumentError(std::move(m)); }

// Reads replies from buf[*pos...], calling `fill` (which appends at least one byte or fails)
// whenever it needs more. Protocol errors are InvalidArgument; fill's errors pass through.
class RespReader {
 public:
  RespReader(std::string* buf, size_t* pos, std::function<Status(std::string*)> fill)
      : buf_(*buf), pos_(*pos), fill_(std::move(fill)) {}

  Result<RedisReply> Read(int depth = 0) {
    if (depth > kMaxDepth) return ProtocolError("arrays nested deeper than 64 levels");
    CORTEX_ASSIGN_OR_RETURN(std::string line, ReadLine());
    if (line.empty()) return ProtocolError("empty line where a reply was expected");
    const char type = line[0];
    std::string_view rest = std::string_view(line).substr(1);
    RedisReply reply;
    switch (type) {
      case '+':
      case '-':
        reply.type = type == '+' ? RedisReply::Type::kStatus : RedisReply::Type::kError;
        reply.str = std::string(rest);
        return reply;
      case ':':
        if (!ParseInt64(rest, &reply.integer)) return ProtocolError("bad integer reply");
        reply.type = RedisReply::Type::kInteger;
        return reply;
      case '$': {
        int64_t len = 0;
        if (!ParseInt64(rest, &len) || len < -1 || len > kMaxBulkBytes) {
          return ProtocolError("bad bulk string length");
        }
        if (len == -1) return reply;  // nil
        const size_t n = static_cast<size_t>(len);
        CORTEX_RETURN_IF_ERROR(Need(n + 2));
        if (buf_[pos_ + n] != '\r' || buf_[pos_ + n + 1] != '\n') {
          return ProtocolError("bulk string not followed by CRLF");
        }
        reply.type = RedisReply::Type::kString;
        reply.str = buf_.substr(pos_, n);
        pos_ += n + 2;
        return reply;
      }
      case '*': {
        int64_t count = 0;
        if (!ParseInt64(rest, &count) || count < -1 || count > kMaxArrayElements) {
          return ProtocolError("bad array length");
        }
        if (count == -1) return reply;  // nil
        reply.type = RedisReply::Type::kArray;
        reply.elements.reserve(static_cast<size_t>(std::min<int64_t>(count, 1024)));
        for (int64_t i = 0; i < count; ++i) {
          CORTEX_ASSIGN_OR_RETURN(RedisReply element, Read(depth + 1));
          reply.elements.push_back(std::move(element));
        }
        return reply;
      }
      default: {
        const auto byte = static_cast<unsigned char>(type);
        std::array<char, 8> hex{};
        std::snprintf(hex.data(), hex.size(), "0x%02x", byte);
        return ProtocolError(std::string("unexpected reply type byte ") + hex.data());
      }
    }
  }

 private:
  // The next line, without its CRLF.
  Result<std::string> ReadLine() {
    size_t scan = pos_;
    for (;;) {
      const size_t cr = buf_.find("\r\n", scan);
      if (cr != std::string::npos) {
        if (cr - pos_ > kMaxLineBytes) return ProtocolError("line longer than 1 MiB");
        std::string line = buf_.substr(pos_, cr - pos_);
        if (line.find_first_of("\r\n") != std::string::npos) {
          return ProtocolError("bare CR or LF inside a line");
        }
        pos_ = cr + 2;
        return line;
      }
      if (buf_.size() - pos_ > kMaxLineBytes) return ProtocolError("line longer than 1 MiB");
      scan = std::max(pos_, buf_.size() - (buf_.empty() ? 0 : 1));  // a '\r' may end the buffer
      CORTEX_RETURN_IF_ERROR(fill_(&buf_));
    }
  }

  Status Need(size_t n) {
    while (buf_.size() - pos_ < n) CORTEX_RETURN_IF_ERROR(fill_(&buf_));
    return Status::Ok();
  }

  std::string& buf_;
  size_t& pos_;
  std::function<Status(std::string*)> fill_;
};

bool HasErrorPrefix(const std::string& error, std::string_view prefix) {
  return error.compare(0, prefix.size(), prefix) == 0 &&
         (error.size() == prefix.size() || error[prefix.size()] == ' ');
}

// Decodes %XX escapes; false for a malformed one.
bool PercentDecode(std::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    unsigned value = 0;
    if (i + 2 >= in.size()) return false;
    auto [end, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, value, 16);
    if (ec != std::errc() || end != in.data() + i + 3) return false;
    out->push_back(static_cast<char>(value));
    i += 2;
  }
  return true;
}

void AppendQuoted(const std::string& s, std::string* out) {
  out->push_back('"');
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>(c));
    } else if (c >= 0x20 && c < 0x7f) {
      out->push_back(static_cast<char>(c));
    } else {
      std::array<char, 8> hex{};
      std::snprintf(hex.data(), hex.size(), "\\x%02x", c);
      out->append(hex.data());
    }
  }
  out->push_back('"');
}

}  // namespace

std::string RedisReply::DebugString() const {
  std::string out;
  switch (type) {
    case Type::kNil:
      return "nil";
    case Type::kString:
      AppendQuoted(str, &out);
      return out;
    case Type::kStatus:
      return "(status) " + str;
    case Type::kInteger:
      return "(integer) " + std::to_string(integer);
    case Type::kError:
      return "(error) " + str;
    case Type::kArray:
      out = "[";
      for (size_t i = 0; i < elements.size(); ++i) {
        if (i > 0) out += ", ";
        out += elements[i].DebugString();
      }
      return out + "]";
  }
  return out;
}

Status RedisReplyStatus(const RedisReply& reply) {
  if (!reply.is_error()) return Status::Ok();
  const std::string& e = reply.str;
  std::string message = "Redis: " + e;
  if (HasErrorPrefix(e, "WRONGTYPE")) return FailedPreconditionError(std::move(message));
  if (HasErrorPrefix(e, "NOAUTH") || HasErrorPrefix(e, "WRONGPASS")) {
    return {StatusCode::kUnauthenticated, std::move(message)};
  }
  if (HasErrorPrefix(e, "NOPERM")) return {StatusCode::kPermissionDenied, std::move(message)};
  if (HasErrorPrefix(e, "OOM")) return ResourceExhaustedError(std::move(message));
  for (std::string_view p : {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "READONLY"}) {
    if (HasErrorPrefix(e, p)) return UnavailableError(std::move(message));
  }
  return InvalidArgumentError(std::move(message));
}

std::string RedisUrl::Address() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

std::string RedisUrl::Redacted() const {
  std::string out = "redis://";
  if (!user.empty() || !password.empty()) out += user + ":***@";
  out += Address();
  if (db != 0) out += "/" + std::to_string(db);
  return out;
}

Result<RedisUrl> ParseRedisUrl(std::string_view url) {
  // Messages never quote the whole URL: it may hold a password.
  auto bad = [](std::string m) { return InvalidArgumentError("Redis URL: " + std::move(m)); };
  constexpr std::string_view kScheme = "redis://";
  if (url.starts_with("rediss://")) return bad("TLS (rediss://) is not supported");
  if (!url.starts_with(kScheme)) return bad("must start with redis://");
  std::string_view rest = url.substr(kScheme.size());
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return bad("query strings and fragments are not supported");
  }
  RedisUrl out;
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (const size_t at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    const size_t colon = userinfo.find(':');
    if (colon == std::string_view::npos) return bad("credentials must be [user]:password@");
    if (!PercentDecode(userinfo.substr(0, colon), &out.user) ||
        !PercentDecode(userinfo.substr(colon + 1), &out.password)) {
      return bad("bad %-escape in the user or password");
    }
  }
  std::string_view port_text;
  bool has_port = false;
  if (authority.starts_with('[')) {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unterminated '[' in the host");
    out.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after[0] != ':') return bad("unexpected text after ']' in the host");
    has_port = !after.empty();
    if (has_port) port_text = after.substr(1);
    for (char c : out.host) {
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.' && c != '%') {
        return bad("invalid character in the IPv6 host");
      }
    }
  } else {
    const size_t colon = authority.find(':');
    out.host = std::string(authority.substr(0, colon));
    has_port = colon != std::string_view::npos;
    if (has_port) port_text = authority.substr(colon + 1);
    if (port_text.find(':') != std::string_view::npos) {
      return bad("an IPv6 host must be written in brackets ([::1]:6379)");
    }
    for (char c : out.host) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') {
        return bad("invalid character in the host '" + out.host + "'");
      }
    }
  }
  if (out.host.empty()) return bad("no host");
  if (has_port) {
    int64_t port = 0;
    if (port_text.size() > 5 || !ParseInt64(port_text, &port) || port < 1 || port > 65535 ||
        port_text[0] == '-') {
      return bad("port '" + std::string(port_text) + "' is not a number in 1..65535");
    }
    out.port = static_cast<int>(port);
  }
  if (slash != std::string_view::npos) {
    std::string_view db_text = rest.substr(slash + 1);
    if (!db_text.empty()) {
      int64_t db = 0;
      if (db_text.size() > 9 || !ParseInt64(db_text, &db) || db < 0 || db_text[0] == '-') {
        return bad("db '" + std::string(db_text) + "' is not a non-negative integer");
      }
      out.db = static_cast<int>(db);
    }
  }
  return out;
}

namespace redis_internal {

void AppendCommand(const std::vector<std::string>& argv, std::string* out) {
  *out += '*';
  *out += std::to_string(argv.size());
  *out += "\r\n";
  for (const std::string& arg : argv) {
    *out += '$';
    *out += std::to_string(arg.size());
    *out += "\r\n";
    *out += arg;
    *out += "\r\n";
  }
}

Result<std::vector<RedisReply>> ParseReplies(std::string_view data) {
  std::string buf(data);
  size_t pos = 0;
  RespReader reader(&buf, &pos, [](std::string*) { return ProtocolError("truncated reply"); });
  std::vector<RedisReply> replies;
  while (pos < buf.size()) {
    CORTEX_ASSIGN_OR_RETURN(RedisReply reply, reader.Read());
    replies.push_back(std::move(reply));
  }
  return replies;
}

}  // namespace redis_internal

// ---- RedisClient -------------------------------------------------------------------------

RedisClient::RedisClient(RedisUrl url, std::chrono::milliseconds timeout)
    : url_(std::move(url)), timeout_(timeout) {}

RedisClient::~RedisClient() { CloseLocked(); }

Result<std::unique_ptr<RedisClient>> RedisClient::Connect(const std::string& url,
                                                          std::chrono::milliseconds timeout) {
  CORTEX_ASSIGN_OR_RETURN(RedisUrl parsed, ParseRedisUrl(url));
  if (timeout.count() <= 0) return InvalidArgumentError("Redis timeout must be positive");
  std::unique_ptr<RedisClient> client(new RedisClient(std::move(parsed), timeout));
  MutexLock lock(client->mu_);
  CORTEX_RETURN_IF_ERROR(client->ConnectLocked());
  return client;
}

void RedisClient::CloseLocked() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  std::string().swap(rbuf_);
  rpos_ = 0;
}

Status RedisClient::ConnectLocked() {
  CloseLocked();
  const std::string where = "cannot connect to Redis at " + url_.Address() + ": ";
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addrs = nullptr;
  const std::string port = std::to_string(url_.port);
  if (int rc = ::getaddrinfo(url_.host.c_str(), port.c_str(), &hints, &addrs); rc != 0) {
    return UnavailableError(where + ::gai_strerror(rc));
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  std::string last_error = "no address";
  for (addrinfo* a = addrs; a != nullptr && fd_ < 0; a = a->ai_next) {
    int fd = ::socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_error = ErrnoText(errno);
      continue;
    }
    int err = ::connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd p{fd, POLLOUT, 0};
      int rc = 0;
      do {
        rc = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
      } while (rc < 0 && errno == EINTR);
      socklen_t len = sizeof(err);
      if (rc == 0) {
        err = ETIMEDOUT;
      } else if (rc < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
      }
    }
    if (err != 0) {
      last_error = err == ETIMEDOUT ? "timed out after " + std::to_string(timeout_.count()) + " ms"
                                    : ErrnoText(err);
      ::close(fd);
      continue;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout_.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout_.count() % 1000) * 1000);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    fd_ = fd;
  }
  ::freeaddrinfo(addrs);
  if (fd_ < 0) return UnavailableError(where + last_error);

  // Handshake, in one round trip: [AUTH] [SELECT] PING.
  std::string request;
  if (!url_.password.empty() || !url_.user.empty()) {
    std::vector<std::string> auth = {"AUTH"};
    if (!url_.user.empty()) auth.push_back(url_.user);
    auth.push_back(url_.password);
    redis_internal::AppendCommand(auth, &request);
  }
  if (url_.db != 0) redis_internal::AppendCommand({"SELECT", std::to_string(url_.db)}, &request);
  redis_internal::AppendCommand({"PING"}, &request);
  bool sent_any = false;
  Status st = SendLocked(request, &sent_any);
  const std::string at = "Redis at " + url_.Address();
  auto fail = [this](Status s) CORTEX_REQUIRES(mu_) {
    CloseLocked();
    return s;
  };
  if (!st.ok()) return fail(st);
  if (!url_.password.empty() || !url_.user.empty()) {
    CORTEX_ASSIGN_OR_RETURN(RedisReply auth, ReadReplyLocked());
    if (auth.is_error()) {
      return fail({StatusCode::kUnauthenticated, at + " refused the credentials: " + auth.str});
    }
  }
  if (url_.db != 0) {
    CORTEX_ASSIGN_OR_RETURN(RedisReply select, ReadReplyLocked());
    if (select.is_error() && !HasErrorPrefix(select.str, "NOAUTH")) {
      return fail(
          InvalidArgumentError(at + " refused db " + std::to_string(url_.db) + ": " + select.str));
    }
  }
  CORTEX_ASSIGN_OR_RETURN(RedisReply pong, ReadReplyLocked());
  if (pong.is_error() && HasErrorPrefix(pong.str, "NOAUTH")) {
    return fail({StatusCode::kUnauthenticated, at + " requires a password: " + pong.str});
  }
  if (pong.type != RedisReply::Type::kStatus || pong.str != "PONG") {
    return fail(UnavailableError(at + " answered PING with " + pong.DebugString()));
  }
  return Status::Ok();
}

bool RedisClient::ConnectionAliveLocked() {
  if (rpos_ != rbuf_.size()) return false;  // unread bytes: the stream is out of step
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, 0) == 0) return true;
  // Readable while no command is outstanding: closed by the server (EOF), or reset.
  char byte = 0;
  const ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

Status RedisClient::SendLocked(std::string_view data, bool* sent_any) {
  *sent_any = false;
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      *sent_any = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return UnavailableError("timed out after " + std::to_string(timeout_.count()) +
                              " ms writing to Redis at " + url_.Address());
    }
    return UnavailableError("cannot write to Redis at " + url_.Address() + ": " +
                            ErrnoText(n < 0 ? errno : EPIPE));
  }
  return Status::Ok();
}

Result<RedisReply> RedisClient::ReadReplyLocked() {
  if (rpos_ == rbuf_.size()) {
    rbuf_.clear();
    rpos_ = 0;
  } else if (rpos_ >= kCompactAfterBytes) {
    rbuf_.erase(0, rpos_);
    rpos_ = 0;
  }
  // Called by the reader below, with mu_ still held.
  auto fill = [this](std::string* buf) CORTEX_REQUIRES(mu_) -> Status {
    std::array<char, 16384> chunk;
    for (;;) {
      const ssize_t n = ::recv(fd_, chunk.data(), chunk.size(), 0);
      if (n > 0) {
        buf->append(chunk.data(), static_cast<size_t>(n));
        return Status::Ok();
      }
      if (n == 0) return UnavailableError("connection closed by Redis at " + url_.Address());
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return UnavailableError("no reply from Redis at " + url_.Address() + " within " +
                                std::to_string(timeout_.count()) + " ms");
      }
      return UnavailableError("cannot read from Redis at " + url_.Address() + ": " +
                              ErrnoText(errno));
    }
  };
  Result<RedisReply> reply = RespReader(&rbuf_, &rpos_, fill).Read();
  if (!reply.ok()) {
    Status st = reply.status();
    CloseLocked();  // the stream is out of step (or gone): never reuse it
    if (st.code() == StatusCode::kInvalidArgument) {
      return UnavailableError("protocol error from Redis at " + url_.Address() + ": " +
                              st.message());
    }
    return st;
  }
  if (rbuf_.capacity() > (size_t{1} << 20) && rpos_ == rbuf_.size()) std::string().swap(rbuf_);
  return reply;
}

Result<std::vector<RedisReply>> RedisClient::RoundTripLocked(const std::string& request,
                                                             size_t count) {
  bool fresh = false;
  if (fd_ >= 0 && !ConnectionAliveLocked()) CloseLocked();
  if (fd_ < 0) {
    CORTEX_RETURN_IF_ERROR(ConnectLocked());
    fresh = true;
  }
  bool sent_any = false;
  if (Status st = SendLocked(request, &sent_any); !st.ok()) {
    CloseLocked();
    // Nothing reached the server, so the request can go once more, on a new connection.
    if (fresh || sent_any) return st;
    CORTEX_RETURN_IF_ERROR(ConnectLocked());
    if (Status again = SendLocked(request, &sent_any); !again.ok()) {
      CloseLocked();
      return again;
    }
  }
  std::vector<RedisReply> replies;
  replies.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    CORTEX_ASSIGN_OR_RETURN(RedisReply reply, ReadReplyLocked());
    replies.push_back(std::move(reply));
  }
  return replies;
}

Result<RedisReply> RedisClient::Command(const std::vector<std::string>& argv) {
  if (argv.empty()) return InvalidArgumentError("Redis command: empty argv");
  std::string request;
  redis_internal::AppendCommand(argv, &request);
  MutexLock lock(mu_);
  CORTEX_ASSIGN_OR_RETURN(std::vector<RedisReply> replies, RoundTripLocked(request, 1));
  return std::move(replies[0]);
}

Status RedisClient::Exec(const std::vector<std::string>& argv) {
  CORTEX_ASSIGN_OR_RETURN(RedisReply reply, Command(argv));
  return RedisReplyStatus(reply);
}

Result<std::vector<RedisReply>> RedisClient::Pipeline(
    const std::vector<std::vector<std::string>>& commands) {
  std::string request;
  for (size_t i = 0; i < commands.size(); ++i) {
    if (commands[i].empty()) {
      return InvalidArgumentError("Redis pipeline: command " + std::to_string(i) + " is empty");
    }
    redis_internal::AppendCommand(commands[i], &request);
  }
  if (commands.empty()) return std::vector<RedisReply>{};
  MutexLock lock(mu_);
  return RoundTripLocked(request, commands.size());
}

Result<std::vector<RedisReply>> RedisClient::Transaction(
    const std::vector<std::vector<std::string>>& commands) {
  for (size_t i = 0; i < commands.size(); ++i) {
    if (commands[i].empty()) {
      return InvalidArgumentError("Redis transaction: command " + std::to_string(i) + " is empty");
    }
  }
  std::vector<std::vector<std::string>> all;
  all.reserve(commands.size() + 2);
  all.push_back({"MULTI"});
  all.insert(all.end(), commands.begin(), commands.end());
  all.push_back({"EXEC"});
  CORTEX_ASSIGN_OR_RETURN(std::vector<RedisReply> replies, Pipeline(all));
  if (replies[0].is_error()) {
    return FailedPreconditionError("Redis MULTI failed: " + replies[0].str);
  }
  RedisReply& exec = replies.back();
  if (exec.type == RedisReply::Type::kArray && exec.elements.size() == commands.size()) {
    return std::move(exec.elements);
  }
  if (exec.is_nil()) return ConflictError("Redis transaction aborted: a WATCHed key changed");
  for (size_t i = 1; i + 1 < replies.size(); ++i) {
    if (replies[i].is_error()) {
      return InvalidArgumentError("Redis refused to queue transaction command " +
                                  std::to_string(i - 1) + " (" + commands[i - 1][0] +
                                  "), nothing ran: " + replies[i].str);
    }
  }
  return UnavailableError("unexpected reply to EXEC from Redis at " + url_.Address() + ": " +
                          exec.DebugString());
}

}  // namespace cortex::store
