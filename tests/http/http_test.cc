// Tests for http.h: the Router on its own, then a real Server on 127.0.0.1 (port 0) driven by a
// real Client. Nothing here sleeps to synchronize: tests wait on conditions with deadlines.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "http/http.h"

namespace cortex::http {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

// A flag with a deadline-bounded wait.
class Latch {
 public:
  void Set() {
    std::lock_guard lock(mu_);
    set_ = true;
    cv_.notify_all();
  }
  bool WaitFor(Clock::duration timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return set_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
};

nlohmann::json ParseJson(const std::string& body) {
  auto json = nlohmann::json::parse(body, nullptr, false);
  EXPECT_FALSE(json.is_discarded()) << body;
  return json;
}

std::string HeaderOf(const ClientResponse& response, const std::string& name) {
  auto it = response.headers.find(name);
  return it == response.headers.end() ? std::string() : it->second;
}

// ---------------------------------------------------------------------------------------------
// Pieces that need no network.

TEST(UrlEncodeTest, KeepsUnreservedAndEscapesEverythingElse) {
  EXPECT_EQ(UrlEncode("abcXYZ019-_.~"), "abcXYZ019-_.~");
  EXPECT_EQ(UrlEncode("a b/c?d=e&f"), "a%20b%2Fc%3Fd%3De%26f");
  EXPECT_EQ(UrlEncode("+%"), "%2B%25");
  EXPECT_EQ(UrlEncode("\xC3\xA9"), "%C3%A9");
  EXPECT_EQ(UrlEncode(""), "");
}

TEST(ErrorResponseTest, ExactShapeWithAndWithoutDetails) {
  Response plain = ErrorResponse(404, "not_found", "no such \"thing\"");
  EXPECT_EQ(plain.status, 404);
  EXPECT_EQ(plain.content_type, "application/json");
  EXPECT_EQ(plain.body, R"({"error":{"code":"not_found","message":"no such \"thing\""}})");

  Response detailed = ErrorResponse(400, "invalid_argument", "bad", R"({"field":"name"})");
  EXPECT_EQ(detailed.body,
            R"({"error":{"code":"invalid_argument","message":"bad","details":{"field":"name"}}})");

  // Text that is not JSON is kept as a string rather than producing a broken body.
  Response broken = ErrorResponse(400, "invalid_argument", "bad", "not json");
  EXPECT_EQ(ParseJson(broken.body)["error"]["details"], "not json");
}

TEST(RequestTest, HeaderLookupIsCaseInsensitiveAndQueryTakesFirstValue) {
  Request request;
  request.headers.emplace("Content-Type", "text/plain");
  request.query.emplace("x", "1");
  request.query.emplace("x", "2");
  request.path_params["id"] = "42";
  EXPECT_EQ(request.Header("content-type"), "text/plain");
  EXPECT_EQ(request.Header("CONTENT-TYPE"), "text/plain");
  EXPECT_EQ(request.Header("Content-Length"), std::nullopt);
  EXPECT_EQ(request.Query("x"), "1");
  EXPECT_EQ(request.Query("y"), std::nullopt);
  EXPECT_EQ(request.PathParam("id"), "42");
  EXPECT_EQ(request.PathParam("nope"), "");
}

TEST(RouterTest, LiteralSegmentsWinOverCaptures) {
  Router router;
  router.Add("GET", "/runs/{id}",
             [](const Request& r) { return Response::Text(200, "id=" + r.PathParam("id")); });
  router.Add("GET", "/runs/latest", [](const Request&) { return Response::Text(200, "latest"); });
  Request request;
  request.method = "GET";
  request.path = "/runs/latest";
  EXPECT_EQ(router.Dispatch(request).body, "latest");
  request.path = "/runs/7";
  EXPECT_EQ(router.Dispatch(request).body, "id=7");
  request.path = "/runs/";  // a capture never matches an empty segment
  EXPECT_EQ(router.Dispatch(request).status, 404);
  request.path = "/runs/7/extra";
  EXPECT_EQ(router.Dispatch(request).status, 404);
}

// ---------------------------------------------------------------------------------------------
// A real server and client.

class ServerTest : public ::testing::Test {
 protected:
  void StartServer(ServerOptions options = {}) {
    options.host = "127.0.0.1";
    options.port = 0;
    server_ = std::make_unique<Server>(options);
    server_->Handle("GET", "/items/{id}/parts/{part}", [](const Request& r) {
      nlohmann::json j = {{"id", r.PathParam("id")}, {"part", r.PathParam("part")}};
      return Response::Json(200, j.dump());
    });
    server_->Handle("DELETE", "/items/{id}/parts/{part}",
                    [](const Request&) { return Response::Json(204, ""); });
    server_->Handle("GET", "/big",
                    [](const Request&) { return Response::Text(200, std::string(200000, 'b')); });
    server_->Handle("GET", "/echo", [](const Request& r) {
      nlohmann::json query = nlohmann::json::array();
      for (const auto& [k, v] : r.query) query.push_back({k, v});
      nlohmann::json j = {{"method", r.method},
                          {"path", r.path},
                          {"query", query},
                          {"remote_addr", r.remote_addr},
                          {"x_custom", r.Header("x-custom").value_or("")}};
      Response response = Response::Json(200, j.dump());
      response.headers.emplace_back("X-Served-By", "cortex-test");
      return response;
    });
    server_->Handle("POST", "/echo", [](const Request& r) {
      return Response::Text(201, r.body, r.Header("Content-Type").value_or(""));
    });
    server_->Handle("PUT", "/echo", [](const Request& r) { return Response::Text(200, r.body); });
    server_->Handle("GET", "/path/{name}", [](const Request& r) {
      return Response::Text(200, r.path + "|" + r.PathParam("name"));
    });
    server_->Handle("GET", "/throw",
                    [](const Request&) -> Response { throw std::runtime_error("boom"); });
    server_->Handle("GET", "/throw-int", [](const Request&) -> Response { throw 42; });
    for (auto& [method, pattern, handler] : extra_routes_)
      server_->Handle(method, pattern, handler);
    Status status = server_->Start();
    ASSERT_TRUE(status.ok()) << status.ToString();
    ASSERT_GT(server_->port(), 0);
  }

  std::string BaseUrl() const { return "http://127.0.0.1:" + std::to_string(server_->port()); }

  void AddRoute(std::string method, std::string pattern, Handler handler) {
    extra_routes_.push_back({std::move(method), std::move(pattern), std::move(handler)});
  }

  struct ExtraRoute {
    std::string method;
    std::string pattern;
    Handler handler;
  };
  std::vector<ExtraRoute> extra_routes_;
  std::unique_ptr<Server> server_;
};

TEST_F(ServerTest, RoutesWithPathParameters) {
  StartServer();
  Client client(BaseUrl());
  auto response = client.Get("/items/abc/parts/" + UrlEncode("x y"));
  ASSERT_TRUE(response.ok()) << response.status().ToString();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(HeaderOf(*response, "content-type"), "application/json");
  auto json = ParseJson(response->body);
  EXPECT_EQ(json["id"], "abc");
  EXPECT_EQ(json["part"], "x y");

  // The path is decoded; '+' in a path is a plus, not a space.
  auto decoded = client.Get("/path/a%2Bb+c");
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->body, "/path/a+b+c|a+b+c");

  // Bytes that cannot appear in a request target are escaped by the client.
  auto spaced = client.Get("/path/a b");
  ASSERT_TRUE(spaced.ok());
  EXPECT_EQ(spaced->body, "/path/a b|a b");

  auto deleted = client.Delete("/items/abc/parts/1");
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(deleted->status, 204);
}

TEST_F(ServerTest, AClientCanBoundTheAnswerItReads) {
  StartServer();
  ClientOptions bounded;
  bounded.max_response_bytes = 100000;
  Client small(BaseUrl(), bounded);
  auto refused = small.Get("/big");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("larger than 100000 bytes"), std::string::npos)
      << refused.status().message();
  bounded.max_response_bytes = 300000;
  bounded.total_timeout = std::chrono::milliseconds(5000);
  Client enough(BaseUrl(), bounded);
  auto got = enough.Get("/big");
  ASSERT_TRUE(got.ok()) << got.status().message();
  EXPECT_EQ(got->status, 200);
  EXPECT_EQ(got->body.size(), 200000u);
}

TEST_F(ServerTest, UnknownRouteIs404Json) {
  StartServer();
  Client client(BaseUrl());
  auto response = client.Get("/nope/nothing");
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->status, 404);
  EXPECT_EQ(HeaderOf(*response, "Content-Type"), "application/json");
  EXPECT_EQ(response->body,
            R"({"error":{"code":"not_found","message":"no route for GET /nope/nothing"}})");

  // A method httplib does not route to us still gets our JSON.
  auto post = client.Post("/nope", "{}");
  ASSERT_TRUE(post.ok());
  EXPECT_EQ(post->status, 404);
  EXPECT_EQ(ParseJson(post->body)["error"]["code"], "not_found");
}

TEST_F(ServerTest, WrongMethodIs405JsonWithAllow) {
  StartServer();
  Client client(BaseUrl());
  auto response = client.Put("/items/1/parts/2", "{}");
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->status, 405);
  EXPECT_EQ(HeaderOf(*response, "Allow"), "DELETE, GET, HEAD");
  auto json = ParseJson(response->body);
  EXPECT_EQ(json["error"]["code"], "method_not_allowed");
  EXPECT_FALSE(json["error"].contains("details"));
}

TEST_F(ServerTest, QueryParametersAreDecoded) {
  StartServer();
  Client client(BaseUrl());
  auto response = client.Get("/echo?q=a%20b&x=1+2&x=" + UrlEncode("&=/") + "&flag&%C3%A9=%E2%9C%93",
                             Headers{{"X-Custom", "hello"}});
  ASSERT_TRUE(response.ok());
  ASSERT_EQ(response->status, 200);
  EXPECT_EQ(HeaderOf(*response, "x-served-by"), "cortex-test");
  auto json = ParseJson(response->body);
  EXPECT_EQ(json["path"], "/echo");
  EXPECT_EQ(json["remote_addr"], "127.0.0.1");
  EXPECT_EQ(json["x_custom"], "hello");
  // std::multimap order: by key, then insertion order.
  nlohmann::json expected = nlohmann::json::array(
      {{"flag", ""}, {"q", "a b"}, {"x", "1 2"}, {"x", "&=/"}, {"\xC3\xA9", "\xE2\x9C\x93"}});
  EXPECT_EQ(json["query"], expected);
}

TEST_F(ServerTest, PostBodyIsEchoed) {
  StartServer();
  Client client(BaseUrl());
  std::string body = R"({"name":"x"})";
  body += std::string("\0\x01\xff", 3);  // bodies are bytes
  auto response = client.Post("/echo", body, "application/octet-stream");
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->status, 201);
  EXPECT_EQ(response->body, body);
  EXPECT_EQ(HeaderOf(*response, "Content-Type"), "application/octet-stream");

  // A form-encoded body stays a body: it does not leak into the query parameters.
  auto form = client.Post("/echo", "a=1&b=2", "application/x-www-form-urlencoded");
  ASSERT_TRUE(form.ok());
  EXPECT_EQ(form->body, "a=1&b=2");

  auto empty = client.Post("/echo", "", "text/plain");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->status, 201);
  EXPECT_EQ(empty->body, "");
}

TEST_F(ServerTest, OversizedBodyIs413AndTheServerKeepsServing) {
  ServerOptions options;
  options.max_body_bytes = 1024;
  StartServer(options);
  Client client(BaseUrl());

  auto fits = client.Post("/echo", std::string(1024, 'a'), "text/plain");
  ASSERT_TRUE(fits.ok());
  EXPECT_EQ(fits->status, 201);

  auto too_big = client.Post("/echo", std::string(4096, 'b'), "text/plain");
  ASSERT_TRUE(too_big.ok()) << too_big.status().ToString();
  EXPECT_EQ(too_big->status, 413);
  EXPECT_EQ(ParseJson(too_big->body)["error"]["code"], "payload_too_large");

  auto after = client.Get("/echo");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->status, 200);
}

TEST_F(ServerTest, HandlerExceptionIs500Json) {
  StartServer();
  Client client(BaseUrl());
  for (const char* path : {"/throw", "/throw-int"}) {
    auto response = client.Get(path);
    ASSERT_TRUE(response.ok()) << path;
    EXPECT_EQ(response->status, 500) << path;
    EXPECT_EQ(response->body, R"({"error":{"code":"internal","message":"internal error"}})");
  }
  // The connection and server survive.
  auto after = client.Get("/echo");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->status, 200);
}

TEST_F(ServerTest, StartOnAPortInUseIsUnavailable) {
  StartServer();
  ServerOptions options;
  options.host = "127.0.0.1";
  options.port = server_->port();
  Server second(options);
  Status status = second.Start();
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status.ToString();
  EXPECT_NE(status.message().find("cannot listen on 127.0.0.1:" + std::to_string(options.port)),
            std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("in use"), std::string::npos) << status.message();
  second.Stop();  // harmless on a server that never started
}

TEST_F(ServerTest, StopIsIdempotentAndStartTwiceFails) {
  StartServer();
  EXPECT_EQ(server_->Start().code(), StatusCode::kFailedPrecondition);
  server_->Stop();
  server_->Stop();
  Client client(BaseUrl(), ClientOptions{milliseconds(500), milliseconds(500), {}, ""});
  auto response = client.Get("/echo");
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(response.status().message().find("cannot reach " + BaseUrl() + ": "), std::string::npos)
      << response.status().message();
}

TEST_F(ServerTest, SseStreamOfThreeEvents) {
  AddRoute("GET", "/events", [](const Request&) {
    Response response;
    response.sse = [](SseWriter& writer) {
      writer.Comment("hello");
      writer.Send("greeting", "one", "1");
      writer.Send("", "two\nlines", "2");
      writer.Send("bye", "three");
    };
    return response;
  });
  StartServer();
  Client client(BaseUrl());
  std::vector<SseEvent> events;
  Status status = client.Stream("/events", [&](const SseEvent& event) {
    events.push_back(event);
    return true;
  });
  ASSERT_TRUE(status.ok()) << status.ToString();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].event, "greeting");
  EXPECT_EQ(events[0].data, "one");
  EXPECT_EQ(events[0].id, "1");
  EXPECT_EQ(events[1].event, "message");
  EXPECT_EQ(events[1].data, "two\nlines");
  EXPECT_EQ(events[1].id, "2");
  EXPECT_EQ(events[2].event, "bye");
  EXPECT_EQ(events[2].data, "three");
  EXPECT_EQ(events[2].id, "2");  // the last event id carries over, as in the SSE spec

  // The same client goes on with ordinary requests afterwards.
  auto after = client.Get("/echo");
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(after->status, 200);

  // A stream request that fails is an error Status carrying the server's message.
  Status missing = client.Stream("/no-such-stream", [](const SseEvent&) { return true; });
  EXPECT_EQ(missing.code(), StatusCode::kNotFound) << missing.ToString();
  EXPECT_NE(missing.message().find("no route for GET /no-such-stream"), std::string::npos);
}

// An endless producer in the documented style: waits with a short timeout, re-checks IsOpen().
struct EndlessStream {
  std::atomic<int> sent{0};
  Latch producer_returned;
  Handler handler() {
    return [this](const Request&) {
      Response response;
      response.sse = [this](SseWriter& writer) {
        std::mutex mu;
        std::condition_variable never_notified;
        while (writer.IsOpen()) {
          if (!writer.Send("tick", std::to_string(sent.load()))) break;
          ++sent;
          std::unique_lock lock(mu);
          never_notified.wait_for(lock, milliseconds(20));
        }
        producer_returned.Set();
      };
      return response;
    };
  }
};

TEST_F(ServerTest, StopEndsAnOpenEndlessStreamPromptly) {
  EndlessStream stream;
  AddRoute("GET", "/endless", stream.handler());
  StartServer();

  Latch first_event;
  std::atomic<int> received{0};
  Status stream_status;
  std::thread reader([&] {
    Client client(BaseUrl());
    stream_status = client.Stream("/endless", [&](const SseEvent&) {
      ++received;
      first_event.Set();
      return true;
    });
  });
  ASSERT_TRUE(first_event.WaitFor(seconds(5)));

  auto start = Clock::now();
  server_->Stop();
  auto took = Clock::now() - start;
  EXPECT_LT(took, seconds(2)) << std::chrono::duration_cast<milliseconds>(took).count() << "ms";
  EXPECT_TRUE(stream.producer_returned.WaitFor(seconds(0)));
  reader.join();
  EXPECT_TRUE(stream_status.ok()) << stream_status.ToString();  // a clean end of stream
  EXPECT_GE(received.load(), 1);
}

TEST_F(ServerTest, ClientStoppingAStreamEndsTheProducer) {
  EndlessStream stream;
  AddRoute("GET", "/endless", stream.handler());
  StartServer();
  Client client(BaseUrl());
  int received = 0;
  Status status = client.Stream("/endless", [&](const SseEvent& event) {
    EXPECT_EQ(event.event, "tick");
    return ++received < 3;
  });
  EXPECT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(received, 3);
  // The server notices on its next write that the client is gone.
  EXPECT_TRUE(stream.producer_returned.WaitFor(seconds(5)));
  // And the client can be used again.
  auto after = client.Get("/echo");
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(after->status, 200);
}

TEST_F(ServerTest, FortyConcurrentKeepAliveClientsAreServed) {
  constexpr int kClients = 40;
  constexpr int kRequestsEach = 25;
  // Every client's first request waits until all 40 are in flight at once: this passes only if
  // 40 connections are being served concurrently.
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  AddRoute("GET", "/rendezvous", [&](const Request&) {
    std::unique_lock lock(mu);
    ++arrived;
    cv.notify_all();
    bool all = cv.wait_for(lock, seconds(10), [&] { return arrived >= kClients; });
    return Response::Text(all ? 200 : 503, "");
  });
  ServerOptions options;
  options.threads = kClients + 8;
  StartServer(options);

  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      Client client(BaseUrl());
      auto first = client.Get("/rendezvous");
      if (!first.ok() || first->status != 200) return;
      for (int n = 0; n < kRequestsEach; ++n) {
        auto response = client.Get("/items/" + std::to_string(i) + "/parts/" + std::to_string(n));
        if (!response.ok() || response->status != 200) return;
        if (ParseJson(response->body)["part"] != std::to_string(n)) return;
      }
      ++ok;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(ok.load(), kClients);
}

TEST(ClientTest, BadBaseUrlIsInvalidArgument) {
  for (const char* bad : {"ftp://example.invalid", "example.com:80", "https://h:99999"}) {
    Client client(bad);
    EXPECT_EQ(client.Get("/").status().code(), StatusCode::kInvalidArgument) << bad;
  }
  Client no_host("http://:80");
  EXPECT_EQ(no_host.Get("/").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(no_host.Stream("/", [](const SseEvent&) { return true; }).code(),
            StatusCode::kInvalidArgument);
}

// Records what a producer wrote; `open` is what IsOpen and each write answer.
class RecordingWriter : public SseWriter {
 public:
  bool Send(std::string_view, std::string_view, std::string_view) override { return open; }
  bool Comment(std::string_view text) override {
    comments.emplace_back(text);
    return open;
  }
  bool IsOpen() const override { return open; }
  std::vector<std::string> comments;
  bool open = true;
};

TEST(SseKeepAliveTest, ACommentOnlyAfterAQuietInterval) {
  RecordingWriter w;
  SseKeepAlive keep_alive(w, milliseconds(50));
  EXPECT_TRUE(keep_alive.Tick());
  EXPECT_TRUE(w.comments.empty()) << "nothing is due yet";
  std::this_thread::sleep_for(milliseconds(80));
  EXPECT_TRUE(keep_alive.Tick());
  EXPECT_EQ(w.comments, std::vector<std::string>{"keep-alive"});
  EXPECT_TRUE(keep_alive.Tick());
  EXPECT_EQ(w.comments.size(), 1u) << "the interval starts again from the comment";
  std::this_thread::sleep_for(milliseconds(80));
  keep_alive.Sent();  // an event went out: the stream is not quiet
  EXPECT_TRUE(keep_alive.Tick());
  EXPECT_EQ(w.comments.size(), 1u);
  w.open = false;  // the client went away
  EXPECT_FALSE(keep_alive.Tick());
  std::this_thread::sleep_for(milliseconds(80));
  EXPECT_FALSE(keep_alive.Tick());
}

}  // namespace
}  // namespace cortex::http
