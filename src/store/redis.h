// A minimal Redis client: RESP2 over one TCP connection, no dependencies beyond POSIX sockets.
// Cortex publishes service discovery records (and later hot state) to Redis when a Redis URL is
// configured; this is the whole of its Redis support.
//
// Replies. A command's reply is a RedisReply; an error reply from Redis ("-WRONGTYPE ...") is a
// reply of type kError, not a Status: the command reached Redis, which answered. A Status is
// returned only when there is no answer: the server cannot be reached, the connection broke, a
// read or write timed out, or the server sent bytes that are not RESP2 (all Unavailable; the
// connection is then closed, since its stream can no longer be trusted).
//
// Reconnects. A call that finds its connection closed by the server (restarted, or idle clients
// timed out) reconnects once, transparently, before sending anything. A command is never sent
// twice: when the connection breaks after a command may have reached Redis, the call fails
// (Unavailable) and the next call reconnects, so a non-idempotent command (INCR) never runs
// twice behind the caller's back.
//
// Thread safety: every method may be called from any thread; one mutex serialises the calls on
// the single connection (a pipeline is one call).
//
// Not supported: TLS (rediss://), Unix sockets, RESP3 (HELLO 3), and commands that turn the
// connection into a push stream (SUBSCRIBE, MONITOR).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/mutex.h"
#include "common/status.h"

namespace cortex::store {

// One RESP2 reply.
struct RedisReply {
  enum class Type {
    kNil,      // a null bulk string ($-1) or null array (*-1): GET of a missing key
    kString,   // a bulk string ($): binary-safe, in `str`
    kStatus,   // a simple string (+): "OK", "PONG", "QUEUED", in `str`
    kInteger,  // an integer (:), in `integer`
    kArray,    // an array (*), in `elements`
    kError,    // an error reply (-): "WRONGTYPE Operation against a key ...", in `str`
  };
  Type type = Type::kNil;
  std::string str;
  int64_t integer = 0;
  std::vector<RedisReply> elements;

  bool is_nil() const { return type == Type::kNil; }
  bool is_error() const { return type == Type::kError; }
  // A short human-readable rendering for messages and test failures: "nil", "\"abc\"",
  // "(status) OK", "(integer) 3", "(error) ERR ...", "[\"a\", (integer) 1]".
  std::string DebugString() const;
};

// OK unless `reply` is an error reply, which becomes a Status by its error prefix: WRONGTYPE ->
// FailedPrecondition, NOAUTH/WRONGPASS -> Unauthenticated, NOPERM -> PermissionDenied, OOM ->
// ResourceExhausted, LOADING/BUSY/TRYAGAIN/MASTERDOWN/READONLY -> Unavailable, anything else
// (ERR ...) -> InvalidArgument. The message is "Redis: <error text>".
Status RedisReplyStatus(const RedisReply& reply);

// A parsed redis://[[user]:password@]host[:port][/db] URL. The user and password may be
// percent-encoded (%40 for '@'); an IPv6 host is written in brackets ([::1]:6379).
struct RedisUrl {
  std::string host;
  int port = 6379;
  std::string user;      // "" for the default user (AUTH password)
  std::string password;  // "" for no AUTH
  int db = 0;            // SELECTed on connect when not 0

  // "host:port" ("[::1]:6379" for IPv6), for messages.
  std::string Address() const;
  // The URL with the password replaced by "***", for logs.
  std::string Redacted() const;
};

// InvalidArgument naming what is wrong: the scheme, an empty host, a bad port or db, ...
Result<RedisUrl> ParseRedisUrl(std::string_view url);

class RedisClient {
 public:
  // Connects to `url`, then sends AUTH (when the URL has a password), SELECT (when its db is not
  // 0) and PING. InvalidArgument for a malformed URL or a db Redis refuses; Unauthenticated when
  // Redis refuses the credentials or wants some; Unavailable when the server cannot be reached
  // ("cannot connect to Redis at host:port: Connection refused") or does not speak RESP2.
  // `timeout` bounds connecting and every read or write on the socket (a wait for a reply).
  static Result<std::unique_ptr<RedisClient>> Connect(
      const std::string& url, std::chrono::milliseconds timeout = std::chrono::seconds(2));

  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Sends one command (argv[0] is its name; every argument is a binary-safe bulk string) and
  // returns its reply. InvalidArgument for an empty argv.
  Result<RedisReply> Command(const std::vector<std::string>& argv);

  // Command, with an error reply turned into a Status (RedisReplyStatus): for writes whose reply
  // is only "OK" or a count.
  Status Exec(const std::vector<std::string>& argv);

  // Sends all the commands in one write, then reads their replies, in order (one round trip).
  // Not atomic: other clients' commands may run in between (see Transaction).
  Result<std::vector<RedisReply>> Pipeline(const std::vector<std::vector<std::string>>& commands);

  // MULTI, the commands, EXEC, in one round trip: the commands run atomically, and their replies
  // are returned in order. A command that fails when it runs (WRONGTYPE) has an error reply and
  // does not stop the others (Redis has no rollback). A command Redis refuses to queue (unknown
  // command, wrong number of arguments) aborts the whole transaction, nothing runs, and the
  // result is InvalidArgument naming the command.
  Result<std::vector<RedisReply>> Transaction(
      const std::vector<std::vector<std::string>>& commands);

  const RedisUrl& url() const { return url_; }

 private:
  RedisClient(RedisUrl url, std::chrono::milliseconds timeout);

  Status ConnectLocked() CORTEX_REQUIRES(mu_);
  void CloseLocked() CORTEX_REQUIRES(mu_);
  bool ConnectionAliveLocked() CORTEX_REQUIRES(mu_);
  Status SendLocked(std::string_view data, bool* sent_any) CORTEX_REQUIRES(mu_);
  Result<RedisReply> ReadReplyLocked() CORTEX_REQUIRES(mu_);
  // Sends `request` (`count` encoded commands) and reads `count` replies, reconnecting once
  // first when the connection turns out to be closed.
  Result<std::vector<RedisReply>> RoundTripLocked(const std::string& request, size_t count)
      CORTEX_REQUIRES(mu_);

  const RedisUrl url_;
  const std::chrono::milliseconds timeout_;
  Mutex mu_;
  int fd_ CORTEX_GUARDED_BY(mu_) = -1;       // -1 when not connected
  std::string rbuf_ CORTEX_GUARDED_BY(mu_);  // bytes received and not yet parsed, from rpos_
  size_t rpos_ CORTEX_GUARDED_BY(mu_) = 0;
};

namespace redis_internal {

// The RESP2 encoding of a command: *<n>\r\n then $<len>\r\n<arg>\r\n per argument.
void AppendCommand(const std::vector<std::string>& argv, std::string* out);

// Parses `data`, which must hold whole replies only. InvalidArgument for anything that is not
// RESP2 or ends inside a reply. For tests of the parser against malformed input.
Result<std::vector<RedisReply>> ParseReplies(std::string_view data);

}  // namespace redis_internal

}  // namespace cortex::store
