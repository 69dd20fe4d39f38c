// The README's first session with an agent: the shipped examples served with examples/cortex.yml
// (the assistant's model is a recorded conversation played back), driven by the real CLI:
// `cortex run agent assistant "..."` and `cortex chat assistant`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "cli/cli_process.h"
#include "integration/daemon.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

TEST(AgentExample, TheAssistantAnswersWithTheCalculatorFromARecording) {
  const fs::path examples = fs::path(CORTEX_SOURCE_DIR) / "examples";
  Daemon d({"--config", (examples / "cortex.yml").string()}, [&](const fs::path& m) {
    fs::copy(examples / "manifests", m, fs::copy_options::recursive);
  });
  ASSERT_TRUE(d.ok()) << d.log();

  CliResult r = RunCli({"--server", d.url(), "run", "agent", "assistant", "What is 17 + 25?"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("17 + 25 = 42")) << r;
  EXPECT_THAT(r.err, HasSubstr("→ tool calculator")) << r;
  EXPECT_THAT(r.err, HasSubstr("✓ sum:")) << r;
  EXPECT_THAT(r.err, HasSubstr("succeeded (final) after 2 turns")) << r;

  // JSON for scripts.
  r = RunCli({"--server", d.url(), "run", "agent", "assistant", "again", "-o", "json"});
  EXPECT_EQ(r.exit_code, 0) << r;
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r;
  EXPECT_EQ(j["response"], "17 + 25 = 42");
  EXPECT_EQ(j["actions"][0]["name"], "calculator");

  // An unknown agent: a clear error, exit 1.
  r = RunCli({"--server", d.url(), "run", "agent", "nobody", "hi"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.err, HasSubstr("no agent named 'nobody'")) << r;

  // The official OpenAI client (npm `openai`) talks to the agent as if it were a model.
  CliResult js = RunCli({"/usr/bin/env", "node",
                         std::string(CORTEX_SOURCE_DIR) + "/tests/node/openai_client.mjs",
                         d.url() + "/v1", "assistant", "What is 17 + 25?"});
  ASSERT_EQ(js.exit_code, 0) << js;
  auto oa = nlohmann::json::parse(js.out, nullptr, false);
  ASSERT_TRUE(oa.is_object()) << js;
  EXPECT_THAT(oa["models"].dump(), HasSubstr("\"assistant\"")) << js;
  EXPECT_EQ(oa["completion"]["content"], "17 + 25 = 42") << js;
  EXPECT_EQ(oa["completion"]["finish"], "stop") << js;
  EXPECT_EQ(oa["completion"]["usage"]["total_tokens"], 2552 + 95) << js;
  EXPECT_EQ(oa["stream"]["text"], "Let me calculate that.\n\n17 + 25 = 42") << js;
  EXPECT_EQ(oa["stream"]["finish"], "stop") << js;
  EXPECT_GE(oa["stream"]["chunks"], 3) << js;
  EXPECT_EQ(oa["stream"]["usage"]["prompt_tokens"], 2552) << js;
  EXPECT_EQ(oa["unknown"]["status"], 404) << js;
  EXPECT_THAT(oa["unknown"].value("message", ""), HasSubstr("no agent named 'nobody'")) << js;

  // A conversation: each line a turn.
  r = RunCli({"--server", d.url(), "chat", "assistant", "-q"}, "What is 17 + 25?\n\n");
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("17 + 25 = 42")) << r;
}

}  // namespace
}  // namespace cortex::testing
