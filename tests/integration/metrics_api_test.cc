// Observability of the real server. GET /metrics: after a tool call, an unknown route, a
// refused request, a workflow run and an agent run (against the scripted model server), each is
// counted where it should be, and Prometheus' own checker (`promtool check metrics`, from
// Debian's prometheus package, unpacked by scripts/install-deps.sh) accepts the whole output.
// --log-format json: every line of the server's log is one JSON object.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <regex>
#include <sstream>

#include "cli/cli_process.h"
#include "integration/api_reply.h"
#include "integration/daemon.h"
#include "integration/fixtures.h"
#include "integration/scripted_llm.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

std::string Promtool() {
  fs::path local = fs::path(CORTEX_SOURCE_DIR) / ".deps/bin/promtool";
  if (fs::exists(local)) return local.string();
  for (const char* dir : {"/usr/bin", "/usr/local/bin"}) {
    if (fs::exists(fs::path(dir) / "promtool")) return std::string(dir) + "/promtool";
  }
  return "";
}

// The value of one sample line ("name{labels} value"), or -1 when it is not there.
double Sample(const std::string& text, const std::string& series) {
  size_t at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

TEST(MetricsApi, WhatTheServerDidIsCountedAndPromtoolAcceptsIt) {
  const std::string promtool = Promtool();
  ASSERT_FALSE(promtool.empty()) << "promtool not found: run scripts/install-deps.sh";
  ScriptedLlm llm;
  ASSERT_TRUE(llm.ok());
  TempDir cfg;
  WriteFile(cfg.path() / "cortex.yml",
            "llm:\n  providers:\n    - name: scripted\n      type: openai\n      base_url: " +
                llm.base_url() + "\n");
  Daemon d({"--config", (cfg.path() / "cortex.yml").string()}, [](const fs::path& m) {
    CopyExampleTools(m, {"calculator", "shell_echo"});
    WriteTwiceWorkflow(m);
    WriteFile(m / "agents/asker/agent.md",
              "---\nkind: Agent\nname: asker\ndescription: Asks.\n"
              "cognitive_engine:\n  primary: {provider: scripted, model: m}\n---\nYou ask.\n");
  });
  ASSERT_DAEMON(d);

  Reply tool =
      Post(d.client(), "/execute/tool",
           R"({"name": "calculator", "parameters": {"operation": "add", "a": 1, "b": 2}})");
  EXPECT_EQ(tool.status, 200) << tool.body;
  EXPECT_EQ(Get(d.client(), "/no/such/route").status, 404);
  // Refused by the request guard (a Host that is not this server's): counted all the same.
  EXPECT_EQ(Get(d.client(), "/registry/manifests", {{"Host", "evil.example.com"}}).status, 421);
  Reply wf = Post(d.client(), "/execute/workflow", R"({"name": "twice", "wait": true})");
  EXPECT_EQ(wf.status / 100, 2) << wf.body;
  ScriptedTurn turn = Says("<response final=\"true\">done</response>");
  turn.input_tokens = 13;
  turn.output_tokens = 5;
  llm.Script({turn});
  Reply agent = Post(d.client(), "/execute/agent", R"({"name": "asker", "input": "go"})");
  EXPECT_EQ(agent.status, 200) << agent.body;
  ASSERT_TRUE(WaitFor([&] {
    return Sample(Get(d.client(), "/metrics").body,
                  "cortex_workflow_runs_total{workflow=\"twice\",status=\"succeeded\"}") == 1;
  }));

  Reply scraped = Get(d.client(), "/metrics");
  ASSERT_EQ(scraped.status, 200);
  const std::string& text = scraped.body;
  std::string text_nl = "\n" + text;
  auto has = [&](const std::string& series, double want) {
    EXPECT_EQ(Sample(text_nl, series), want) << series << "\n" << text;
  };
  has("cortex_http_requests_total{method=\"POST\",route=\"/execute/tool\",code=\"200\"}", 1);
  has("cortex_http_requests_total{method=\"GET\",route=\"unmatched\",code=\"404\"}", 1);
  has("cortex_http_requests_total{method=\"GET\",route=\"/registry/manifests\",code=\"421\"}", 1);
  has("cortex_http_request_duration_seconds_count{method=\"POST\",route=\"/execute/tool\"}", 1);
  has("cortex_tool_calls_total{tool=\"calculator\",status=\"succeeded\"}", 1);
  has("cortex_tool_calls_total{tool=\"shell_echo\",status=\"succeeded\"}", 2);
  has("cortex_workflow_steps_total{workflow=\"twice\",type=\"tool\",status=\"succeeded\"}", 2);
  has("cortex_agent_runs_total{agent=\"asker\",status=\"succeeded\"}", 1);
  has("cortex_agent_turns_total{agent=\"asker\"}", 1);
  has("cortex_llm_calls_total{provider=\"scripted\",outcome=\"ok\"}", 1);
  has("cortex_llm_tokens_total{provider=\"scripted\",direction=\"input\"}", 13);
  has("cortex_llm_tokens_total{provider=\"scripted\",direction=\"output\"}", 5);
  has("cortex_tool_queue_depth{state=\"queued\"}", 0);
  has("cortex_workflow_queue_depth{state=\"active_runs\"}", 0);
  has("cortex_agent_live_runs", 0);
  EXPECT_THAT(scraped.header("Content-Type"), HasSubstr("text/plain; version=0.0.4"));

  CliResult check = RunCli({promtool, "check", "metrics"}, text);
  EXPECT_EQ(check.exit_code, 0) << check;

  // Every metric the Grafana dashboard queries is one the server exports.
  json dashboard =
      json::parse(ReadFile(fs::path(CORTEX_SOURCE_DIR) / "deploy/grafana/cortex-dashboard.json"));
  const std::regex metric("cortex_[a-z_]+");
  int queried = 0;
  for (const auto& panel : dashboard["panels"]) {
    for (const auto& target : panel["targets"]) {
      std::string expr = target.value("expr", "");
      for (std::sregex_iterator it(expr.begin(), expr.end(), metric), end; it != end; ++it) {
        std::string name = it->str();
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
          if (name.ends_with(suffix)) name.resize(name.size() - std::string(suffix).size());
        }
        EXPECT_THAT(text, HasSubstr("# TYPE " + name + " "))
            << panel.value("title", "") << ": " << expr;
        ++queried;
      }
    }
  }
  EXPECT_GT(queried, 10);
}

TEST(JsonLogs, EveryLineIsOneJsonObjectWhateverTheMessageHolds) {
  Daemon d({"--log-format", "json"}, [](const fs::path& m) {
    // A broken manifest with invalid UTF-8 in it: the registry logs a warning quoting it.
    WriteFile(m / "tools/bad/tool.yml", "kind: Tool\nname: bad\xff\\\"\nversion: [\n");
  });
  ASSERT_DAEMON(d);
  ASSERT_TRUE(WaitFor([&] { return d.log().find("\"level\":\"warn\"") != std::string::npos; }))
      << d.log();
  std::istringstream lines(d.log());
  int n = 0;
  for (std::string line; std::getline(lines, line);) {
    json j = json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << "not JSON: " << line;
    for (const char* key : {"ts", "level", "component", "msg"}) {
      EXPECT_TRUE(j.contains(key) && j[key].is_string()) << key << " in " << line;
    }
    ++n;
  }
  EXPECT_GT(n, 0);
}

}  // namespace
}  // namespace cortex::testing
