#include "exec/tool_process.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "registry/parser.h"

namespace cortex::exec {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

class ToolProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "cortex-tool-XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
    std::ofstream(dir_ / "run.py") << "print('{}')\n";
    std::ofstream(dir_ / "native") << "#!/bin/sh\necho '{}'\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  registry::Manifest Tool(const std::string& impl, const std::string& extra = "") {
    auto parsed = registry::ParseManifest(
        "kind: Tool\nname: t\ndescription: d\nimplementation: " + impl + "\n" + extra, "t.yml",
        registry::FileFormat::kYaml);
    EXPECT_TRUE(parsed.manifest);
    return *parsed.manifest;
  }
  Result<ProcessSpec> Build(const registry::Manifest& m, Json params = Json::object()) {
    ToolCall call;
    call.tool = &m;
    call.tool_dir = dir_.string();
    call.parameters = std::move(params);
    call.execution_id = "ex_1";
    return BuildToolProcess(
        call, ToolDefaults{},
        [](const std::string& name) -> Result<std::string> { return "/opt/bin/" + name; });
  }

  fs::path dir_;
};

TEST_F(ToolProcessTest, PythonToolArgvEnvAndLimits) {
  auto m = Tool("{runtime: python3, entrypoint: ./run.py, resources: {timeout: 5s, memory: 64M}}",
                "environment: {variables: {GREETING: hello, WHERE: '${HOME}/x'}}\n");
  auto spec = Build(m, Json{{"a", 1}});
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->argv, (std::vector<std::string>{"/opt/bin/python3", (dir_ / "run.py").string(),
                                                  R"({"a":1})"}));
  EXPECT_EQ(spec->stdin_data, R"({"a":1})");
  EXPECT_EQ(spec->cwd, dir_.string());
  auto has = [&](const std::string& kv) {
    return std::find(spec->env.begin(), spec->env.end(), kv) != spec->env.end();
  };
  EXPECT_TRUE(has("GREETING=hello"));
  EXPECT_TRUE(has("WHERE=/tmp/x"));  // resolved against the tool's own environment
  EXPECT_TRUE(has("CORTEX_EXECUTION_ID=ex_1"));
  for (const std::string& kv : spec->env) EXPECT_FALSE(kv.starts_with("CORTEX_SERVER=")) << kv;
  EXPECT_EQ(spec->limits.timeout, std::chrono::milliseconds(5000));
  EXPECT_EQ(spec->limits.memory_bytes, 64ull << 20);
}

TEST_F(ToolProcessTest, NativeBinaryNeedsTheExecutableBit) {
  auto m = Tool("{type: binary, entrypoint: native}");
  auto spec = Build(m);
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("is not executable"), std::string::npos);
  fs::permissions(dir_ / "native", fs::perms::owner_exec, fs::perm_options::add);
  spec = Build(m);
  ASSERT_TRUE(spec.ok());
  EXPECT_EQ(spec->argv[0], (dir_ / "native").string());
}

TEST_F(ToolProcessTest, MissingEntrypointAndUnsupportedRuntime) {
  auto missing = Build(Tool("{runtime: python3, entrypoint: ./nope.py}"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kFailedPrecondition);
  auto ruby = Build(Tool("{runtime: ruby, entrypoint: ./run.py}"));
  ASSERT_FALSE(ruby.ok());
  EXPECT_NE(ruby.status().message().find("runtime 'ruby' is not supported"), std::string::npos);
}

TEST(ToolOutcomeTest, ContractOfTheOriginalCorpus) {
  ProcessResult r;
  r.reason = EndReason::kExited;
  r.exit_code = 0;
  r.stdout_data = "{\"success\": true, \"result\": 8}\n";
  auto ok = InterpretToolResult(r);
  EXPECT_TRUE(ok.success);
  EXPECT_EQ(ok.result["result"], 8);

  r.stdout_data = "{\"status\": \"error\", \"message\": \"bad input\"}";
  auto status_error = InterpretToolResult(r);
  EXPECT_FALSE(status_error.success);
  EXPECT_EQ(status_error.error, "bad input");

  r.stdout_data = "{\"success\": false, \"error\": \"division by zero\"}";
  r.exit_code = 1;
  auto failed = InterpretToolResult(r);
  EXPECT_FALSE(failed.success);
  EXPECT_EQ(failed.error, "division by zero (exit code 1)");

  r.stdout_data = "plain text";
  r.stderr_data = "Traceback...\nValueError: boom\n";
  r.exit_code = 2;
  auto text = InterpretToolResult(r);
  EXPECT_EQ(text.result, "plain text");
  EXPECT_EQ(text.error, "Traceback...\nValueError: boom (exit code 2)");

  r.reason = EndReason::kTimeout;
  r.reason_text = "timed out after 5000 ms";
  EXPECT_EQ(InterpretToolResult(r).error, "timed out after 5000 ms");
}

TEST_F(ToolProcessTest, HealthCheckProcess) {
  auto m = Tool(
      "{runtime: python3, entrypoint: ./run.py, health_check: {command: \"python3 ./run.py "
      "'{\\\"x\\\": 1}'\", timeout: 2s}}",
      "environment: {variables: {GREETING: hello}}\n");
  ToolCall call;
  call.tool = &m;
  call.tool_dir = dir_.string();
  call.execution_id = "health_1";
  auto resolve = [](const std::string& name) -> Result<std::string> { return "/opt/bin/" + name; };
  auto spec = BuildToolHealthProcess(call, ToolDefaults{}, resolve);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->argv, (std::vector<std::string>{"/opt/bin/python3", "./run.py", R"({"x": 1})"}));
  EXPECT_EQ(spec->cwd, dir_.string());
  EXPECT_EQ(spec->limits.timeout, std::chrono::milliseconds(2000));
  EXPECT_NE(std::find(spec->env.begin(), spec->env.end(), "GREETING=hello"), spec->env.end());

  auto relative =
      Tool("{runtime: python3, entrypoint: ./run.py, health_check: {command: ./native}}");
  call.tool = &relative;
  auto rel = BuildToolHealthProcess(call, ToolDefaults{}, resolve);
  ASSERT_TRUE(rel.ok());
  EXPECT_EQ(rel->argv, (std::vector<std::string>{(dir_ / "native").string()}));
  EXPECT_EQ(rel->limits.timeout, std::chrono::milliseconds(10000));

  auto none = Tool("{runtime: python3, entrypoint: ./run.py}");
  call.tool = &none;
  EXPECT_EQ(BuildToolHealthProcess(call, ToolDefaults{}, resolve).status().code(),
            StatusCode::kNotFound);
  auto http = Tool("{runtime: python3, entrypoint: ./run.py, health_check: {type: http}}");
  call.tool = &http;
  EXPECT_EQ(BuildToolHealthProcess(call, ToolDefaults{}, resolve).status().code(),
            StatusCode::kUnimplemented);
}

TEST(SplitCommandLineTest, QuotesAndEscapesWithoutExpansion) {
  using V = std::vector<std::string>;
  EXPECT_EQ(*SplitCommandLine("  a  b\tc "), (V{"a", "b", "c"}));
  EXPECT_EQ(*SplitCommandLine("echo 'a b' \"c d\" e\\ f"), (V{"echo", "a b", "c d", "e f"}));
  EXPECT_EQ(*SplitCommandLine(R"(x "say \"hi\" \$HOME \n" 'it''s')"),
            (V{"x", R"(say "hi" $HOME \n)", "its"}));
  EXPECT_EQ(*SplitCommandLine("echo $HOME ~ *"), (V{"echo", "$HOME", "~", "*"}));
  EXPECT_EQ(*SplitCommandLine("a''b \"\""), (V{"ab", ""}));
  EXPECT_TRUE(SplitCommandLine("   ")->empty());
  EXPECT_EQ(SplitCommandLine("echo 'open").status().message(), "unterminated ' quote at offset 5");
  EXPECT_EQ(SplitCommandLine("echo \"open").status().message(),
            "unterminated \" quote at offset 5");
}

TEST(ToolOutcomeTest, ByteSizes) {
  EXPECT_EQ(*ParseByteSize("64M"), 64ull << 20);
  EXPECT_EQ(*ParseByteSize("1Gi"), 1ull << 30);
  EXPECT_EQ(*ParseByteSize("512kb"), 512ull << 10);
  EXPECT_EQ(*ParseByteSize("100"), 100u);
  EXPECT_FALSE(ParseByteSize("lots").ok());
  EXPECT_FALSE(ParseByteSize("5X").ok());
  EXPECT_FALSE(ParseByteSize("99999999999999999999999M").ok());
}

TEST(ToolOutcomeTest, CpuCores) {
  EXPECT_DOUBLE_EQ(*ParseCpuCores("0.5"), 0.5);
  EXPECT_DOUBLE_EQ(*ParseCpuCores("2"), 2.0);
  EXPECT_DOUBLE_EQ(*ParseCpuCores("250m"), 0.25);
  for (const char* bad : {"", "m", ".", "1.2.3", "-1", "half", "0", "0.001", "2000", "1e3"}) {
    auto r = ParseCpuCores(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_NE(r.status().message().find("resources.cpu"), std::string::npos) << bad;
    }
  }
}

}  // namespace
}  // namespace cortex::exec
