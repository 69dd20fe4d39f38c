// The gateway's request guard: what a web page (or a DNS-rebinding one) could send without the
// user's intent is refused before it is routed; what Cortex's own clients send passes.
#include "api/request_guard.h"

#include <gtest/gtest.h>

namespace cortex::api {
namespace {

http::Request MakeRequest(std::string method,
                          std::initializer_list<std::pair<std::string, std::string>> headers) {
  http::Request r;
  r.method = std::move(method);
  r.path = "/execute/tool";
  for (const auto& [k, v] : headers) r.headers.emplace(k, v);
  return r;
}

int Status(const http::FilterResult& r) { return r.refusal ? r.refusal->status : 0; }

GuardOptions Listening(std::string host) {
  GuardOptions o;
  o.listen_host = std::move(host);
  return o;
}

const GuardOptions kLocal = Listening("127.0.0.1");

TEST(RequestGuard, OwnClientsPass) {
  EXPECT_EQ(Status(CheckRequest(kLocal, MakeRequest("GET", {{"Host", "127.0.0.1:8080"}}))), 0);
  EXPECT_EQ(Status(CheckRequest(kLocal, MakeRequest("GET", {{"Host", "localhost:8080"}}))), 0);
  EXPECT_EQ(Status(CheckRequest(kLocal, MakeRequest("GET", {{"Host", "[::1]:8080"}}))), 0);
  EXPECT_EQ(Status(CheckRequest(kLocal, MakeRequest("POST", {{"Host", "127.0.0.1:8080"},
                                                             {"Content-Type", "application/json"},
                                                             {"Content-Length", "2"}}))),
            0);
  // charset parameters and case do not matter; +json types are JSON.
  EXPECT_EQ(Status(CheckRequest(
                kLocal, MakeRequest("POST", {{"Content-Type", "Application/JSON; charset=utf-8"},
                                             {"Content-Length", "2"}}))),
            0);
  EXPECT_EQ(Status(CheckRequest(
                kLocal, MakeRequest("PUT", {{"Content-Type", "application/merge-patch+json"},
                                            {"Content-Length", "2"}}))),
            0);
  // Manifests may be posted as YAML or Markdown.
  for (const char* type :
       {"application/yaml", "application/x-yaml", "text/yaml", "text/markdown"}) {
    EXPECT_EQ(Status(CheckRequest(
                  kLocal, MakeRequest("POST", {{"Content-Type", type}, {"Content-Length", "9"}}))),
              0)
        << type;
  }
  // A write without a body (cancel, stop) needs no type.
  EXPECT_EQ(Status(CheckRequest(kLocal, MakeRequest("POST", {{"Content-Length", "0"}}))), 0);
  EXPECT_EQ(Status(CheckRequest(kLocal, MakeRequest("DELETE", {}))), 0);
}

TEST(RequestGuard, BodiesABrowserSendsWithoutPreflightAreRefused) {
  for (const char* type :
       {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"}) {
    auto r = CheckRequest(kLocal,
                          MakeRequest("POST", {{"Content-Type", type}, {"Content-Length", "5"}}));
    EXPECT_EQ(Status(r), 415) << type;
    EXPECT_NE(r.refusal->body.find("unsupported_media_type"), std::string::npos);
  }
  // No type at all, with a body (chunked too).
  EXPECT_EQ(Status(CheckRequest(kLocal, MakeRequest("POST", {{"Content-Length", "5"}}))), 415);
  EXPECT_EQ(Status(CheckRequest(kLocal, MakeRequest("PATCH", {{"Transfer-Encoding", "chunked"}}))),
            415);
}

TEST(RequestGuard, ForeignOriginsAreRefused) {
  auto r = CheckRequest(kLocal, MakeRequest("POST", {{"Host", "127.0.0.1:8080"},
                                                     {"Origin", "http://evil.example"},
                                                     {"Content-Type", "application/json"},
                                                     {"Content-Length", "2"}}));
  EXPECT_EQ(Status(r), 403);
  EXPECT_NE(r.refusal->body.find("forbidden_origin"), std::string::npos);
  // file:// pages and sandboxed frames say "null".
  EXPECT_EQ(Status(CheckRequest(kLocal, MakeRequest("GET", {{"Origin", "null"}}))), 403);
  // Another port of the same host is another origin.
  EXPECT_EQ(Status(CheckRequest(kLocal, MakeRequest("GET", {{"Host", "127.0.0.1:8080"},
                                                            {"Origin", "http://127.0.0.1:3000"}}))),
            403);
  // The server's own origin (its dashboard) passes, without CORS headers.
  auto same = CheckRequest(kLocal, MakeRequest("GET", {{"Host", "127.0.0.1:8080"},
                                                       {"Origin", "http://127.0.0.1:8080"}}));
  EXPECT_EQ(Status(same), 0);
  EXPECT_TRUE(same.headers.empty());
}

TEST(RequestGuard, ConfiguredOriginsGetCorsAndPreflight) {
  GuardOptions opts = kLocal;
  opts.allowed_origins = {"https://ui.example.com"};
  auto r = CheckRequest(opts, MakeRequest("POST", {{"Origin", "https://ui.example.com"},
                                                   {"Content-Type", "application/json"},
                                                   {"Content-Length", "2"}}));
  EXPECT_EQ(Status(r), 0);
  ASSERT_FALSE(r.headers.empty());
  EXPECT_EQ(r.headers[0].first, "Access-Control-Allow-Origin");
  EXPECT_EQ(r.headers[0].second, "https://ui.example.com");

  auto preflight =
      CheckRequest(opts, MakeRequest("OPTIONS", {{"Origin", "https://ui.example.com"},
                                                 {"Access-Control-Request-Method", "POST"}}));
  ASSERT_TRUE(preflight.refusal);  // answered by the guard itself
  EXPECT_EQ(preflight.refusal->status, 204);
  bool methods = false;
  for (const auto& [k, v] : preflight.refusal->headers)
    methods |= k == "Access-Control-Allow-Methods";
  EXPECT_TRUE(methods);
  EXPECT_EQ(
      Status(CheckRequest(opts, MakeRequest("GET", {{"Origin", "https://other.example.com"}}))),
      403);
}

TEST(RequestGuard, HostileHeaderBytesGetAJsonRefusal) {
  // Bytes that are not UTF-8 in Host or Origin are quoted back in valid JSON, never a throw.
  auto host = CheckRequest(kLocal, MakeRequest("GET", {{"Host", "\xff\xfe.example"}}));
  ASSERT_EQ(Status(host), 421);
  EXPECT_NE(host.refusal->body.find("\xEF\xBF\xBD"), std::string::npos) << host.refusal->body;
  auto origin = CheckRequest(kLocal, MakeRequest("GET", {{"Origin", "http://\xc0\xaf"}}));
  ASSERT_EQ(Status(origin), 403);
  EXPECT_NE(origin.refusal->body.find("forbidden_origin"), std::string::npos);
  // A huge header is still one comparison, and refused.
  EXPECT_EQ(Status(CheckRequest(kLocal, MakeRequest("GET", {{"Host", std::string(8000, 'a')}}))),
            421);
}

TEST(RequestGuard, DnsRebindingHostsAreRefused) {
  auto r = CheckRequest(kLocal, MakeRequest("GET", {{"Host", "attacker.example:8080"}}));
  EXPECT_EQ(Status(r), 421);
  EXPECT_NE(r.refusal->body.find("allowed_hosts"), std::string::npos);
  EXPECT_EQ(
      Status(CheckRequest(kLocal, MakeRequest("GET", {{"Host", "localhost.attacker.example"}}))),
      421);
  GuardOptions named = kLocal;
  named.allowed_hosts = {"cortex.internal"};
  EXPECT_EQ(Status(CheckRequest(named, MakeRequest("GET", {{"Host", "Cortex.Internal:8080"}}))), 0);
  GuardOptions listen_name = Listening("build-box");
  EXPECT_EQ(Status(CheckRequest(listen_name, MakeRequest("GET", {{"Host", "build-box:8080"}}))), 0);
  GuardOptions any = kLocal;
  any.allowed_hosts = {"*"};
  EXPECT_EQ(Status(CheckRequest(any, MakeRequest("GET", {{"Host", "whatever.example"}}))), 0);
}

}  // namespace
}  // namespace cortex::api
