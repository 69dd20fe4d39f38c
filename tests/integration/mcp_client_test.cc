// Cortex as an MCP client: Tools with `implementation.type: mcp` call the tools of a server
// written with the official SDK (tests/node/mcp_test_server.mjs), started by Cortex (stdio) or
// reached at a URL (Streamable HTTP), through POST /execute/tool and a workflow step, like any
// other tool: recorded, followed, failing with the server's reason, and the server started again
// when it died.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>

#include "cli/cli_process.h"
#include "integration/api_reply.h"
#include "integration/daemon.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

const std::string kServer = std::string(CORTEX_SOURCE_DIR) + "/tests/node/mcp_test_server.mjs";

// tools/remote_<tool>: the test server's `tool`, started as a stdio server.
void WriteRemoteTool(const fs::path& m, const std::string& tool, const std::string& params = "") {
  WriteFile(m / ("tools/remote_" + tool + "/tool.yml"),
            "kind: Tool\nname: remote_" + tool + "\ndescription: The test server's " + tool +
                ".\nimplementation:\n  type: mcp\n  resources: {timeout: 20s}\n  mcp:\n"
                "    command: [node, " +
                kServer + "]\n    tool: " + tool + "\n" + params);
}

void WriteClientManifests(const fs::path& m) {
  WriteRemoteTool(m, "echo", "parameters:\n  - {name: text, type: string, required: true}\n");
  WriteRemoteTool(m, "add");
  WriteRemoteTool(m, "fail");
  WriteRemoteTool(m, "slow");
  WriteRemoteTool(m, "crash");
  WriteRemoteTool(m, "pid");
  WriteRemoteTool(m, "nothere");
  WriteFile(m / "workflows/remote_sum.workflow.yml", R"y(kind: Workflow
name: remote_sum
description: Adds through another MCP server, twice.
steps:
  - {name: first, type: tool, target: remote_add, parameters: {a: 2, b: 3}}
  - {name: second, type: tool, target: remote_add, parameters: {a: "$(steps.first.sum)", b: 10}}
outputs:
  total: {source: "steps.second.sum"}
)y");
}

Reply Execute(http::Client& c, const std::string& tool, const json& params) {
  return Post(c, "/execute/tool", json{{"name", tool}, {"parameters", params}}.dump());
}

TEST(McpClient, ToolsOfAStdioServerRunLikeAnyTool) {
  Daemon d({}, WriteClientManifests);
  ASSERT_DAEMON(d);
  http::Client c(d.url());

  Reply echo = Execute(c, "remote_echo", {{"text", "hello"}});
  ASSERT_EQ(echo.status, 200) << echo.body;
  EXPECT_EQ(echo.json["status"], "succeeded") << echo.body;
  EXPECT_EQ(echo.json["result"], "hello") << echo.body;
  // The manifest's parameters are checked before the server is asked.
  Reply missing = Execute(c, "remote_echo", json::object());
  EXPECT_EQ(missing.status, 400) << missing.body;

  Reply add = Execute(c, "remote_add", {{"a", 2}, {"b", 40}});
  EXPECT_EQ(add.json["status"], "succeeded") << add.body;
  EXPECT_EQ(add.json["result"]["sum"], 42) << add.body;

  // The server's own error result, and its refusal of bad arguments, fail the call with its reason.
  Reply fail = Execute(c, "remote_fail", json::object());
  EXPECT_EQ(fail.json["status"], "failed") << fail.body;
  EXPECT_THAT(fail.json.value("error", ""), HasSubstr("it went wrong on purpose")) << fail.body;
  Reply bad = Execute(c, "remote_add", {{"a", "two"}});
  EXPECT_EQ(bad.json["status"], "failed") << bad.body;

  // Progress becomes the execution's output lines.
  Reply slow = Execute(c, "remote_slow", {{"steps", 3}});
  EXPECT_EQ(slow.json["status"], "succeeded") << slow.body;
  EXPECT_EQ(slow.json["result"], "done after 3") << slow.body;
  Reply logs = Get(c, "/executions/" + slow.json.value("execution_id", "") + "/logs");
  EXPECT_THAT(logs.body, HasSubstr("step 3")) << logs.body;

  // A workflow step is a tool call like the others.
  Reply run = Post(c, "/execute/workflow", R"({"name": "remote_sum", "wait": true})");
  ASSERT_LT(run.status, 300) << run.body;
  std::string run_id = run.json.value("run_id", "");
  Reply done;
  ASSERT_TRUE(WaitFor(
      [&] {
        done = Get(c, "/workflows/" + run_id);
        return done.json.value("status", "") == "succeeded" ||
               done.json.value("status", "") == "failed";
      },
      std::chrono::seconds(30)));
  EXPECT_EQ(done.json["output"]["total"], 15) << done.body;

  // Health: the server answers and lists the tool; a tool it does not have is unhealthy.
  Reply healthy = Get(c, "/tools/remote_add/health");
  EXPECT_EQ(healthy.json["status"], "healthy") << healthy.body;
  EXPECT_EQ(healthy.json["check"], "mcp") << healthy.body;
  Reply absent = Get(c, "/tools/remote_nothere/health");
  EXPECT_EQ(absent.json["status"], "unhealthy") << absent.body;
  EXPECT_THAT(absent.json.value("error", ""), HasSubstr("has no tool 'nothere' (it lists: echo"))
      << absent.body;

  // One server process serves every call; when it dies, the next call starts it again.
  Reply pid1 = Execute(c, "remote_pid", json::object());
  Reply pid2 = Execute(c, "remote_pid", json::object());
  EXPECT_EQ(pid1.json["result"], pid2.json["result"]) << pid1.body << pid2.body;
  Reply crash = Execute(c, "remote_crash", json::object());
  EXPECT_EQ(crash.json["status"], "failed") << crash.body;
  EXPECT_THAT(crash.json.value("error", ""), HasSubstr("exited")) << crash.body;
  Reply pid3 = Execute(c, "remote_pid", json::object());
  EXPECT_EQ(pid3.json["status"], "succeeded") << pid3.body;
  EXPECT_NE(pid3.json["result"], pid1.json["result"]) << pid3.body;
}

int FreePort() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  ::close(s);
  return port;
}

TEST(McpClient, ToolsOfAStreamableHttpServer) {
  const int port = FreePort();
  CliProcess server({"/usr/bin/env", "node", kServer, "--http", std::to_string(port)});
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/mcp";
  Daemon d({}, [&](const fs::path& m) {
    WriteFile(m / "tools/http_add/tool.yml",
              "kind: Tool\nname: http_add\ndescription: Adds, over HTTP.\nimplementation:\n"
              "  type: mcp\n  mcp: {url: \"" +
                  url + "\", tool: add}\n");
  });
  ASSERT_DAEMON(d);
  http::Client c(d.url());
  Reply add;
  // The node server takes a moment to listen.
  ASSERT_TRUE(WaitFor(
      [&] {
        add = Execute(c, "http_add", {{"a", 1}, {"b", 2}});
        return add.json.value("status", "") == "succeeded";
      },
      std::chrono::seconds(20)))
      << add.body;
  EXPECT_EQ(add.json["result"]["sum"], 3) << add.body;
}

// A relic can be the MCP server: its monument starts it, and a Tool names it (`mcp.relic`).
TEST(McpClient, ARelicServesTheToolsOnceItsMonumentIsDeployed) {
  const int port = FreePort();
  // The relic runs the SDK's server from the source tree, which the account relics run as by
  // default (nobody) may not be able to reach: it runs as the server's own account.
  TempDir config;
  WriteFile(config.path() / "cortex.yml", "deploy:\n  allow_root_relics: true\n");
  const std::string user = ::getuid() == 0 ? "  user: root\n" : "";
  Daemon d({"--config", (config.path() / "cortex.yml").string()}, [&](const fs::path& m) {
    WriteFile(m / "relics/mcpsrv/relic.yml",
              "kind: Relic\nname: mcpsrv\ndescription: The test MCP server, over HTTP.\n"
              "deployment:\n  type: process\n" +
                  user + "  command: [node, " + kServer + ", --http, \"" + std::to_string(port) +
                  "\"]\n"
                  "health_check: {type: tcp, port: " +
                  std::to_string(port) +
                  ", interval: 1s, timeout: 1s}\n"
                  "interface:\n  type: rest_api\n  base_url: http://127.0.0.1:" +
                  std::to_string(port) + "\n");
    WriteFile(m / "monuments/tools_stack/monument.yml",
              "kind: Monument\nname: tools_stack\ndescription: The MCP server.\n"
              "components:\n  relics: [mcpsrv]\n");
    WriteFile(m / "tools/relic_add/tool.yml",
              "kind: Tool\nname: relic_add\ndescription: Adds, on the relic.\nimplementation:\n"
              "  type: mcp\n  mcp: {relic: mcpsrv, tool: add}\n");
  });
  ASSERT_DAEMON(d);
  http::Client c(d.url());
  Reply early = Execute(c, "relic_add", {{"a", 1}, {"b", 1}});
  EXPECT_EQ(early.json["status"], "failed") << early.body;
  EXPECT_THAT(early.json.value("error", ""), HasSubstr("relic mcpsrv")) << early.body;
  // The tool depends on the relic, as the graph shows.
  Reply deps = Get(c, "/registry/dependencies/tool/relic_add");
  EXPECT_THAT(deps.body, HasSubstr("mcpsrv")) << deps.body;

  Reply deployed =
      Post(c, "/deploy/monument",
           json{{"name", "tools_stack"}, {"wait", true}, {"timeout_seconds", 30}}.dump());
  ASSERT_LT(deployed.status, 300) << deployed.body;
  Reply add;
  ASSERT_TRUE(WaitFor(
      [&] {
        add = Execute(c, "relic_add", {{"a", 20}, {"b", 22}});
        return add.json.value("status", "") == "succeeded";
      },
      std::chrono::seconds(20)))
      << add.body;
  EXPECT_EQ(add.json["result"]["sum"], 42) << add.body;
  Post(c, "/monuments/tools_stack/stop", "{}");
}

}  // namespace
}  // namespace cortex::testing
