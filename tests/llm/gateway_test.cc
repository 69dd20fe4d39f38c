// The LLM gateway against real HTTP servers the tests start: the scripted model server
// (tests/integration/scripted_llm.h) for retries, fallback and the circuit breaker in real time,
// and a byte-exact one (tests/llm/raw_llm.py) for HTTPS with a self-signed certificate and for
// hostile streams: an endless line, invalid UTF-8, a stall in the middle, a slow first byte.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "cli/cli_process.h"
#include "integration/daemon.h"
#include "integration/scripted_llm.h"
#include "llm/gateway.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

llm::ProviderConfig Provider(const std::string& name, const std::string& base_url) {
  llm::ProviderConfig c;
  c.name = name;
  c.type = "openai";
  c.base_url = base_url;
  c.model = "m";
  c.max_retries = 0;
  c.breaker_failures = 100;
  return c;
}

// The provider `name` as GET /llm/providers shows it.
json Described(const llm::Gateway& g, const std::string& name) {
  for (const auto& p : json::parse(g.Describe().dump())) {
    if (p.value("name", "") == name) return p;
  }
  return nullptr;
}

llm::ChatRequest Ask() {
  llm::ChatRequest r;
  r.messages = {{"user", "hi"}};
  return r;
}

// Streams the request; the text it delivered goes to `*streamed`.
Result<llm::ChatResult> Stream(llm::Gateway& g, const std::string& provider,
                               std::string* streamed = nullptr) {
  return g.Chat({{provider, ""}}, Ask(), [streamed](std::string_view t) {
    if (streamed) streamed->append(t);
    return true;
  });
}

TEST(Gateway, RetriesHonourRetryAfterAndFallBackToTheNextProvider) {
  ScriptedLlm llm;
  ASSERT_TRUE(llm.ok());
  auto primary = Provider("primary", llm.base_url());
  primary.max_retries = 2;
  llm::Gateway g({primary, Provider("backup", llm.base_url())});
  // A 429 with Retry-After: 1 is retried after at least a second, and the retry answers.
  llm.Script({Fails(429, "1"), Says("hello")});
  auto start = Clock::now();
  std::string streamed;
  auto r = Stream(g, "primary", &streamed);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->content, "hello");
  EXPECT_EQ(streamed, "hello");
  EXPECT_EQ(r->attempts, 2);
  EXPECT_GE(Clock::now() - start, milliseconds(950)) << "Retry-After was not honoured";
  // The primary fails every attempt (500s): the backup answers.
  llm.Script({Fails(500), Fails(500), Fails(500), Says("from the backup")});
  r = g.Chat({{"primary", ""}, {"backup", ""}}, Ask(), nullptr);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->provider, "backup");
  EXPECT_EQ(r->content, "from the backup");
  EXPECT_EQ(llm.requests().size(), 6u);
  // A request the provider refuses (400) is not retried; nothing else answers: a clear error.
  llm.Script({Fails(400), Fails(400)});
  r = g.Chat({{"primary", ""}, {"backup", ""}}, Ask(), nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("no model answered"));
  EXPECT_THAT(r.status().message(), HasSubstr("400"));
  EXPECT_EQ(llm.requests().size(), 8u);
}

TEST(Gateway, AnAgentsOwnEndpointGetsAKeyOnlyWhenItMayHaveOne) {
  ScriptedLlm home, elsewhere;
  ASSERT_TRUE(home.ok() && elsewhere.ok());
  ::setenv("CORTEX_TEST_HOME_KEY", "sk-home", 1);
  ::setenv("CORTEX_TEST_OTHER_KEY", "sk-other", 1);
  auto base = Provider("primary", home.base_url());
  base.api_key_env = "CORTEX_TEST_HOME_KEY";
  llm::Gateway g({base});
  auto call = [&](const Result<std::string>& name) {
    ASSERT_TRUE(name.ok()) << name.status().message();
    auto r = g.Chat({{*name, ""}}, Ask(), nullptr);
    ASSERT_TRUE(r.ok()) << r.status().message();
  };
  // Another host: the provider's key is not sent there.
  elsewhere.Script({Says("a"), Says("b")});
  call(g.Derive("primary", elsewhere.base_url(), std::nullopt));
  // Another host with a key of its own, named by the manifest.
  call(g.Derive("primary", elsewhere.base_url(), "CORTEX_TEST_OTHER_KEY"));
  EXPECT_EQ(elsewhere.credentials(), (std::vector<std::string>{"", "Bearer sk-other"}));
  // The provider's own origin (another path, the host in capitals): its key goes with it.
  home.Script({Says("c")});
  std::string same = "HTTP://127.0.0.1:" + std::to_string(home.port()) + "/v1";
  call(g.Derive("primary", same, std::nullopt));
  EXPECT_EQ(home.credentials(), (std::vector<std::string>{"Bearer sk-home"}));
  // The same endpoint twice is one provider, listed with what it is derived from.
  auto again = g.Derive("primary", elsewhere.base_url(), std::nullopt);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(Described(g, *again).value("derived_from", ""), "primary");
  // Bad input: clear errors, nothing made.
  for (const std::string& bad :
       {std::string("ftp://example.com"), std::string("http://"), std::string("http://a b/v1"),
        std::string("example.com/v1"), "http://h/" + std::string(3000, 'p'),
        std::string("http://h/\xff")}) {
    auto r = g.Derive("primary", bad, std::nullopt);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("http:// or https:// URL"));
  }
  EXPECT_FALSE(g.Derive("primary", elsewhere.base_url(), "NOT-A-NAME").ok());
  EXPECT_EQ(g.Derive("nobody", elsewhere.base_url(), std::nullopt).status().code(),
            StatusCode::kNotFound);
  // At most 64 endpoints.
  Status last = Status::Ok();
  for (int i = 0; i < 70 && last.ok(); ++i) {
    last = g.Derive("primary", "http://127.0.0.1:1/v" + std::to_string(i), std::nullopt).status();
  }
  EXPECT_EQ(last.code(), StatusCode::kResourceExhausted) << last.message();
}

TEST(Gateway, TheBreakerOpensThenHalfOpensByItself) {
  ScriptedLlm llm;
  ASSERT_TRUE(llm.ok());
  auto c = Provider("flaky", llm.base_url());
  c.breaker_failures = 2;
  c.breaker_recovery = milliseconds(400);
  llm::Gateway g({c});
  llm.Script({Fails(500), Fails(500)});
  EXPECT_FALSE(Stream(g, "flaky").ok());
  EXPECT_FALSE(Stream(g, "flaky").ok());
  // Open: calls fail at once, without reaching the provider.
  llm.Script({Says("back")});
  auto r = Stream(g, "flaky");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("open"));
  EXPECT_EQ(llm.requests().size(), 2u);
  EXPECT_EQ(Described(g, "flaky").value("breaker", ""), "open");
  // After its recovery time, with nobody resetting it, one call goes through and closes it.
  std::this_thread::sleep_for(milliseconds(500));
  r = Stream(g, "flaky");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->content, "back");
  EXPECT_EQ(Described(g, "flaky").value("breaker", ""), "closed");
}

// The byte-exact server, started for one test, over HTTP or HTTPS.
class RawLlm {
 public:
  // `answers`: one JSON object per request (see raw_llm.py).
  RawLlm(const std::vector<json>& answers, bool tls = false) {
    std::string script;
    for (const auto& a : answers) script += a.dump() + "\n";
    WriteFile(dir_.path() / "script.jsonl", script);
    std::vector<std::string> args = {
        "/usr/bin/python3", std::string(CORTEX_SOURCE_DIR) + "/tests/llm/raw_llm.py",
        "--script",         (dir_.path() / "script.jsonl").string(),
        "--port-file",      (dir_.path() / "port").string(),
        "--requests",       (dir_.path() / "requests").string()};
    if (tls) {
      // A certificate of its own for 127.0.0.1, that no system trusts.
      CliProcess gen({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                      "-keyout", cert_key().string(), "-out", cert().string(), "-days", "1",
                      "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"});
      EXPECT_EQ(gen.Wait(), 0) << gen.err();
      args.insert(args.end(), {"--cert", cert().string(), "--key", cert_key().string()});
    }
    server_ = std::make_unique<CliProcess>(args);
    ok_ = WaitFor([&] { return fs::exists(dir_.path() / "port"); });
    if (ok_) port_ = std::stoi(ReadFile(dir_.path() / "port"));
  }
  bool ok() const { return ok_; }
  std::string log() const { return server_->err(); }
  std::string base_url(bool tls = false) const {
    return std::string(tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_) + "/v1";
  }
  fs::path cert() const { return dir_.path() / "cert.pem"; }
  fs::path cert_key() const { return dir_.path() / "key.pem"; }

 private:
  TempDir dir_;
  std::unique_ptr<CliProcess> server_;
  bool ok_ = false;
  int port_ = 0;
};

// An OpenAI stream saying `text` in one chunk, then its end.
std::vector<std::string> StreamOf(const std::string& text) {
  return {
      "data: " + json{{"choices", {{{"index", 0}, {"delta", {{"content", text}}}}}}}.dump() +
          "\n\n",
      "data: " +
          json{{"choices", {{{"index", 0}, {"delta", json::object()}, {"finish_reason", "stop"}}}}}
              .dump() +
          "\n\n",
      "data: [DONE]\n\n"};
}

TEST(Gateway, HttpsWithASelfSignedCertificateNeedsItsCaBundle) {
  RawLlm server({{{"chunks", StreamOf("over tls")}}, {{"chunks", StreamOf("never")}}},
                /*tls=*/true);
  ASSERT_TRUE(server.ok()) << server.log();
  auto trusted = Provider("trusted", server.base_url(true));
  trusted.ca_bundle = server.cert().string();
  auto untrusting = Provider("untrusting", server.base_url(true));
  llm::Gateway g({trusted, untrusting});
  std::string streamed;
  auto r = Stream(g, "trusted", &streamed);
  ASSERT_TRUE(r.ok()) << r.status().message() << server.log();
  EXPECT_EQ(streamed, "over tls");
  // Certificate checks are on: without the bundle the call fails, and says why.
  r = Stream(g, "untrusting");
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("certificate")) << r.status().message();
}

TEST(Gateway, HostileStreamsEndInClearErrors) {
  std::string long_line = "data: " + std::string(2 << 20, 'x') + "\n\n";
  std::vector<std::string> stall = StreamOf("start");
  stall.resize(1);  // then nothing: the server holds the connection open
  RawLlm server({
      {{"chunks", {long_line}}},
      // Invalid UTF-8 inside a chunk's JSON string: "a\xff\xfe".
      {{"chunks_b64",
        {"ZGF0YTogeyJjaG9pY2VzIjogW3siaW5kZXgiOiAwLCAiZGVsdGEiOiB7ImNvbnRlbnQiOiAiYf/"
         "+In19XX0KCg=="}}},
      {{"chunks", {stall[0], std::string(" ")}}, {"delay_ms", 5000}},
      {{"chunks", StreamOf("late")}, {"stall_ms", 3000}},
      {{"chunks", {"data: {not json\n\n"}}},
  });
  ASSERT_TRUE(server.ok()) << server.log();
  auto c = Provider("hostile", server.base_url());
  c.limits.total_timeout = milliseconds(1500);
  c.limits.first_token_timeout = milliseconds(1000);
  llm::Gateway g({c});
  struct Case {
    const char* what;
    const char* says;
  };
  for (const Case& k : {Case{"a 2 MiB line", "line"}, Case{"invalid UTF-8", "not JSON"},
                        Case{"a stall mid-stream", "time"}, Case{"a slow first byte", "time"},
                        Case{"a chunk that is not JSON", "not JSON"}}) {
    SCOPED_TRACE(k.what);
    auto start = Clock::now();
    auto r = Stream(g, "hostile");
    ASSERT_FALSE(r.ok());
    EXPECT_THAT(r.status().message(), HasSubstr(k.says)) << r.status().message();
    EXPECT_LT(Clock::now() - start, std::chrono::seconds(4)) << "the limits did not bound it";
  }
}

}  // namespace
}  // namespace cortex::testing
