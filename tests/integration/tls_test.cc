// TLS on the listener: `cortex serve` with http.tls_cert and http.tls_key (a certificate made by
// openssl for 127.0.0.1, trusted by no system) answers over HTTPS only; a client that trusts
// the certificate's CA gets answers, one that does not (or speaks plain HTTP) gets none; the CLI
// reaches it with CORTEX_CA_CERT or a context's ca_file; a bad key pair stops the server at
// start with a clear error.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "cli/cli_process.h"
#include "integration/api_reply.h"
#include "integration/daemon.h"
#include "integration/fixtures.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class Tls : public ::testing::Test {
 protected:
  void SetUp() override {
    CliResult gen = RunCli({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                            "-keyout", key().string(), "-out", cert().string(), "-days", "1",
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"});
    ASSERT_EQ(gen.exit_code, 0) << gen;
  }
  fs::path cert() const { return dir_.path() / "cert.pem"; }
  fs::path key() const { return dir_.path() / "key.pem"; }
  fs::path Config(const fs::path& c, const fs::path& k) const {
    fs::path cfg = dir_.path() / "cortex.yml";
    WriteFile(cfg, "http:\n  tls_cert: " + c.string() + "\n  tls_key: " + k.string() + "\n");
    return cfg;
  }
  TempDir dir_;
};

TEST_F(Tls, TheServerSpeaksHttpsToClientsThatTrustItsCertificate) {
  Daemon d({"--config", Config(cert(), key()).string()},
           [](const fs::path& m) { CopyExampleTools(m, {"calculator"}); });
  ASSERT_DAEMON(d);
  const std::string https = "https://127.0.0.1:" + std::to_string(d.port());
  EXPECT_THAT(ReadFile(d.data_dir() / "serve.json"), HasSubstr("\"scheme\":\"https\""));

  http::ClientOptions trusting;
  trusting.ca_file = cert().string();
  http::Client good(https, trusting);
  auto health = good.Get("/health");
  ASSERT_TRUE(health.ok()) << health.status().message();
  EXPECT_EQ(health->status, 200);
  auto ran =
      good.Post("/execute/tool",
                R"({"name": "calculator", "parameters": {"operation": "add", "a": 1, "b": 2}})",
                "application/json");
  ASSERT_TRUE(ran.ok()) << ran.status().message();
  EXPECT_EQ(ran->status, 200) << ran->body;

  // The system's CAs do not know it; plain HTTP gets no answer.
  http::Client untrusting(https);
  EXPECT_FALSE(untrusting.Get("/health").ok());
  http::Client plain("http://127.0.0.1:" + std::to_string(d.port()));
  auto p = plain.Get("/health");
  EXPECT_FALSE(p.ok() && p->status == 200);

  // The CLI: with the CA from the environment, or from a context.
  CliResult no_ca = RunCli({"--server", https, "get", "tools"});
  EXPECT_NE(no_ca.exit_code, 0) << no_ca;
  CliResult env_ca =
      RunCli({"--server", https, "get", "tools"}, "", {"CORTEX_CA_CERT=" + cert().string()});
  EXPECT_EQ(env_ca.exit_code, 0) << env_ca;
  EXPECT_THAT(env_ca.out, HasSubstr("calculator"));
  const std::string contexts = "CORTEX_CONTEXTS=" + (dir_.path() / "contexts.yml").string();
  ASSERT_EQ(RunCli({"context", "set", "secure", "--server", https, "--ca-file", cert().string()},
                   "", {contexts})
                .exit_code,
            0);
  CliResult ctx = RunCli({"get", "tools"}, "", {contexts});
  EXPECT_EQ(ctx.exit_code, 0) << ctx;
}

TEST_F(Tls, AKeyThatDoesNotFitItsCertificateStopsTheStart) {
  TempDir other;
  CliResult gen =
      RunCli({"/usr/bin/openssl", "genrsa", "-out", (other.path() / "other.pem").string(), "2048"});
  ASSERT_EQ(gen.exit_code, 0) << gen;
  Daemon d({"--config", Config(cert(), other.path() / "other.pem").string()});
  EXPECT_FALSE(d.ok());
  EXPECT_NE(d.Stop(), 0);
  EXPECT_THAT(d.log(), HasSubstr("cannot serve TLS")) << d.log();
  // Half a pair is a settings error.
  fs::path half = dir_.path() / "half.yml";
  WriteFile(half, "http:\n  tls_cert: " + cert().string() + "\n");
  Daemon h({"--config", half.string()});
  EXPECT_FALSE(h.ok());
  EXPECT_THAT(h.log(), HasSubstr("go together")) << h.log();
}

}  // namespace
}  // namespace cortex::testing
