// Agent runs end to end, beyond one agent and its tools: a run that the server's kill -9 (or
// SIGTERM) interrupts resumes from its journal at the next start; sub-agents, workflow actions
// and sub-prompts; internal actions under the agent's policy, and context feeds in the prompt.
// The real `cortex serve`, real sandboxed tools, and the scripted model server.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>

#include "cli/cli_process.h"
#include "free_port.h"
#include "integration/api_reply.h"
#include "integration/daemon.h"
#include "integration/scripted_llm.h"
#include "store/store.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

// Sleeps `seconds`, then answers {tag, key}: the idempotency key it was given.
void WriteSlowTool(const fs::path& m) {
  WriteFile(m / "tools/slow/tool.yml",
            "kind: Tool\nname: slow\nversion: \"1.0\"\ndescription: Sleeps, then answers.\n"
            "implementation:\n  runtime: bash\n  entrypoint: ./run.sh\n"
            "  resources: {timeout: 30s}\n"
            "parameters:\n  - {name: seconds, type: number, default: 0}\n"
            "  - {name: tag, type: string}\n");
  WriteFile(m / "tools/slow/run.sh",
            "secs=$(printf '%s' \"$1\" | sed -n 's/.*\"seconds\":\\([0-9.]*\\).*/\\1/p')\n"
            "tag=$(printf '%s' \"$1\" | sed -n 's/.*\"tag\":\"\\([^\"]*\\)\".*/\\1/p')\n"
            "sleep \"${secs:-0}\"\n"
            "echo \"{\\\"tag\\\": \\\"$tag\\\", \\\"key\\\": \\\"$CORTEX_IDEMPOTENCY_KEY\\\"}\"\n");
}

std::string Agent(const std::string& name, const std::string& imports,
                  const std::string& extra = "", const std::string& provider = "scripted",
                  const std::string& protocol = "streaming") {
  return "---\nkind: Agent\nname: " + name + "\ndescription: The " + name +
         " agent of the tests.\niteration_cap: 4\ncognitive_engine:\n"
         "  primary: {provider: " +
         provider + ", model: scripted-model}\n  protocol: " + protocol + "\nimport:\n" + imports +
         extra + "---\nYou are " + name + ".\n";
}

std::string Config(const ScriptedLlm& llm, const fs::path& dir, const std::string& extra = "") {
  fs::path cfg = dir / "cortex.yml";
  WriteFile(cfg,
            "variables:\n  allow_env: [\"CORTEX_TEST_AGENT_*\"]\n"
            "llm:\n  max_agent_depth: 1\n" +
                extra + "  providers:\n    - name: scripted\n      type: openai\n      base_url: " +
                llm.base_url() +
                "\n      breaker_failures: 100\n"
                "    - name: scripted_anthropic\n      type: anthropic\n      api_key_env: ''\n"
                "      base_url: http://127.0.0.1:" +
                std::to_string(llm.port()) + "\n");
  return cfg.string();
}

const char* const kEchoTwice = R"WF(kind: Workflow
name: echo_twice
description: Echoes its text twice.
trigger:
  type: manual
  parameters:
    text: {type: string}
steps:
  - name: first
    type: tool
    target: shell_echo
    parameters: {message: "$(trigger.text)"}
  - name: second
    type: tool
    target: shell_echo
    parameters: {message: "$(steps.first.message) $(trigger.text)"}
outputs:
  echoed: {source: steps.second.message}
)WF";

void WriteManifests(const fs::path& m) {
  fs::create_directories(m / "tools");
  for (const char* tool : {"calculator", "shell_echo"}) {
    fs::copy(fs::path(CORTEX_SOURCE_DIR) / "examples/manifests/tools" / tool, m / "tools" / tool,
             fs::copy_options::recursive);
  }
  WriteSlowTool(m);
  WriteFile(m / "agents/durable/agent.md", Agent("durable", "  tools: [slow]\n"));
  WriteFile(
      m / "agents/boss/agent.md",
      Agent("boss", "  agents: [helper]\n  workflows: [echo_twice]\n  tools: [calculator]\n"));
  WriteFile(m / "agents/helper/agent.md", Agent("helper", "  agents: [leaf]\n"));
  WriteFile(m / "agents/leaf/agent.md", Agent("leaf", "  tools: [calculator]\n"));
  WriteFile(m / "agents/feeder/agent.md",
            Agent("feeder", "  tools: [calculator]\n",
                  "internal_actions:\n  blocked_actions: [clear_context]\n"
                  "context_feeds:\n"
                  "  - {id: clock, type: on_demand, source: {type: internal, action: "
                  "system_clock}}\n"));
  WriteFile(m / "agents/native/agent.md",
            Agent("native", "  tools: [calculator]\n  agents: [leaf]\n", "", "scripted", "native"));
  WriteFile(m / "agents/native_claude/agent.md",
            Agent("native_claude", "  tools: [calculator]\n", "", "scripted_anthropic", "native"));
  WriteFile(m / "workflows/echo_twice.workflow.yml", kEchoTwice);
}

json RunRecord(Daemon& d, const std::string& id) {
  return Get(d.client(), "/agent-runs/" + id).json;
}

// The executions of the slow tool with this tag, oldest first.
std::vector<json> SlowRuns(Daemon& d, const std::string& tag) {
  Reply list = Get(d.client(), "/executions?tool=slow&limit=100");
  std::vector<json> out;
  if (!list.json.contains("executions")) return out;
  for (const json& e : list.json["executions"]) {
    if (e["parameters"].value("tag", "") == tag) out.insert(out.begin(), e);
  }
  return out;
}

class AgentRuns : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(llm_.ok()); }

  std::unique_ptr<Daemon> Start(const fs::path* data = nullptr) {
    return std::make_unique<Daemon>(
        std::vector<std::string>{"--config", Config(llm_, cfg_.path())}, [data](const fs::path& m) {
          WriteManifests(m);
          if (data) {
            fs::create_directory_symlink(*data, m.parent_path() / "data");
          }
        });
  }
  // Starts `durable` in the background and waits until the slow "long" action runs after the
  // "fast" one finished and the turn was recorded; the run id.
  std::string StartLongRun(Daemon& d) {
    llm_.Script({Says("<thought>Two things.</thought>"
                      "<action type=\"tool\" id=\"fast\">{\"name\": \"slow\", \"parameters\": "
                      "{\"seconds\": 0, \"tag\": \"fast\"}, \"output_key\": \"f\"}</action>"
                      "<action type=\"tool\" id=\"long\">{\"name\": \"slow\", \"parameters\": "
                      "{\"seconds\": 4, \"tag\": \"long\"}, \"output_key\": \"l\"}</action>"),
                 Says("<response final=\"true\">Done: $f.tag then $l.tag.</response>")});
    Reply started = Post(d.client(), "/execute/agent",
                         json{{"name", "durable"}, {"input", "Do both."}, {"async", true}}.dump());
    EXPECT_EQ(started.status, 202) << started.body;
    std::string id = started.json.value("run_id", "");
    EXPECT_TRUE(WaitFor(
        [&] {
          json r = RunRecord(d, id);
          auto longs = SlowRuns(d, "long");
          return r.value("turns", 0) == 1 && r["actions"].size() == 1 && !longs.empty() &&
                 longs.back().value("status", "") == "running";
        },
        std::chrono::seconds(20)))
        << Brief(RunRecord(d, id));
    return id;
  }
  // After the restart: the run finished from its journal.
  void ExpectResumed(Daemon& second, const std::string& id) {
    json done;
    ASSERT_TRUE(WaitFor(
        [&] {
          done = RunRecord(second, id);
          return done.value("status", "running") != "running";
        },
        std::chrono::seconds(30)))
        << Brief(done) << second.log();
    EXPECT_EQ(done.value("status", ""), "succeeded") << Brief(done) << second.log();
    EXPECT_EQ(done.value("response", ""), "Done: fast then long.") << Brief(done);
    EXPECT_TRUE(done.value("resumed", false)) << Brief(done);
    // The model's first turn was received before the stop: it was not requested again.
    auto requests = llm_.requests();
    ASSERT_EQ(requests.size(), 2u) << "turn 1 was requested again";
    std::string obs = requests[1]["messages"].back().value("content", "");
    EXPECT_THAT(obs, HasSubstr("id=\"fast\"")) << obs;
    EXPECT_THAT(obs, HasSubstr("id=\"long\"")) << obs;
    // The finished action did not run again; the one in flight ran again with the same key.
    auto fast = SlowRuns(second, "fast");
    auto longs = SlowRuns(second, "long");
    EXPECT_EQ(fast.size(), 1u);
    ASSERT_EQ(longs.size(), 2u);
    EXPECT_EQ(longs[0].value("idempotency_key", "a"), longs[1].value("idempotency_key", "b"));
    EXPECT_EQ(longs[1].value("status", ""), "succeeded");
    EXPECT_EQ(longs[1]["result"].value("key", ""), longs[0].value("idempotency_key", "-"))
        << "the tool saw CORTEX_IDEMPOTENCY_KEY";
    EXPECT_NE(longs[0].value("status", ""), "succeeded");
    // Its events, from the journal, across the restart: both turns, each action's outcome once
    // (the interrupted try of "long" left none), then the record.
    std::vector<std::string> kinds;
    std::map<std::string, int> outcomes;
    std::string last_id;
    Status st =
        second.client().Stream("/agent-runs/" + id + "/events", [&](const http::SseEvent& e) {
          kinds.push_back(e.event);
          if (e.event == "action_result") {
            outcomes[json::parse(e.data).value("id", "")]++;
          }
          if (!e.id.empty()) last_id = e.id;
          return e.event != "done";
        });
    ASSERT_TRUE(st.ok()) << st.message();
    EXPECT_EQ(std::count(kinds.begin(), kinds.end(), "turn"), 2);
    EXPECT_EQ(outcomes, (std::map<std::string, int>{{"fast", 1}, {"long", 1}}));
    ASSERT_FALSE(kinds.empty());
    EXPECT_EQ(kinds.back(), "done");
    // ?after= skips what was seen.
    kinds.clear();
    st = second.client().Stream("/agent-runs/" + id + "/events?after=" + last_id,
                                [&](const http::SseEvent& e) {
                                  kinds.push_back(e.event);
                                  return e.event != "done";
                                });
    EXPECT_EQ(kinds, std::vector<std::string>{"done"});
    // A resume point that is not a seq is refused, not read as 0 (or as its leading digits).
    for (const char* bad : {"notanumber", "5abc", "-1", "99999999999999999999"}) {
      Reply r = Get(second.client(), "/agent-runs/" + id + "/events?after=" + bad);
      EXPECT_EQ(r.status, 400) << bad << ": " << r.body;
      EXPECT_THAT(r.body, HasSubstr("'after'")) << bad;
    }
  }

  ScriptedLlm llm_;
  TempDir cfg_;
};

TEST_F(AgentRuns, AnInterruptedRunResumesAfterTheServerIsKilled) {
  auto first = Start();
  ASSERT_TRUE(first->ok()) << first->log();
  std::string id = StartLongRun(*first);
  ASSERT_EQ(::kill(first->pid(), SIGKILL), 0);
  first->Stop();
  fs::path data = first->data_dir();
  fs::remove(data / "serve.json");
  auto second = Start(&data);
  ASSERT_TRUE(second->ok()) << second->log();
  ExpectResumed(*second, id);
}

TEST_F(AgentRuns, AnInterruptedRunResumesAfterAGracefulStop) {
  auto first = Start();
  ASSERT_TRUE(first->ok()) << first->log();
  std::string id = StartLongRun(*first);
  EXPECT_EQ(first->Stop(), 0) << first->log();
  fs::path data = first->data_dir();
  auto second = Start(&data);
  ASSERT_TRUE(second->ok()) << second->log();
  ExpectResumed(*second, id);
}

TEST_F(AgentRuns, RunsThatCannotResumeEndWithARecordThatSaysWhy) {
  auto first = Start();  // its folders live as long as it does
  ASSERT_TRUE(first->ok()) << first->log();
  fs::path data = first->data_dir();
  EXPECT_EQ(first->Stop(), 0) << first->log();
  {
    // As a server that stopped mid-run might leave them: a run from before journals (no
    // conversation kept), its sub-agent, a workflow step's agent whose workflow has finished,
    // and a workflow step's agent whose workflow is still paused (it resumes with it).
    store::SqliteOptions o;
    o.path = (data / "cortex.db").string();
    auto opened = store::OpenSqliteStore(o);
    ASSERT_TRUE(opened.ok()) << opened.status().message();
    store::Store& st = **opened;
    auto put = [&](const std::string& id, const std::string& parent) {
      store::AgentRunRecord r;
      r.id = id;
      r.agent = "leaf";
      r.request_json = "";
      r.parent = parent;
      r.created_ms = 1;
      ASSERT_TRUE(st.PutAgentRun(r).ok());
    };
    for (const char* wf : {"wf_done", "wf_paused"}) {
      store::RunTransition t;
      t.run = store::RunRecord{};
      t.run->id = wf;
      t.run->workflow = "echo_twice";
      t.run->status = std::string(wf) == "wf_done" ? "succeeded" : "paused";
      t.run->manifest_path = "echo_twice.workflow.yml";
      t.run->manifest_text = kEchoTwice;
      ASSERT_TRUE(st.WriteRun(t).ok());
    }
    put("ar_old", "");
    put("ar_child", "agent:ar_old");
    put("ar_step", "workflow:wf_done/ask/1");
    put("ar_waiting", "workflow:wf_paused/ask/1");
  }
  auto second = Start(&data);
  ASSERT_TRUE(second->ok()) << second->log();
  for (const auto& [id, why] :
       std::vector<std::pair<std::string, std::string>>{{"ar_old", "no journal"},
                                                        {"ar_child", "agent:ar_old"},
                                                        {"ar_step", "workflow:wf_done"}}) {
    json r = RunRecord(*second, id);
    EXPECT_EQ(r.value("status", ""), "interrupted") << id << ": " << r;
    EXPECT_THAT(r.value("error", ""), HasSubstr(why)) << id << ": " << r;
    EXPECT_EQ(r.value("agent", ""), "leaf") << r;
  }
  EXPECT_EQ(RunRecord(*second, "ar_waiting").value("status", ""), "running")
      << RunRecord(*second, "ar_waiting") << Get(second->client(), "/workflows/wf_paused").body;
}

TEST_F(AgentRuns, AnAgentCanNameItsOwnEndpointAndKey) {
  ::setenv("CORTEX_TEST_AGENT_KEY", "sk-agent", 1);
  ScriptedLlm own;
  ASSERT_TRUE(own.ok());
  auto d = Start();
  ASSERT_TRUE(d->ok()) << d->log();
  // Posted through the API: its endpoint is its own server; the key, when it names one, must
  // be on variables.allow_env.
  auto post = [&](const std::string& name, const std::string& key_line) {
    std::string text = "---\nkind: Agent\nname: " + name +
                       "\ndescription: Has its own model server.\n"
                       "cognitive_engine:\n  primary:\n    provider: scripted\n"
                       "    model: own-model\n    endpoint: " +
                       own.base_url() + "\n" + key_line + "---\nYou are " + name + ".\n";
    return Post(d->client(), "/registry/manifests",
                json{{"content", text}, {"format", "markdown"}}.dump());
  };
  auto ask = [&](const std::string& name) {
    return Post(d->client(), "/execute/agent", json{{"name", name}, {"input", "hi"}}.dump());
  };
  ASSERT_EQ(post("keyless", "").status / 100, 2);
  ASSERT_EQ(post("keyed", "    api_key_env: CORTEX_TEST_AGENT_KEY\n").status / 100, 2);
  ASSERT_EQ(post("greedy", "    api_key_env: HOME\n").status / 100, 2);
  own.Script({Says("<response final=\"true\">mine</response>"),
              Says("<response final=\"true\">mine too</response>")});
  Reply keyless = ask("keyless");
  EXPECT_EQ(keyless.status, 200) << keyless.body;
  EXPECT_EQ(keyless.json.value("response", ""), "mine") << keyless.body;
  Reply keyed = ask("keyed");
  EXPECT_EQ(keyed.json.value("response", ""), "mine too") << keyed.body;
  EXPECT_EQ(own.credentials(), (std::vector<std::string>{"", "Bearer sk-agent"}));
  EXPECT_EQ(own.requests().at(0).value("model", ""), "own-model");
  EXPECT_TRUE(llm_.requests().empty()) << "the server's provider was not called";
  // HOME is not on the allow-list: refused before any call, saying why.
  Reply greedy = ask("greedy");
  EXPECT_EQ(greedy.status / 100, 4) << greedy.body;
  EXPECT_THAT(greedy.body, HasSubstr("variables.allow_env")) << greedy.body;
  EXPECT_EQ(own.requests().size(), 2u);
  // The derived provider is listed with its figures.
  Reply providers = Get(d->client(), "/llm/providers");
  EXPECT_THAT(providers.body, HasSubstr("\"derived_from\":\"scripted\"")) << providers.body;
}

TEST_F(AgentRuns, SubAgentsWorkflowsAndSubPrompts) {
  auto d = Start();
  ASSERT_TRUE(d->ok()) << d->log();
  // One request at a time, in this order: boss, helper (whose own sub-agent is refused: too
  // deep), helper again, the sub-prompt, boss.
  llm_.Script({
      Says("<action type=\"agent\" id=\"ask\">{\"name\": \"helper\", \"parameters\": "
           "{\"message\": \"What is 2 + 3?\"}, \"output_key\": \"sub\"}</action>"
           "<action type=\"workflow\" id=\"wf\">{\"name\": \"echo_twice\", \"parameters\": "
           "{\"text\": \"hey\"}}</action>"
           "<action type=\"llm\" id=\"poem\">{\"name\": \"summarize\", \"parameters\": "
           "{\"prompt\": \"Say hi\"}, \"depends_on\": [\"ask\"]}</action>"),
      Says("<action type=\"agent\" id=\"deeper\">{\"name\": \"leaf\", \"parameters\": "
           "{\"message\": \"and you?\"}}</action>"),
      Says("<response final=\"true\">5</response>"),
      Says("hi there"),
      Says("<response final=\"true\">Helper: $sub.response; workflow: $wf.echoed; llm: "
           "$poem.text</response>"),
  });
  Reply r = Post(d->client(), "/execute/agent", json{{"name", "boss"}, {"input", "Go."}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("status", ""), "succeeded") << Brief(r.json);
  EXPECT_EQ(r.json.value("response", ""), "Helper: 5; workflow: hey hey; llm: hi there")
      << Brief(r.json);
  json sub;
  for (const json& a : r.json["actions"]) {
    if (a.value("id", "") == "ask") sub = a;
  }
  ASSERT_TRUE(sub.is_object()) << Brief(r.json);
  std::string sub_run = sub["result"].value("run_id", "");
  ASSERT_FALSE(sub_run.empty()) << Brief(sub);
  EXPECT_FALSE(sub["result"].value("session_id", "").empty()) << "a sub-agent has its own session";
  // The sub-agent's run is a run of its own, whose parent is the boss's run; its own sub-agent
  // was refused with the depth limit, and the helper saw why.
  json helper = Get(d->client(), "/agent-runs/" + sub_run).json;
  EXPECT_EQ(helper.value("agent", ""), "helper") << Brief(helper);
  ASSERT_EQ(helper["actions"].size(), 1u) << Brief(helper);
  EXPECT_EQ(helper["actions"][0].value("status", ""), "failed");
  EXPECT_THAT(helper["actions"][0].value("error", ""), HasSubstr("nest 1 deep"));
  auto requests = llm_.requests();
  ASSERT_EQ(requests.size(), 5u);
  EXPECT_EQ(requests[3]["messages"].back().value("content", ""), "Say hi")
      << "the sub-prompt is the prompt alone";
  // Usage per agent: the helper's one run, two model turns of 11 + 7 tokens; the boss's one run,
  // two turns and the sub-prompt.
  Reply usage = Get(d->client(), "/agents/usage");
  ASSERT_EQ(usage.status, 200) << usage.body;
  std::map<std::string, json> per_agent;
  for (const json& u : usage.json["agents"]) per_agent[u.value("agent", "")] = u;
  EXPECT_EQ(per_agent["helper"],
            (json{{"agent", "helper"}, {"runs", 1}, {"input_tokens", 22}, {"output_tokens", 14}}));
  EXPECT_EQ(per_agent["boss"].value("input_tokens", 0), 33) << usage.body;
  EXPECT_EQ(per_agent["boss"].value("output_tokens", 0), 21) << usage.body;
  // The CLI lists the sub-agent's run and session, and follows its run to the end.
  CliResult ls = RunCli({"--server", d->url(), "agent-runs", "ls", "--agent", "helper"});
  EXPECT_EQ(ls.exit_code, 0) << ls;
  EXPECT_THAT(ls.out, HasSubstr(sub_run)) << ls;
  CliResult follow = RunCli({"--server", d->url(), "agent-runs", "follow", sub_run});
  EXPECT_EQ(follow.exit_code, 0) << follow;
  EXPECT_THAT(follow.out, HasSubstr("action deeper: failed")) << follow;
  EXPECT_THAT(follow.out, HasSubstr("succeeded (final): 5")) << follow;
  CliResult sessions = RunCli({"--server", d->url(), "sessions", "helper"});
  EXPECT_EQ(sessions.exit_code, 0) << sessions;
  EXPECT_THAT(sessions.out, HasSubstr(sub["result"].value("session_id", "?"))) << sessions;
  // A workflow action's run is a workflow run like any other.
  std::string wf_run;
  for (const json& a : r.json["actions"]) {
    if (a.value("id", "") == "wf") wf_run = a.value("execution_id", "");
  }
  Reply run = Get(d->client(), "/workflows/" + wf_run);
  EXPECT_EQ(run.status, 200) << wf_run << " " << run.body;
  EXPECT_EQ(run.json.value("trigger", ""), "agent") << run.body;
}

TEST_F(AgentRuns, InternalActionsFollowThePolicyAndFeedsReachThePrompt) {
  auto d = Start();
  ASSERT_TRUE(d->ok()) << d->log();
  llm_.Script({
      Says("<action type=\"internal\" id=\"feed\">{\"name\": \"add_context_feed\", "
           "\"parameters\": {\"id\": \"sum\", \"type\": \"on_demand\", \"source\": {\"type\": "
           "\"tool\", \"name\": \"calculator\", \"params\": {\"operation\": \"add\", \"a\": 40, "
           "\"b\": 2}}}}</action>"
           "<action type=\"internal\" id=\"wipe\">{\"name\": \"clear_context\"}</action>"
           "<action type=\"internal\" id=\"set\">{\"name\": \"set_variable\", \"parameters\": "
           "{\"key\": \"colour\", \"value\": \"green\"}}</action>"
           "<action type=\"internal\" id=\"bad\">{\"name\": \"add_context_feed\", "
           "\"parameters\": {\"id\": \"broken\"}}</action>"),
      Says("<response final=\"true\">It is $colour.</response>"),
  });
  Reply r = Post(d->client(), "/execute/agent", json{{"name", "feeder"}, {"input", "Go."}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("response", ""), "It is green.") << Brief(r.json);
  std::map<std::string, json> actions;
  for (const json& a : r.json["actions"]) actions[a.value("id", "")] = a;
  EXPECT_EQ(actions["feed"].value("status", ""), "succeeded") << Brief(actions["feed"]);
  EXPECT_EQ(actions["wipe"].value("status", ""), "failed");
  EXPECT_THAT(actions["wipe"].value("error", ""), HasSubstr("blocked_actions"));
  EXPECT_EQ(actions["bad"].value("status", ""), "failed");
  EXPECT_THAT(actions["bad"].value("error", ""), HasSubstr("source"));
  auto requests = llm_.requests();
  ASSERT_EQ(requests.size(), 2u);
  std::string first = requests[0]["messages"][0].value("content", "");
  std::string second = requests[1]["messages"][0].value("content", "");
  EXPECT_THAT(first, HasSubstr("<context_feed id=\"clock\">{\"iso8601\""));
  EXPECT_THAT(first, Not(HasSubstr("<context_feed id=\"sum\">")));
  EXPECT_THAT(second, HasSubstr("<context_feed id=\"sum\">"));
  EXPECT_THAT(second, HasSubstr("\"result\":42"));
  // clear_context was refused: the conversation is all there.
  EXPECT_EQ(requests[1]["messages"].size(), 4u);
}

// A relic action: a declared operation of a deployed, healthy relic (a small in-memory key-value
// service run by the process driver), by "relic.operation" and by "operation" in the parameters.
TEST_F(AgentRuns, RelicActionsCallDeclaredOperations) {
  const int port = FreeLoopbackPort();
  ASSERT_GT(port, 0);
  auto d = std::make_unique<Daemon>(
      std::vector<std::string>{"--config", Config(llm_, cfg_.path())}, [port](const fs::path& m) {
        WriteManifests(m);
        WriteFile(m / "relics/mem/mem.py", R"PY(import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
store = {}
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def answer(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/health": return self.answer(200, {"ok": True})
        if self.path.startswith("/get/"):
            key = self.path[5:]
            if key in store: return self.answer(200, {"key": key, "value": store[key]})
            return self.answer(404, {"error": "no key " + key})
        self.answer(404, {"error": "no route"})
    def do_POST(self):
        data = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        store[data["key"]] = data["value"]
        self.answer(200, {"stored": data["key"]})
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
)PY");
        WriteFile(m / "relics/mem/relic.yml",
                  "kind: Relic\nname: mem\ndescription: An in-memory key-value service.\n"
                  "deployment:\n  type: process\n  command: [python3, ./mem.py, \"" +
                      std::to_string(port) +
                      "\"]\n  cwd: .\n"
                      "health_check: {type: http, endpoint: /health, interval: 1s, timeout: 1s}\n"
                      "interface:\n  type: rest_api\n  base_url: http://127.0.0.1:" +
                      std::to_string(port) +
                      "\n  endpoints:\n"
                      "    - {name: set, method: POST, path: /set, description: Stores a value}\n"
                      "    - {name: get, method: GET, path: \"/get/{key}\"}\n");
        WriteFile(m / "agents/keeper/agent.md", Agent("keeper", "  relics: [mem]\n"));
      });
  ASSERT_TRUE(d->ok()) << d->log();
  Reply deployed = Post(d->client(), "/deploy/relic",
                        json{{"name", "mem"}, {"wait", true}, {"timeout_seconds", 20}}.dump());
  ASSERT_EQ(deployed.status, 200) << deployed.body << d->log();
  llm_.Script({
      Says("<action type=\"relic\" id=\"put\">{\"name\": \"mem.set\", \"parameters\": "
           "{\"key\": \"answer\", \"value\": 42}}</action>"
           "<action type=\"relic\" id=\"read\">{\"name\": \"mem\", \"parameters\": "
           "{\"operation\": \"get\", \"key\": \"answer\"}, \"depends_on\": [\"put\"]}</action>"
           "<action type=\"relic\" id=\"nope\">{\"name\": \"elsewhere.get\"}</action>"),
      Says("<response final=\"true\">It is $read.value.</response>"),
  });
  Reply r = Post(d->client(), "/execute/agent", json{{"name", "keeper"}, {"input", "Go."}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json.value("response", ""), "It is 42.") << Brief(r.json);
  std::map<std::string, json> actions;
  for (const json& a : r.json["actions"]) actions[a.value("id", "")] = a;
  EXPECT_EQ(actions["put"].value("status", ""), "succeeded") << Brief(actions["put"]);
  EXPECT_EQ(actions["read"].value("status", ""), "succeeded") << Brief(actions["read"]);
  EXPECT_EQ(actions["nope"].value("status", ""), "failed");
  EXPECT_THAT(actions["nope"].value("error", ""), HasSubstr("not one of this agent's relics"));
  EXPECT_EQ(Post(d->client(), "/relics/mem/stop", "{}").status, 200);
}

// cognitive_engine.protocol: native: the catalogue goes as function definitions, the model's
// (parallel) function calls run as actions, and their results go back as tool messages.
TEST_F(AgentRuns, NativeFunctionCallingWithOpenAiAndAnthropicShapes) {
  auto d = Start();
  ASSERT_TRUE(d->ok()) << d->log();
  for (const std::string agent : {"native", "native_claude"}) {
    SCOPED_TRACE(agent);
    const size_t base = llm_.requests().size();
    llm_.Script({
        Calls({{{"id", "call_1"},
                {"name", "calculator"},
                {"arguments", R"({"operation": "add", "a": 2, "b": 3})"}},
               {{"id", "call_2"},
                {"name", "calculator"},
                {"arguments", R"({"operation": "multiply", "a": 4, "b": 5})"}},
               {{"id", "call_3"}, {"name", "no_such_function"}, {"arguments", "{}"}},
               {{"id", "call_4"}, {"name", "calculator"}, {"arguments", "[1, 2"}}},
              "Let me compute."),
        Says("5 and 20."),
    });
    Reply r = Post(d->client(), "/execute/agent", json{{"name", agent}, {"input", "Go."}}.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json.value("status", ""), "succeeded") << Brief(r.json);
    EXPECT_EQ(r.json.value("response", ""), "5 and 20.");
    ASSERT_EQ(r.json["actions"].size(), 4u) << Brief(r.json);
    EXPECT_EQ(r.json["actions"][0]["result"].value("result", 0), 5) << Brief(r.json["actions"]);
    EXPECT_EQ(r.json["actions"][1]["result"].value("result", 0), 20);
    EXPECT_EQ(r.json["actions"][2].value("status", ""), "failed");
    EXPECT_THAT(r.json["actions"][2].value("error", ""), HasSubstr("no function named"));
    EXPECT_EQ(r.json["actions"][3].value("status", ""), "failed");
    EXPECT_THAT(r.json["actions"][3].value("error", ""), HasSubstr("not a JSON object"));
    auto requests = llm_.requests();
    requests.erase(requests.begin(), requests.begin() + static_cast<std::ptrdiff_t>(base));
    ASSERT_EQ(requests.size(), 2u);
    // The first request offers the functions: the tool with its schema, and internal ones.
    std::string tools = requests[0]["tools"].dump();
    EXPECT_THAT(tools, HasSubstr("\"calculator\""));
    EXPECT_THAT(tools, HasSubstr("\"operation\""));
    EXPECT_THAT(tools, HasSubstr("internal__set_variable"));
    // The second carries the calls and one result per call, by the model's ids.
    std::string second = requests[1]["messages"].dump();
    if (agent == "native") {
      EXPECT_THAT(second, HasSubstr(R"("tool_calls":[{"function")"));
      EXPECT_THAT(second, HasSubstr(R"("role":"tool")"));
      EXPECT_THAT(second, HasSubstr(R"("tool_call_id":"call_2")"));
    } else {
      EXPECT_THAT(second, HasSubstr(R"("type":"tool_use")"));
      EXPECT_THAT(second, HasSubstr(R"("tool_use_id":"call_2")"));
    }
    EXPECT_THAT(second, HasSubstr("succeeded: {"));
    EXPECT_THAT(second, HasSubstr("failed: error: no function named"));
  }
}

}  // namespace
}  // namespace cortex::testing
