#include "api/settings.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>

namespace cortex::api {
namespace {

namespace fs = std::filesystem;

std::string WriteTemp(const std::string& text) {
  std::string tmpl = (fs::temp_directory_path() / "cortex-settings-XXXXXX").string();
  int fd = ::mkstemp(tmpl.data());
  ::close(fd);
  std::ofstream(tmpl) << text;
  return tmpl;
}

TEST(SettingsTest, FileThenEnvironmentThenFlags) {
  std::string path = WriteTemp(
      "manifests: /srv/m\nlisten: 0.0.0.0:9000\nregistry: {strict: true, debounce_ms: 5}\n"
      "services: {registry: 127.0.0.1:9082}\nhttp: {threads: 128}\n");
  Settings s;
  ASSERT_TRUE(LoadSettingsFile(path, &s).ok());
  EXPECT_EQ(s.manifests, "/srv/m");
  EXPECT_EQ(s.listen, "0.0.0.0:9000");
  EXPECT_TRUE(s.registry.strict);
  EXPECT_EQ(s.registry.debounce_ms, 5);
  EXPECT_EQ(s.services.registry, "127.0.0.1:9082");
  EXPECT_EQ(s.http.threads, 128);
  EXPECT_EQ(s.data_dir, "./.cortex");  // untouched default

  std::map<std::string, std::string> env = {{"CORTEX_LISTEN", "127.0.0.1:7000"},
                                            {"CORTEX_STRICT", "false"}};
  auto getenv = [&](const char* n) -> std::optional<std::string> {
    auto it = env.find(n);
    return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
  ASSERT_TRUE(ApplyEnvironment(getenv, &s).ok());
  EXPECT_EQ(s.listen, "127.0.0.1:7000");
  EXPECT_FALSE(s.registry.strict);
  EXPECT_EQ(s.manifests, "/srv/m");
  fs::remove(path);
}

TEST(SettingsTest, UnknownKeysAndBadValuesAreErrorsWithPositions) {
  std::string path = WriteTemp("listen: 127.0.0.1:8080\nlistne: x\nhttp: {threads: 1}\n");
  Settings s;
  Status st = LoadSettingsFile(path, &s);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find(path + ":2:1: error: listne: unknown field 'listne' (did you mean "
                                     "'listen'?)"),
            std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find(":3:17: error: http.threads: must be at least 2"), std::string::npos)
      << st.message();
  fs::remove(path);

  std::map<std::string, std::string> env = {{"CORTEX_LOG_LEVEL", "loud"}};
  auto getenv = [&](const char* n) -> std::optional<std::string> {
    auto it = env.find(n);
    return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
  EXPECT_EQ(ApplyEnvironment(getenv, &s).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadSettingsFile("/nonexistent/cortex.yml", &s).code(), StatusCode::kNotFound);
}

TEST(SettingsTest, OpenTelemetrysVariablesSetTracing) {
  std::map<std::string, std::string> env = {
      {"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"}, {"OTEL_SERVICE_NAME", "edge"}};
  auto getenv = [&](const char* n) -> std::optional<std::string> {
    auto it = env.find(n);
    return it == env.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
  Settings s;
  ASSERT_TRUE(ApplyEnvironment(getenv, &s).ok());
  EXPECT_EQ(s.tracing.otlp_endpoint, "http://collector:4318");
  EXPECT_EQ(s.tracing.service_name, "edge");
  // The traces-only variable is the more specific one.
  env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "https://traces.example/v1/traces";
  ASSERT_TRUE(ApplyEnvironment(getenv, &s).ok());
  EXPECT_EQ(s.tracing.otlp_traces_endpoint, "https://traces.example/v1/traces");
  env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "collector:4318";
  Status bad = ApplyEnvironment(getenv, &s);
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("http:// or https://"), std::string::npos) << bad.message();
}

TEST(SettingsTest, HostPort) {
  std::string host;
  int port = 0;
  ASSERT_TRUE(ParseHostPort("127.0.0.1:8080", &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 8080);
  ASSERT_TRUE(ParseHostPort("[::1]:0", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_FALSE(ParseHostPort("localhost", &host, &port).ok());
  EXPECT_FALSE(ParseHostPort("h:99999", &host, &port).ok());
  EXPECT_FALSE(ParseHostPort("h:8o", &host, &port).ok());
}

}  // namespace
}  // namespace cortex::api
