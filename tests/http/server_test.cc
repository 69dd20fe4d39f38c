// The event-driven server against clients that misbehave: slow senders, idle connections, open
// streams, oversized heads, and the wire details (100-continue, pipelining, HEAD) that a server of
// our own must get right. The wire format itself is checked without sockets first.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "http/http.h"
#include "http/wire.h"

namespace cortex::http {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

std::string HeadWith(size_t headers, size_t value_bytes = 1) {
  std::string head = "GET /x HTTP/1.1\r\nHost: h\r\n";
  for (size_t i = 1; i < headers; ++i) {
    head += "X-" + std::to_string(i) + ": " + std::string(value_bytes, 'v') + "\r\n";
  }
  return head + "\r\n";
}

TEST(WireTest, HeaderCountPastTheLimitIs431) {
  ServerOptions options;
  auto at_limit = ParseRequestBytes(HeadWith(options.max_header_count), options);
  ASSERT_TRUE(at_limit.built.ok()) << at_limit.built.error().body;
  EXPECT_TRUE(at_limit.complete);
  auto over = ParseRequestBytes(HeadWith(options.max_header_count + 1), options);
  ASSERT_FALSE(over.built.ok());
  EXPECT_EQ(over.built.error().status, 431);
  EXPECT_NE(over.built.error().body.find("request_header_fields_too_large"), std::string::npos);
}

TEST(WireTest, HeaderBytesPastTheLimitIs431) {
  ServerOptions options;
  options.max_header_bytes = 4096;
  auto over = ParseRequestBytes(HeadWith(3, 3000), options);
  ASSERT_FALSE(over.built.ok());
  EXPECT_EQ(over.built.error().status, 431);
  auto under = ParseRequestBytes(HeadWith(3, 1000), options);
  EXPECT_TRUE(under.built.ok());
}

TEST(WireTest, TargetsAreCheckedAndDecoded) {
  ServerOptions options;
  auto long_target =
      ParseRequestBytes("GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: h\r\n\r\n", options);
  ASSERT_FALSE(long_target.built.ok());
  EXPECT_EQ(long_target.built.error().status, 414);

  auto relative = ParseRequestBytes("GET relative HTTP/1.1\r\nHost: h\r\n\r\n", options);
  ASSERT_FALSE(relative.built.ok());
  EXPECT_EQ(relative.built.error().status, 400);

  auto garbage = ParseRequestBytes("\xff\xfe not http\r\n\r\n", options);
  ASSERT_FALSE(garbage.built.ok());
  EXPECT_EQ(garbage.built.error().status, 400);

  auto decoded = ParseRequestBytes(
      "GET http://h/a%20b/c+d?x=1+2&y=%41&x=3#frag HTTP/1.1\r\nHost: h\r\n\r\n", options);
  ASSERT_TRUE(decoded.built.ok());
  const Request& r = *decoded.built.request;
  EXPECT_EQ(r.path, "/a b/c+d");  // '+' is a space only in the query
  EXPECT_EQ(r.Query("x"), "1 2");
  EXPECT_EQ(r.query.count("x"), 2u);
  EXPECT_EQ(r.Query("y"), "A");
}

TEST(WireTest, ChunkedBodiesAreReadAndBoundedAndContinueIsNoticed) {
  ServerOptions options;
  options.max_body_bytes = 10;
  const std::string chunked =
      "POST /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: "
      "chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
  auto ok = ParseRequestBytes(chunked, options);
  ASSERT_TRUE(ok.built.ok());
  EXPECT_TRUE(ok.complete);
  EXPECT_TRUE(ok.built.expects_100);
  EXPECT_EQ(ok.built.request->body, "abcde");
  auto big =
      ParseRequestBytes("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n" +
                            std::string(11, 'x') + "\r\n0\r\n\r\n",
                        options);
  ASSERT_FALSE(big.built.ok());
  EXPECT_EQ(big.built.error().status, 413);
  auto declared =
      ParseRequestBytes("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", options);
  ASSERT_FALSE(declared.built.ok());
  EXPECT_EQ(declared.built.error().status, 413);
}

TEST(WireTest, AnswersAreFramedByTheServerAlone) {
  Response r = Response::Text(200, "hello");
  r.headers.emplace_back("X-Evil", "a\r\nSet-Cookie: injected");
  r.headers.emplace_back("Content-Length", "999");  // the server frames the body, not handlers
  r.headers.emplace_back("Bad Name", "x");
  const std::string bytes = SerializeResponse(r, false, true);
  EXPECT_EQ(bytes,
            "HTTP/1.1 200 OK\r\nX-Evil: a  Set-Cookie: injected\r\nContent-Type: "
            "text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
  EXPECT_EQ(SerializeResponse(r, /*head=*/true, false).find("hello"), std::string::npos);
  EXPECT_EQ(SerializeResponse(Response::Json(204, ""), false, false),
            "HTTP/1.1 204 No Content\r\n\r\n");
  EXPECT_EQ(Chunk("abc"), "3\r\nabc\r\n");
  EXPECT_EQ(FormatSseEvent("e\nx", "a\r\nb", "1"), "event: e x\nid: 1\ndata: a\ndata: b\n\n");
}

// ---------------------------------------------------------------------------------------------
// Raw sockets against a real server.

class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool connected() const { return connected_; }

  bool Send(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Reads until `until` appears in what was read, the peer closes, or the timeout passes (a zero
  // timeout reads what has arrived).
  std::string ReadUntil(std::string_view until, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (received_.find(until) == std::string::npos && !closed_) {
      if (!ReadSome(deadline)) break;
    }
    return received_;
  }

  // True when the peer closes the connection (or resets it) before the timeout.
  bool WaitClosed(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!closed_) {
      if (!ReadSome(deadline)) break;
    }
    return closed_;
  }

  const std::string& received() const { return received_; }

 private:
  bool ReadSome(Clock::time_point deadline) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(left, 0))) <= 0) return false;
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      closed_ = true;
      return false;
    }
    received_.append(buf, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string received_;
};

class LiveServerTest : public ::testing::Test {
 protected:
  void Start(ServerOptions options = {}) {
    options.host = "127.0.0.1";
    options.port = 0;
    server_ = std::make_unique<Server>(options);
    server_->Handle("GET", "/hello", [](const Request&) { return Response::Text(200, "hi"); });
    server_->Handle("POST", "/echo", [](const Request& r) { return Response::Text(201, r.body); });
    server_->Handle("GET", "/stream", [this](const Request&) {
      Response response;
      response.sse = [this](SseWriter& writer) {
        ++streams_open_;
        writer.Send("hello", "open");
        std::mutex mu;
        std::condition_variable never;
        while (writer.IsOpen()) {
          std::unique_lock lock(mu);
          never.wait_for(lock, milliseconds(100));
        }
        --streams_open_;
      };
      return response;
    });
    ASSERT_TRUE(server_->Start().ok());
  }
  int port() const { return server_->port(); }

  std::unique_ptr<Server> server_;
  std::atomic<int> streams_open_{0};
};

// The old server gave each connection a worker: with two workers, two idle connections were
// enough to stop every answer. Now hundreds of idle connections, slow senders and open streams
// hold no worker, and an ordinary request is answered at once.
TEST_F(LiveServerTest, IdleConnectionsSlowSendersAndStreamsDoNotHoldWorkers) {
  ServerOptions options;
  options.threads = 2;
  Start(options);
  std::vector<std::unique_ptr<RawConnection>> held;
  for (int i = 0; i < 300; ++i) {  // idle: connected, nothing sent
    held.push_back(std::make_unique<RawConnection>(port()));
    ASSERT_TRUE(held.back()->connected());
  }
  for (int i = 0; i < 50; ++i) {  // slow senders: half a request head
    held.push_back(std::make_unique<RawConnection>(port()));
    ASSERT_TRUE(held.back()->Send("GET /hello HTTP/1.1\r\nHost: h\r\nX-Slow: "));
  }
  for (int i = 0; i < 100; ++i) {  // open event streams
    held.push_back(std::make_unique<RawConnection>(port()));
    ASSERT_TRUE(held.back()->Send("GET /stream HTTP/1.1\r\nHost: h\r\n\r\n"));
    EXPECT_NE(held.back()->ReadUntil("data: open", seconds(5)).find("data: open"),
              std::string::npos);
  }
  EXPECT_EQ(streams_open_.load(), 100);

  ClientOptions co;
  co.connect_timeout = milliseconds(3000);
  co.read_timeout = milliseconds(3000);
  Client client("http://127.0.0.1:" + std::to_string(port()), co);
  for (int i = 0; i < 20; ++i) {
    auto r = client.Get("/hello");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "hi");
  }
  held.clear();  // the streams' clients go away: their producers notice and return
  const auto deadline = Clock::now() + seconds(10);
  while (streams_open_.load() > 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  EXPECT_EQ(streams_open_.load(), 0);
}

// A client that sends its head a byte at a time is closed once the read timeout has passed since
// the head began, however steadily it drips.
TEST_F(LiveServerTest, ASlowSenderIsClosedAtTheReadTimeout) {
  ServerOptions options;
  options.read_timeout = seconds(1);
  Start(options);
  RawConnection slow(port());
  ASSERT_TRUE(slow.Send("GET /hello HTTP/1.1\r\n"));
  const auto start = Clock::now();
  bool closed = false;
  while (Clock::now() - start < seconds(6)) {
    if (!slow.Send("X") || slow.WaitClosed(milliseconds(200))) {
      closed = true;
      break;
    }
  }
  EXPECT_TRUE(closed) << "a byte every 200 ms kept the connection open for 6 s";
}

TEST_F(LiveServerTest, AnEndlessHeadIs431AndTheServerStopsReading) {
  Start();
  RawConnection c(port());
  ASSERT_TRUE(c.Send("GET /hello HTTP/1.1\r\nHost: h\r\n"));
  size_t sent = 0;
  const std::string line = "X-A: b\r\n";
  std::string batch;
  for (int i = 0; i < 1000; ++i) batch += line;
  while (sent < (64u << 20) && c.Send(batch)) {
    sent += batch.size();
    if (c.ReadUntil("\r\n\r\n", milliseconds(0)).find("431") != std::string::npos) break;
  }
  EXPECT_LT(sent, 64u << 20) << "the server read 64 MiB of headers";
  EXPECT_NE(c.ReadUntil("}}", seconds(5)).find("HTTP/1.1 431 "), std::string::npos)
      << c.received().substr(0, 200);
  EXPECT_NE(c.received().find("request_header_fields_too_large"), std::string::npos);

  RawConnection many(port());  // few bytes, too many fields
  ASSERT_TRUE(many.Send(HeadWith(101)));
  EXPECT_NE(many.ReadUntil("}}", seconds(5)).find("HTTP/1.1 431 "), std::string::npos);
  EXPECT_TRUE(many.WaitClosed(seconds(5)));
}

TEST_F(LiveServerTest, ContinueIsSentBeforeTheBodyIsRead) {
  Start();
  RawConnection c(port());
  ASSERT_TRUE(c.Send(
      "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
  EXPECT_NE(c.ReadUntil("\r\n\r\n", seconds(5)).find("HTTP/1.1 100 Continue\r\n\r\n"),
            std::string::npos);
  ASSERT_TRUE(c.Send("hello"));
  EXPECT_NE(c.ReadUntil("hello", seconds(5)).find("HTTP/1.1 201 Created"), std::string::npos);
}

TEST_F(LiveServerTest, PipelinedRequestsAreAnsweredInOrderAndHeadHasNoBody) {
  Start();
  RawConnection c(port());
  ASSERT_TRUE(c.Send(
      "GET /hello HTTP/1.1\r\nHost: h\r\n\r\nHEAD /hello HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"));
  ASSERT_TRUE(c.WaitClosed(seconds(5)));
  const std::string& all = c.received();
  const size_t first = all.find("HTTP/1.1 200 OK");
  const size_t second = all.find("HTTP/1.1 200 OK", first + 1);
  const size_t third = all.find("HTTP/1.1 201 Created");
  ASSERT_NE(first, std::string::npos) << all;
  ASSERT_NE(second, std::string::npos) << all;
  ASSERT_NE(third, std::string::npos) << all;
  EXPECT_LT(second, third);
  // "hi" once (the GET), not after the HEAD's head.
  EXPECT_EQ(all.substr(second, third - second).find("\r\n\r\nhi"), std::string::npos) << all;
  EXPECT_NE(all.find("abc", third), std::string::npos);
}

TEST_F(LiveServerTest, StreamsPastTheLimitAre503) {
  ServerOptions options;
  options.max_streams = 2;
  Start(options);
  RawConnection a(port()), b(port()), c(port());
  for (RawConnection* s : {&a, &b}) {
    ASSERT_TRUE(s->Send("GET /stream HTTP/1.1\r\nHost: h\r\n\r\n"));
    EXPECT_NE(s->ReadUntil("data: open", seconds(5)).find("data: open"), std::string::npos);
  }
  ASSERT_TRUE(c.Send("GET /stream HTTP/1.1\r\nHost: h\r\n\r\n"));
  EXPECT_NE(c.ReadUntil("}}", seconds(5)).find("HTTP/1.1 503 "), std::string::npos) << c.received();
}

}  // namespace
}  // namespace cortex::http
