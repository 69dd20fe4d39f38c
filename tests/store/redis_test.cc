// The Redis client against a real redis-server (started per test on a free loopback port, in a
// temporary folder, and killed by PID), plus the parser and URL parser on their own and a fake
// server that answers garbage.
#include "store/redis.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "store/redis_server.h"

namespace cortex::store {
namespace {

namespace fs = std::filesystem;
using namespace std::literals;
using Type = RedisReply::Type;
using redis_internal::ParseReplies;

// ---- Helpers -------------------------------------------------------------------------------

// The real server (its folder, port and PID) comes from store/redis_server.h.
using cortex::testing::kNoRedis;
using cortex::testing::RedisServer;
using cortex::testing::RedisServerBinary;

int FreePort() { return cortex::testing::FreeLoopbackPort(); }

std::unique_ptr<RedisClient> MustConnect(const std::string& url) {
  auto client = RedisClient::Connect(url);
  CORTEX_CHECK_MSG(client.ok(), client.status().ToString());
  return std::move(client).value();
}

RedisReply Must(Result<RedisReply> reply) {
  CORTEX_CHECK_MSG(reply.ok(), reply.status().ToString());
  return std::move(reply).value();
}

::testing::AssertionResult IsString(const RedisReply& r, const std::string& want) {
  if (r.type == Type::kString && r.str == want) return ::testing::AssertionSuccess();
  RedisReply w;
  w.type = Type::kString;
  w.str = want;
  return ::testing::AssertionFailure() << "got " << r.DebugString() << ", want " << w.DebugString();
}

class RedisTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(RedisServerBinary().empty()) << kNoRedis;
    const std::string error = server_.Start();
    ASSERT_TRUE(error.empty()) << error;
    client_ = MustConnect(server_.Url());
  }
  void TearDown() override {
    client_.reset();
    server_.Stop();
  }

  RedisServer server_;
  std::unique_ptr<RedisClient> client_;
};

// ---- Against a real server ---------------------------------------------------------------

TEST_F(RedisTest, Ping) {
  RedisReply pong = Must(client_->Command({"PING"}));
  EXPECT_EQ(pong.type, Type::kStatus);
  EXPECT_EQ(pong.str, "PONG");
  EXPECT_TRUE(IsString(Must(client_->Command({"PING", "hello"})), "hello"));
  EXPECT_EQ(client_->url().port, server_.port());
}

TEST_F(RedisTest, SetGetDel) {
  RedisReply ok = Must(client_->Command({"SET", "k", "v"}));
  EXPECT_EQ(ok.type, Type::kStatus);
  EXPECT_EQ(ok.str, "OK");
  EXPECT_TRUE(IsString(Must(client_->Command({"GET", "k"})), "v"));
  EXPECT_TRUE(client_->Exec({"SET", "empty", ""}).ok());
  EXPECT_TRUE(IsString(Must(client_->Command({"GET", "empty"})), ""));  // not nil
  RedisReply del = Must(client_->Command({"DEL", "k", "empty", "absent"}));
  EXPECT_EQ(del.type, Type::kInteger);
  EXPECT_EQ(del.integer, 2);
  EXPECT_TRUE(Must(client_->Command({"GET", "k"})).is_nil());
  EXPECT_EQ(Must(client_->Command({"DEL", "k"})).integer, 0);
}

TEST_F(RedisTest, BinarySafeKeysAndValues) {
  std::string all_bytes;
  for (int i = 0; i < 256; ++i) all_bytes.push_back(static_cast<char>(i));
  const std::vector<std::string> values = {
      std::string("a\r\nb\0c", 6), "\r\n",   std::string(1, '\0'), "$3\r\nfoo\r\n", "*1\r\n:1\r\n",
      "-ERR not an error\r\n",     all_bytes};
  for (size_t i = 0; i < values.size(); ++i) {
    const std::string key = std::string("key\r\n\0", 6) + std::to_string(i);
    ASSERT_TRUE(client_->Exec({"SET", key, values[i]}).ok());
    EXPECT_TRUE(IsString(Must(client_->Command({"GET", key})), values[i])) << i;
    EXPECT_EQ(Must(client_->Command({"STRLEN", key})).integer,
              static_cast<int64_t>(values[i].size()));
  }
  // A value much larger than one socket read.
  std::mt19937 rng(7);
  std::string big(3 << 20, '\0');
  for (char& c : big) c = static_cast<char>(rng());
  ASSERT_TRUE(client_->Exec({"SET", "big", big}).ok());
  EXPECT_TRUE(Must(client_->Command({"GET", "big"})).str == big);
}

TEST_F(RedisTest, HashReplies) {
  RedisReply added = Must(client_->Command({"HSET", "h", "f1", "v1", "f2", "v2", "f3", ""}));
  EXPECT_EQ(added.type, Type::kInteger);
  EXPECT_EQ(added.integer, 3);
  RedisReply all = Must(client_->Command({"HGETALL", "h"}));
  ASSERT_EQ(all.type, Type::kArray);
  ASSERT_EQ(all.elements.size(), 6u);
  std::map<std::string, std::string> fields;
  for (size_t i = 0; i + 1 < all.elements.size(); i += 2) {
    EXPECT_EQ(all.elements[i].type, Type::kString);
    fields[all.elements[i].str] = all.elements[i + 1].str;
  }
  EXPECT_EQ(fields, (std::map<std::string, std::string>{{"f1", "v1"}, {"f2", "v2"}, {"f3", ""}}));
  RedisReply mixed = Must(client_->Command({"HMGET", "h", "f1", "nope"}));
  ASSERT_EQ(mixed.elements.size(), 2u);
  EXPECT_TRUE(IsString(mixed.elements[0], "v1"));
  EXPECT_TRUE(mixed.elements[1].is_nil());
  RedisReply none = Must(client_->Command({"HGETALL", "absent"}));
  EXPECT_EQ(none.type, Type::kArray);
  EXPECT_TRUE(none.elements.empty());
  EXPECT_EQ(all.DebugString().front(), '[');
}

TEST_F(RedisTest, NilAndIntegerReplies) {
  EXPECT_EQ(Must(client_->Command({"GET", "nothing"})).type, Type::kNil);
  EXPECT_EQ(Must(client_->Command({"INCR", "n"})).integer, 1);
  EXPECT_EQ(Must(client_->Command({"INCRBY", "n", "-11"})).integer, -10);
  EXPECT_EQ(Must(client_->Command({"INCRBY", "n", "9223372036854775000"})).integer,
            int64_t{9223372036854774990});
  EXPECT_EQ(Must(client_->Command({"EXISTS", "n", "nothing"})).integer, 1);
  // A blocking pop that times out: a RESP2 null array.
  EXPECT_TRUE(Must(client_->Command({"BLPOP", "no-list", "0.01"})).is_nil());
}

TEST_F(RedisTest, ErrorRepliesAreRepliesNotStatuses) {
  ASSERT_TRUE(client_->Exec({"SET", "s", "x"}).ok());
  RedisReply wrong = Must(client_->Command({"LPUSH", "s", "y"}));
  EXPECT_EQ(wrong.type, Type::kError);
  EXPECT_TRUE(wrong.str.starts_with("WRONGTYPE")) << wrong.str;
  RedisReply unknown = Must(client_->Command({"NOSUCHCOMMAND", "a"}));
  EXPECT_TRUE(unknown.is_error());
  EXPECT_TRUE(unknown.str.starts_with("ERR unknown command")) << unknown.str;
  // The connection is still good.
  EXPECT_TRUE(IsString(Must(client_->Command({"GET", "s"})), "x"));
  // Exec maps error replies to Statuses.
  Status st = client_->Exec({"LPUSH", "s", "y"});
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_NE(st.message().find("WRONGTYPE"), std::string::npos);
  EXPECT_EQ(client_->Exec({"SET", "s"}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Command({}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RedisTest, PipelineOfThousandCommands) {
  std::vector<std::vector<std::string>> sets, gets;
  for (int i = 0; i < 1000; ++i) {
    sets.push_back({"SET", "key:" + std::to_string(i), "value:" + std::to_string(i)});
    gets.push_back({"GET", "key:" + std::to_string(i)});
  }
  auto set_replies = client_->Pipeline(sets);
  ASSERT_TRUE(set_replies.ok()) << set_replies.status().ToString();
  ASSERT_EQ(set_replies->size(), 1000u);
  for (const RedisReply& r : *set_replies) EXPECT_EQ(r.str, "OK");
  auto get_replies = client_->Pipeline(gets);
  ASSERT_TRUE(get_replies.ok()) << get_replies.status().ToString();
  ASSERT_EQ(get_replies->size(), 1000u);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_TRUE(IsString((*get_replies)[i], "value:" + std::to_string(i))) << i;
  }
  // An error in the middle keeps the replies in step.
  auto mixed = client_->Pipeline({{"GET", "key:1"}, {"LPUSH", "key:2", "x"}, {"GET", "key:3"}});
  ASSERT_TRUE(mixed.ok());
  EXPECT_TRUE(IsString((*mixed)[0], "value:1"));
  EXPECT_TRUE((*mixed)[1].is_error());
  EXPECT_TRUE(IsString((*mixed)[2], "value:3"));
  EXPECT_TRUE(client_->Pipeline({})->empty());
  EXPECT_EQ(client_->Pipeline({{"PING"}, {}}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RedisTest, Transactions) {
  auto replies =
      client_->Transaction({{"SET", "a", "1"}, {"INCR", "a"}, {"LPUSH", "a", "x"}, {"GET", "a"}});
  ASSERT_TRUE(replies.ok()) << replies.status().ToString();
  ASSERT_EQ(replies->size(), 4u);
  EXPECT_EQ((*replies)[0].str, "OK");
  EXPECT_EQ((*replies)[1].integer, 2);
  EXPECT_TRUE((*replies)[2].is_error());  // fails when run; the others still run
  EXPECT_TRUE(IsString((*replies)[3], "2"));

  // A command Redis refuses to queue aborts the whole transaction.
  auto aborted = client_->Transaction({{"SET", "b", "1"}, {"NOSUCHCMD", "x"}});
  ASSERT_FALSE(aborted.ok());
  EXPECT_EQ(aborted.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(aborted.status().message().find("NOSUCHCMD"), std::string::npos)
      << aborted.status().ToString();
  EXPECT_TRUE(Must(client_->Command({"GET", "b"})).is_nil());

  // WATCH + a concurrent change: EXEC answers nil.
  ASSERT_TRUE(client_->Exec({"WATCH", "w"}).ok());
  ASSERT_TRUE(MustConnect(server_.Url())->Exec({"SET", "w", "other"}).ok());
  EXPECT_EQ(client_->Transaction({{"SET", "w", "mine"}}).status().code(), StatusCode::kConflict);
  EXPECT_TRUE(IsString(Must(client_->Command({"GET", "w"})), "other"));

  // MULTI/EXEC by hand, through Command.
  EXPECT_EQ(Must(client_->Command({"MULTI"})).str, "OK");
  EXPECT_EQ(Must(client_->Command({"SET", "c", "3"})).str, "QUEUED");
  RedisReply exec = Must(client_->Command({"EXEC"}));
  ASSERT_EQ(exec.type, Type::kArray);
  ASSERT_EQ(exec.elements.size(), 1u);
  EXPECT_EQ(exec.elements[0].str, "OK");
}

TEST_F(RedisTest, SelectsTheUrlsDatabase) {
  auto db5 = MustConnect(server_.Url("/5"));
  EXPECT_EQ(db5->url().db, 5);
  ASSERT_TRUE(db5->Exec({"SET", "where", "five"}).ok());
  EXPECT_TRUE(Must(client_->Command({"GET", "where"})).is_nil());
  EXPECT_TRUE(IsString(Must(MustConnect(server_.Url("/5"))->Command({"GET", "where"})), "five"));
  auto bad = RedisClient::Connect(server_.Url("/99"));  // the server has 16 databases
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument) << bad.status().ToString();
  EXPECT_NE(bad.status().message().find("db 99"), std::string::npos);
}

TEST_F(RedisTest, ReconnectsAfterServerRestart) {
  ASSERT_TRUE(client_->Exec({"SET", "k", "v"}).ok());
  const int port = server_.port();
  server_.Stop();
  ASSERT_EQ(server_.Start(port), "");
  // The first call after the restart finds the connection closed and reconnects.
  RedisReply pong = Must(client_->Command({"PING"}));
  EXPECT_EQ(pong.str, "PONG");
  EXPECT_TRUE(Must(client_->Command({"GET", "k"})).is_nil());  // no persistence
  ASSERT_TRUE(client_->Exec({"SET", "k", "v2"}).ok());

  // While the server is down, calls fail (Unavailable) and do not hang...
  server_.Stop();
  auto down = client_->Command({"GET", "k"});
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(down.status().message(), "cannot connect to Redis at 127.0.0.1:" +
                                         std::to_string(port) + ": Connection refused");
  EXPECT_EQ(client_->Pipeline({{"PING"}}).status().code(), StatusCode::kUnavailable);
  // ... and work again once it is back.
  ASSERT_EQ(server_.Start(port), "");
  EXPECT_EQ(Must(client_->Command({"PING"})).str, "PONG");
}

TEST_F(RedisTest, ReconnectsAfterTheServerClosesTheConnection) {
  RedisReply id = Must(client_->Command({"CLIENT", "ID"}));
  ASSERT_EQ(id.type, Type::kInteger);
  auto admin = MustConnect(server_.Url());
  ASSERT_EQ(Must(admin->Command({"CLIENT", "KILL", "ID", std::to_string(id.integer)})).integer, 1);
  RedisReply id2 = Must(client_->Command({"CLIENT", "ID"}));
  EXPECT_NE(id2.integer, id.integer);
}

TEST_F(RedisTest, ConcurrentUseFromSeveralThreads) {
  constexpr int kThreads = 8, kOps = 250;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kOps; ++i) {
        const std::string key = "t" + std::to_string(t) + ":" + std::to_string(i);
        const std::string value(static_cast<size_t>(i % 50), static_cast<char>('a' + t));
        auto incr = client_->Command({"INCR", "counter"});
        if (!incr.ok() || incr->type != Type::kInteger) ++failures;
        if (!client_->Exec({"SET", key, value}).ok()) ++failures;
        auto get = client_->Command({"GET", key});
        if (!get.ok() || get->str != value) ++failures;
        if (i % 25 == 0) {
          auto pipe = client_->Pipeline({{"GET", key}, {"STRLEN", key}});
          if (!pipe.ok() || (*pipe)[0].str != value ||
              (*pipe)[1].integer != static_cast<int64_t>(value.size())) {
            ++failures;
          }
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_TRUE(
      IsString(Must(client_->Command({"GET", "counter"})), std::to_string(kThreads * kOps)));
}

TEST(RedisAuthTest, RequirePass) {
  ASSERT_FALSE(RedisServerBinary().empty()) << kNoRedis;
  RedisServer server({"--requirepass", "s3cret:@/"});
  ASSERT_EQ(server.Start(), "");
  const std::string hostport = "127.0.0.1:" + std::to_string(server.port());

  auto none = RedisClient::Connect("redis://" + hostport);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kUnauthenticated) << none.status().ToString();
  EXPECT_NE(none.status().message().find("requires a password"), std::string::npos);

  auto wrong = RedisClient::Connect("redis://:nope@" + hostport);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.status().code(), StatusCode::kUnauthenticated) << wrong.status().ToString();
  EXPECT_EQ(wrong.status().message().find("nope"), std::string::npos);

  auto right = RedisClient::Connect("redis://:s3cret%3A%40%2F@" + hostport + "/2");
  ASSERT_TRUE(right.ok()) << right.status().ToString();
  ASSERT_TRUE((*right)->Exec({"SET", "k", "v"}).ok());
  auto as_user = RedisClient::Connect("redis://default:s3cret%3A%40%2F@" + hostport + "/2");
  ASSERT_TRUE(as_user.ok()) << as_user.status().ToString();
  EXPECT_TRUE(IsString(Must((*as_user)->Command({"GET", "k"})), "v"));

  // A reconnect authenticates and selects again.
  ASSERT_TRUE((*as_user)->Exec({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no"}).ok());
  EXPECT_TRUE(IsString(Must((*right)->Command({"GET", "k"})), "v"));
}

TEST(RedisConnectTest, UnavailableWhenNothingListens) {
  const int port = FreePort();
  const auto start = std::chrono::steady_clock::now();
  auto client = RedisClient::Connect("redis://127.0.0.1:" + std::to_string(port));
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(client.status().message(), "cannot connect to Redis at 127.0.0.1:" +
                                           std::to_string(port) + ": Connection refused");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_EQ(RedisClient::Connect("redis://127.0.0.1:x").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(RedisClient::Connect("redis://127.0.0.1", 0ms).status().code(),
            StatusCode::kInvalidArgument);
}

// ---- URLs ------------------------------------------------------------------------------------

TEST(RedisUrlTest, Good) {
  struct Case {
    std::string url, host;
    int port;
    std::string user, password;
    int db;
  };
  const std::vector<Case> cases = {
      {"redis://localhost", "localhost", 6379, "", "", 0},
      {"redis://localhost/", "localhost", 6379, "", "", 0},
      {"redis://127.0.0.1:6380/3", "127.0.0.1", 6380, "", "", 3},
      {"redis://:secret@redis.internal:1/15", "redis.internal", 1, "", "secret", 15},
      {"redis://cortex:p%40ss%3Aw%2Fd@h_1:65535", "h_1", 65535, "cortex", "p@ss:w/d", 0},
      {"redis://user:p@ss@host/2", "host", 6379, "user", "p@ss", 2},
      {"redis://[::1]:7000/1", "::1", 7000, "", "", 1},
  };
  for (const Case& c : cases) {
    auto url = ParseRedisUrl(c.url);
    ASSERT_TRUE(url.ok()) << c.url << ": " << url.status().ToString();
    EXPECT_EQ(url->host, c.host) << c.url;
    EXPECT_EQ(url->port, c.port) << c.url;
    EXPECT_EQ(url->user, c.user) << c.url;
    EXPECT_EQ(url->password, c.password) << c.url;
    EXPECT_EQ(url->db, c.db) << c.url;
  }
  EXPECT_EQ(ParseRedisUrl("redis://[::1]:7000")->Address(), "[::1]:7000");
  EXPECT_EQ(ParseRedisUrl("redis://u:secret@h:1/2")->Redacted(), "redis://u:***@h:1/2");
  EXPECT_EQ(ParseRedisUrl("redis://h")->Redacted(), "redis://h:6379");
}

TEST(RedisUrlTest, Bad) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"http://localhost", "redis://"},
      {"localhost:6379", "redis://"},
      {"", "redis://"},
      {"rediss://localhost", "TLS"},
      {"redis://", "no host"},
      {"redis:///0", "no host"},
      {"redis://:6379", "no host"},
      {"redis://:pw@", "no host"},
      {"redis://h:0", "port"},
      {"redis://h:65536", "port"},
      {"redis://h:-1", "port"},
      {"redis://h:abc", "port"},
      {"redis://h:", "port"},
      {"redis://h:123456", "port"},
      {"redis://h/x", "db"},
      {"redis://h/-1", "db"},
      {"redis://h/1/2", "db"},
      {"redis://h/99999999999", "db"},
      {"redis://user@h", "credentials"},
      {"redis://:bad%zzescape@h", "escape"},
      {"redis://:bad%4@h", "escape"},
      {"redis://h?timeout=1", "query"},
      {"redis://::1:6379", "brackets"},
      {"redis://[::1", "unterminated"},
      {"redis://[::1]x", "after ']'"},
      {"redis://[::g]", "IPv6"},
      {"redis://bad host", "invalid character"},
  };
  for (const auto& [url, why] : cases) {
    auto parsed = ParseRedisUrl(url);
    ASSERT_FALSE(parsed.ok()) << url;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument) << url;
    EXPECT_NE(parsed.status().message().find(why), std::string::npos)
        << url << " -> " << parsed.status().message();
  }
  // A password never appears in a message.
  auto leaky = ParseRedisUrl("redis://u:supersecret@h:bad");
  ASSERT_FALSE(leaky.ok());
  EXPECT_EQ(leaky.status().message().find("supersecret"), std::string::npos);
}

// ---- The parser on its own ---------------------------------------------------------------

TEST(RespParserTest, ParsesEveryType) {
  auto replies = ParseReplies(
      "+OK\r\n-ERR bad\r\n:-42\r\n$5\r\na\r\n\0b\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"
      "*3\r\n:1\r\n*2\r\n+x\r\n$-1\r\n$1\r\nz\r\n"sv);
  ASSERT_TRUE(replies.ok()) << replies.status().ToString();
  ASSERT_EQ(replies->size(), 9u);
  const auto& r = *replies;
  EXPECT_EQ(r[0].DebugString(), "(status) OK");
  EXPECT_EQ(r[1].DebugString(), "(error) ERR bad");
  EXPECT_EQ(r[2].integer, -42);
  EXPECT_EQ(r[3].str, std::string("a\r\n\0b", 5));
  EXPECT_EQ(r[3].DebugString(), "\"a\\x0d\\x0a\\x00b\"");
  EXPECT_TRUE(IsString(r[4], ""));
  EXPECT_TRUE(r[5].is_nil());
  EXPECT_TRUE(r[6].is_nil());
  EXPECT_EQ(r[7].type, Type::kArray);
  EXPECT_TRUE(r[7].elements.empty());
  EXPECT_EQ(r[8].DebugString(), "[(integer) 1, [(status) x, nil], \"z\"]");

  std::string encoded;
  redis_internal::AppendCommand({"SET", std::string("k\0", 2), ""}, &encoded);
  EXPECT_EQ(encoded, std::string("*3\r\n$3\r\nSET\r\n$2\r\nk\0\r\n$0\r\n\r\n", 27));
}

TEST(RespParserTest, RejectsMalformedInput) {
  std::string deep;
  for (int i = 0; i < 100; ++i) deep += "*1\r\n";
  deep += ":1\r\n";
  const std::vector<std::string> bad = {
      "+OK",        // no CRLF
      "+OK\n",      // LF only
      "+O\rK\r\n",  // bare CR
      "\r\n",       // empty line
      "?what\r\n",  // unknown type
      "%1\r\n",     // RESP3 map
      ":\r\n",      // empty integer
      ":12a\r\n",   // junk in an integer
      ":+1\r\n",    // sign
      ":99999999999999999999\r\n",
      "$\r\n",
      "$-2\r\n",
      "$abc\r\n",
      "$5\r\nabc\r\n",      // truncated
      "$3\r\nabcd\r\n",     // no CRLF after the bulk
      "$3\r\nabc",          // ends in the bulk's CRLF
      "$999999999999\r\n",  // beyond 512 MiB
      "*-2\r\n",
      "*99999999999\r\n",
      "*2\r\n:1\r\n",  // missing element
      "*1\r\n%1\r\n",
      deep,                       // nested too deep
      std::string(2 << 20, 'x'),  // a line without end
      "+" + std::string(2 << 20, 'x') + "\r\n",
  };
  for (const std::string& input : bad) {
    auto replies = ParseReplies(input);
    EXPECT_FALSE(replies.ok()) << input.substr(0, 40);
    if (!replies.ok()) {
      EXPECT_EQ(replies.status().code(), StatusCode::kInvalidArgument);
    }
  }
}

TEST(RespParserTest, SurvivesRandomAndMutatedInput) {
  std::mt19937 rng(12345);
  const std::string seed =
      "*4\r\n$3\r\nabc\r\n:12\r\n*2\r\n+OK\r\n-ERR x\r\n$-1\r\n$10\r\n0123456789\r\n";
  const std::string alphabet = "*$:+-\r\n0123456789-abc";
  int parsed = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string input = seed;
    const int edits = 1 + static_cast<int>(rng() % 6);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % (input.size() + 1);
      switch (rng() % 4) {
        case 0:
          if (pos < input.size()) input[pos] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          input.insert(pos, 1, alphabet[rng() % alphabet.size()]);
          break;
        case 2:
          if (pos < input.size()) input.erase(pos, 1 + rng() % 4);
          break;
        default:
          input.resize(pos);
          break;
      }
    }
    if (iter % 4 == 0) {  // pure noise
      input.resize(rng() % 64);
      for (char& c : input) c = static_cast<char>(rng());
    }
    if (ParseReplies(input).ok()) ++parsed;
  }
  EXPECT_GT(parsed, 0);
}

// ---- A fake server that answers garbage -------------------------------------------------

// Serves connections one at a time on a loopback port: for each, reads a request, sends the
// next scripted answer, ...; "<close>" closes the connection, "<hang>" stops answering.
class FakeServer {
 public:
  explicit FakeServer(std::vector<std::string> script) : script_(std::move(script)) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CORTEX_CHECK(listen_fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CORTEX_CHECK(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    CORTEX_CHECK(listen(listen_fd_, 8) == 0);
    socklen_t len = sizeof(addr);
    CORTEX_CHECK(getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeServer() {
    stop_ = true;
    thread_.join();
    close(listen_fd_);
  }
  std::string Url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  int connections() const { return connections_; }

 private:
  bool WaitReadable(int fd) {
    pollfd p{fd, POLLIN, 0};
    while (!stop_) {
      if (poll(&p, 1, 20) > 0) return true;
    }
    return false;
  }

  void Serve() {
    while (WaitReadable(listen_fd_)) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++connections_;
      char buf[4096];
      bool drain = true;  // after the script: read until the client goes away
      for (const std::string& answer : script_) {
        if (answer == "<close>") {
          drain = false;
          break;
        }
        if (answer == "<hang>") break;
        if (!WaitReadable(fd) || recv(fd, buf, sizeof(buf), 0) <= 0) break;
        send(fd, answer.data(), answer.size(), MSG_NOSIGNAL);
      }
      while (drain && WaitReadable(fd) && recv(fd, buf, sizeof(buf), 0) > 0) {
      }
      close(fd);
    }
  }

  std::vector<std::string> script_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
};

TEST(RedisFakeServerTest, GarbageRepliesAreProtocolErrors) {
  const std::vector<std::string> garbage = {
      "HTTP/1.1 400 Bad Request\r\n\r\n",
      "$999999999999\r\n",
      ":abc\r\n",
      "*2\r\n:1\r\n%1\r\n",
      "$3\r\nabcXY",
      std::string(3 << 20, 'A'),
  };
  for (const std::string& answer : garbage) {
    FakeServer fake({"+PONG\r\n", answer});
    auto client = RedisClient::Connect(fake.Url());
    ASSERT_TRUE(client.ok()) << client.status().ToString();
    auto reply = (*client)->Command({"GET", "k"});
    ASSERT_FALSE(reply.ok()) << answer.substr(0, 30) << " -> " << reply->DebugString();
    EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(reply.status().message().find("protocol error from Redis at 127.0.0.1:"),
              std::string::npos)
        << reply.status().ToString();
    // The broken connection was dropped: the next call reconnects (and fails the same way).
    EXPECT_FALSE((*client)->Command({"GET", "k"}).ok());
    EXPECT_EQ(fake.connections(), 2);
  }
}

TEST(RedisFakeServerTest, ConnectionClosedMidReply) {
  FakeServer fake({"+PONG\r\n", "$10\r\nabc", "<close>"});
  auto client = RedisClient::Connect(fake.Url());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto reply = (*client)->Command({"GET", "k"});
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable);
}

TEST(RedisFakeServerTest, NotRedisAtConnect) {
  FakeServer fake({"HTTP/1.1 400 Bad Request\r\n\r\n"});
  auto client = RedisClient::Connect(fake.Url());
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kUnavailable) << client.status().ToString();

  FakeServer loading({"-LOADING Redis is loading the dataset in memory\r\n"});
  auto busy = RedisClient::Connect(loading.Url());
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(busy.status().message().find("LOADING"), std::string::npos);
}

TEST(RedisFakeServerTest, ReadTimeout) {
  FakeServer silent({"<hang>"});
  const auto start = std::chrono::steady_clock::now();
  auto client = RedisClient::Connect(silent.Url(), 200ms);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(client.status().message().find("within 200 ms"), std::string::npos)
      << client.status().ToString();
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 2s);

  FakeServer slow({"+PONG\r\n", "<hang>"});
  auto connected = RedisClient::Connect(slow.Url(), 200ms);
  ASSERT_TRUE(connected.ok());
  auto reply = (*connected)->Command({"GET", "k"});
  EXPECT_EQ(reply.status().code(), StatusCode::kUnavailable);
}

}  // namespace
}  // namespace cortex::store
