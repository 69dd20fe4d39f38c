// Agents end to end: the real `cortex serve`, the real executor and sandbox running the example
// calculator tool, and a scripted OpenAI-compatible model server (tests/integration/scripted_llm.h)
// streaming the model's turns in pieces.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "integration/api_reply.h"
#include "integration/daemon.h"
#include "integration/scripted_llm.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

const char* kAgent = R"(---
kind: Agent
name: helper
description: Adds numbers with the calculator.
iteration_cap: 4
cognitive_engine:
  primary: {provider: vllm, model: scripted-model}
import:
  tools: [calculator]
---
You are a careful helper. Use the calculator for arithmetic.
)";

class AgentApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    llm_ = new ScriptedLlm();
    ASSERT_TRUE(llm_->ok());
    config_ = new TempDir();
    WriteFile(config_->path() / "cortex.yml",
              "llm:\n"
              "  providers:\n"
              "    - name: vllm\n"
              "      type: openai\n"
              "      base_url: " +
                  llm_->base_url() +
                  "\n"
                  "      max_retries: 2\n"
                  "      breaker_failures: 100\n"
                  "    - name: anthropic\n"
                  "      type: anthropic\n"
                  "      base_url: http://127.0.0.1:" +
                  std::to_string(llm_->port()) +
                  "\n"
                  "      api_key_env: ''\n");
    daemon_ =
        new Daemon({"--config", (config_->path() / "cortex.yml").string()}, [](const fs::path& m) {
          fs::create_directories(m / "tools");
          fs::copy(fs::path(CORTEX_SOURCE_DIR) / "examples/manifests/tools/calculator",
                   m / "tools/calculator", fs::copy_options::recursive);
          WriteFile(m / "agents/helper/agent.md", kAgent);
          std::string anthropic = kAgent;
          anthropic.replace(anthropic.find("name: helper"), 12, "name: claude");
          anthropic.replace(anthropic.find("provider: vllm"), 14, "provider: anthropic");
          WriteFile(m / "agents/claude/agent.md", anthropic);
          std::string lost = kAgent;
          lost.replace(lost.find("name: helper"), 12, "name: lost");
          lost.replace(lost.find("provider: vllm"), 14, "provider: nowhere");
          WriteFile(m / "agents/lost/agent.md", lost);
          WriteFile(m / "workflows/ask.workflow.yml", R"WF(kind: Workflow
name: ask
description: Asks the helper, then passes its answer on.
trigger:
  type: manual
  parameters:
    a: {type: number}
    b: {type: number}
steps:
  - name: ask
    type: agent
    target: helper
    parameters: {message: "What is $(trigger.a) + $(trigger.b)?"}
  - name: relay
    type: internal
    parameters: {said: "$(steps.ask.response)", by: "$(steps.ask.agent)"}
outputs:
  answer: {source: steps.relay.said}
  agent: {source: steps.relay.by}
)WF");
        });
    ASSERT_TRUE(daemon_->ok()) << daemon_->log();
  }
  static void TearDownTestSuite() {
    delete daemon_;
    delete config_;
    delete llm_;
  }
  void SetUp() override { llm_->Script({}); }

  static Reply RunAgent(const json& body, const http::Headers& headers = {}) {
    return Post(daemon_->client(), "/execute/agent", body.dump(), headers);
  }
  // The user message of the n-th model request (0-based), and its last message.
  static std::string LastMessage(size_t n) {
    auto reqs = llm_->requests();
    if (reqs.size() <= n) return "<no request " + std::to_string(n) + ">";
    return reqs[n]["messages"].back().value("content", "");
  }

  static ScriptedLlm* llm_;
  static TempDir* config_;
  static Daemon* daemon_;
};
ScriptedLlm* AgentApi::llm_ = nullptr;
TempDir* AgentApi::config_ = nullptr;
Daemon* AgentApi::daemon_ = nullptr;

// MK1-REFERENCE 4.9 transcript A, with a real tool: two independent actions inside the thought, a
// third that depends on the first, and a final response with $references, in one model turn.
TEST_F(AgentApi, OneTurnWithParallelActionsADependencyAndAFinalResponse) {
  size_t before = llm_->requests().size();
  llm_->Script({Says(R"(<thought>Two independent lookups.
<action type="tool" mode="async" id="sum1">{"name":"calculator","parameters":{"operation":"add","a":17,"b":25},"output_key":"sum"}</action>
<action type="internal" mode="async" id="clk">{"name":"system_clock","parameters":{"format":"ISO8601"},"output_key":"now"}</action>
</thought>
<action type="tool" id="twice" depends_on="sum1">{"name":"calculator","parameters":{"operation":"multiply","a":"$sum.result","b":2},"output_key":"double"}</action>
<response final="true">17 + 25 = $sum.result, twice that is $double.result (checked at $now.iso8601).</response>)")});
  Reply r = RunAgent({{"name", "helper"}, {"input", "Add 17 and 25, and tell me the UTC time."}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["status"], "succeeded") << Brief(r.json);
  EXPECT_EQ(r.json["reason"], "final");
  EXPECT_EQ(r.json["iterations"], 1);
  std::string response = r.json.value("response", "");
  EXPECT_THAT(response, HasSubstr("17 + 25 = 42, twice that is 84 (checked at 20")) << response;
  ASSERT_EQ(r.json["actions"].size(), 3u) << Brief(r.json);
  for (const auto& a : r.json["actions"]) EXPECT_EQ(a["status"], "succeeded") << a.dump();
  EXPECT_EQ(r.json["actions"][0]["result"]["result"], 42);
  EXPECT_TRUE(r.json["actions"][0].contains("execution_id"));
  EXPECT_EQ(llm_->requests().size(), before + 1) << "one model turn";
  EXPECT_EQ(r.json["usage"]["input_tokens"], 11);

  // The model was told what it can use, in its system prompt.
  auto system = llm_->requests()[before]["messages"][0]["content"].get<std::string>();
  EXPECT_THAT(system, HasSubstr("You are a careful helper."));
  EXPECT_THAT(system, HasSubstr("- calculator: Adds, subtracts"));
  EXPECT_THAT(system, HasSubstr(R"("enum":["add","subtract","multiply","divide"])"));
  EXPECT_EQ(llm_->requests()[before]["model"], "scripted-model");
  EXPECT_EQ(llm_->requests()[before]["stream"], true);

  // The tool call is an execution like any other, in the history.
  std::string exec_id = r.json["actions"][0]["execution_id"];
  Reply e = Get(daemon_->client(), "/executions/" + exec_id);
  EXPECT_EQ(e.status, 200) << e.body;
  EXPECT_EQ(e.json["status"], "succeeded");
}

// Transcript B: a progress response, an observation, then the final answer in a second turn.
TEST_F(AgentApi, ObservationsGoBackToTheModelAndTheLoopContinues) {
  size_t before = llm_->requests().size();
  llm_->Script(
      {Says(
           R"(<thought>Need the sum first.</thought><action id="p1">{"name":"calculator","parameters":{"operation":"add","a":2,"b":3},"output_key":"s"}</action><response final="false">Adding…</response>)"),
       Says(
           R"(<thought>I have it.</thought><response final="true">The sum is $s.result.</response>)")});
  Reply r = RunAgent({{"name", "helper"}, {"input", {{"message", "What is 2 + 3?"}}}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["status"], "succeeded") << Brief(r.json);
  EXPECT_EQ(r.json["iterations"], 2);
  EXPECT_EQ(r.json["response"], "The sum is 5.")
      << "the final turn's answer; the progress note was an event";
  ASSERT_EQ(llm_->requests().size(), before + 2);
  std::string observation = LastMessage(before + 1);
  EXPECT_THAT(observation,
              HasSubstr(R"(<observation id="p1" name="calculator" status="succeeded">)"));
  EXPECT_THAT(observation, HasSubstr(R"("result":5)"));
  auto second = llm_->requests()[before + 1]["messages"];
  EXPECT_EQ(second[1]["content"], "What is 2 + 3?");
  EXPECT_EQ(second[2]["role"], "assistant");
}

// An invalid action is not dropped: the model hears why in its next observation, and a failed
// action's dependents are skipped.
TEST_F(AgentApi, InvalidActionsAreReportedToTheModel) {
  size_t before = llm_->requests().size();
  llm_->Script({Says(R"(<action id="bad">{"name": "calculator", "parameters": {"a": 1,}}</action>
<action id="ghost">{"name":"teleporter"}</action>
<action id="div">{"name":"calculator","parameters":{"operation":"divide","a":1,"b":0}}</action>
<action id="after" depends_on="div">{"name":"calculator","parameters":{"operation":"add","a":1,"b":1}}</action>)"),
                Says(R"(<response>Sorry, I could not.</response>)")});
  Reply r = RunAgent({{"name", "helper"}, {"input", "Break things."}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["status"], "succeeded") << Brief(r.json);
  std::map<std::string, json> by_id;
  for (const auto& a : r.json["actions"]) by_id[a["id"]] = a;
  EXPECT_EQ(by_id["bad"]["status"], "failed");
  EXPECT_THAT(by_id["bad"].value("error", ""), HasSubstr("not valid JSON"));
  EXPECT_EQ(by_id["ghost"]["status"], "failed");
  EXPECT_THAT(by_id["ghost"].value("error", ""), HasSubstr("is not one of this agent's tools"));
  EXPECT_EQ(by_id["div"]["status"], "failed");
  EXPECT_EQ(by_id["after"]["status"], "skipped");
  std::string observation = LastMessage(before + 1);
  EXPECT_THAT(observation, HasSubstr(R"(<observation id="bad" name="" status="failed">)"));
  EXPECT_THAT(observation, HasSubstr("error: the action's body is not valid JSON"));
  EXPECT_THAT(observation, HasSubstr(R"(id="after" name="calculator" status="skipped")"));
}

TEST_F(AgentApi, EventsStreamAsTheModelSpeaks) {
  llm_->Script({Says(
      R"(<thought>Let me add.</thought><action id="a">{"name":"calculator","parameters":{"operation":"add","a":1,"b":1},"output_key":"x"}</action><response>It is $x.result.</response>)",
      3, std::chrono::milliseconds(2))});
  Reply r = RunAgent({{"name", "helper"}, {"input", "1+1?"}, {"stream", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.header("Content-Type"), HasSubstr("text/event-stream"));
  std::vector<std::string> types;
  std::string thought, response;
  for (const auto& e : ParseSse(r.body)) {
    types.push_back(e.event);
    auto data = json::parse(e.data, nullptr, false);
    if (e.event == "thought") thought += data.value("text", "");
    if (e.event == "response") response = data.value("text", "");
    if (e.event == "action") {
      EXPECT_EQ(data.value("name", ""), "calculator") << e.data;
      EXPECT_EQ(data["parameters"]["operation"], "add") << e.data;
      EXPECT_EQ(data.value("id", ""), "a") << e.data;
    }
  }
  EXPECT_EQ(thought, "Let me add.");
  EXPECT_EQ(response, "It is 2.");
  auto pos = [&](const std::string& t) {
    return std::find(types.begin(), types.end(), t) - types.begin();
  };
  ASSERT_LT(pos("done"), static_cast<long>(types.size())) << r.body;
  EXPECT_EQ(types.front(), "run");
  EXPECT_LT(pos("thought"), pos("action"));
  EXPECT_LT(pos("action"), pos("action_result"));
  EXPECT_LT(pos("action_result"), pos("response"));
  EXPECT_LT(pos("usage"), pos("done"));
  EXPECT_EQ(types.back(), "done");
}

// Plain prose without the protocol is the answer, not lost.
TEST_F(AgentApi, APlainAnswerIsKept) {
  llm_->Script({Says("Four, of course.")});
  Reply r = RunAgent({{"name", "helper"}, {"input", "2+2?"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["status"], "succeeded");
  EXPECT_EQ(r.json["response"], "Four, of course.");
}

TEST_F(AgentApi, TheIterationCapEndsARunThatNeverAnswers) {
  std::vector<ScriptedTurn> turns;
  for (int i = 0; i < 4; ++i)
    turns.push_back(Says(R"(<response final="false">Still thinking.</response>)"));
  llm_->Script(turns);
  Reply r = RunAgent({{"name", "helper"}, {"input", "Loop."}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["status"], "failed");
  EXPECT_EQ(r.json["reason"], "iteration_cap");
  EXPECT_EQ(r.json["iterations"], 4);
  EXPECT_THAT(r.json.value("error", ""), HasSubstr("iteration cap (4)"));
}

// 500 and 429 (with Retry-After) are retried; a refusal (400) is not, and says why.
TEST_F(AgentApi, ProviderFailuresAreRetriedOrReportedClearly) {
  size_t before = llm_->requests().size();
  llm_->Script({Fails(500), Fails(429, "0"), Says("<response>Recovered.</response>")});
  Reply r = RunAgent({{"name", "helper"}, {"input", "Hi"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["status"], "succeeded") << Brief(r.json);
  EXPECT_EQ(r.json["response"], "Recovered.");
  EXPECT_EQ(llm_->requests().size(), before + 3);

  llm_->Script({Fails(400)});
  r = RunAgent({{"name", "helper"}, {"input", "Hi"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["status"], "failed");
  EXPECT_EQ(r.json["reason"], "error");
  EXPECT_THAT(r.json.value("error", ""), HasSubstr("vllm answered HTTP 400: scripted failure 400"));

  ScriptedTurn malformed = Says("<response>x</response>", 4);
  malformed.malformed = true;
  llm_->Script({malformed, malformed, malformed});
  r = RunAgent({{"name", "helper"}, {"input", "Hi"}});
  EXPECT_EQ(r.json["status"], "failed");
  EXPECT_THAT(r.json.value("error", ""), HasSubstr("not JSON")) << Brief(r.json);
}

TEST_F(AgentApi, TheAnthropicMessagesApiToo) {
  size_t before = llm_->requests().size();
  llm_->Script({Says(
      R"(<action id="a">{"name":"calculator","parameters":{"operation":"subtract","a":10,"b":4},"output_key":"d"}</action><response>10 - 4 = $d.result</response>)")});
  Reply r = RunAgent({{"name", "claude"}, {"input", "10-4?"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["status"], "succeeded") << Brief(r.json);
  EXPECT_EQ(r.json["response"], "10 - 4 = 6");
  auto req = llm_->requests()[before];
  EXPECT_TRUE(req.contains("system")) << "the system prompt goes in Anthropic's own field";
  EXPECT_EQ(req["messages"][0]["role"], "user");
}

// An agent step in a workflow runs the agent; its record is the step's output.
TEST_F(AgentApi, AgentStepsRunInWorkflows) {
  size_t before = llm_->requests().size();
  llm_->Script({Says(
      R"(<action id="s">{"name":"calculator","parameters":{"operation":"add","a":20,"b":1},"output_key":"sum"}</action><response>It is $sum.result.</response>)")});
  Reply r = Post(daemon_->client(), "/execute/workflow?wait=true",
                 json{{"name", "ask"}, {"input", {{"a", 20}, {"b", 1}}}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["status"], "succeeded") << Brief(r.json);
  EXPECT_EQ(r.json["output"]["answer"], "It is 21.") << Brief(r.json);
  EXPECT_EQ(r.json["output"]["agent"], "helper") << Brief(r.json);
  ASSERT_EQ(llm_->requests().size(), before + 1);
  EXPECT_EQ(LastMessage(before), "What is 20 + 1?");

  // A run that does not answer fails the step, with its reason.
  std::vector<ScriptedTurn> turns;
  for (int i = 0; i < 4; ++i) turns.push_back(Says(R"(<response final="false">Hmm.</response>)"));
  llm_->Script(turns);
  r = Post(daemon_->client(), "/execute/workflow?wait=true",
           json{{"name", "ask"}, {"input", {{"a", 1}, {"b", 1}}}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["status"], "failed") << Brief(r.json);
  EXPECT_THAT(r.body, HasSubstr("iteration_cap"));
}

// A session continues a conversation: the next run sees the earlier turns and $variables, and
// sessions and runs are kept in the Store.
TEST_F(AgentApi, SessionsContinueAConversation) {
  size_t before = llm_->requests().size();
  llm_->Script(
      {Says(
           R"(<action id="s">{"name":"calculator","parameters":{"operation":"add","a":2,"b":2},"output_key":"sum"}</action><response>2 + 2 = $sum.result</response>)"),
       Says(R"(<response>Twice what I said before is... I said $sum.result.</response>)")});
  Reply first = RunAgent({{"name", "helper"}, {"input", "2+2?"}});
  ASSERT_EQ(first.status, 200) << first.body;
  std::string session = first.json.value("session_id", "");
  ASSERT_THAT(session, ::testing::StartsWith("as_")) << first.body;
  Reply second = RunAgent({{"name", "helper"}, {"input", "And again?"}, {"session_id", session}});
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(second.json["session_id"], session);
  EXPECT_EQ(second.json["response"], "Twice what I said before is... I said 4.") << second.body;
  auto msgs = llm_->requests()[before + 1]["messages"];
  ASSERT_EQ(msgs.size(), 4u) << msgs.dump();
  EXPECT_EQ(msgs[1]["content"], "2+2?");
  EXPECT_EQ(msgs[2]["role"], "assistant");
  EXPECT_EQ(msgs[2]["content"], "2 + 2 = 4");
  EXPECT_EQ(msgs[3]["content"], "And again?");

  Reply s = Get(daemon_->client(), "/agent-sessions/" + session);
  ASSERT_EQ(s.status, 200) << s.body;
  EXPECT_EQ(s.json["runs"], 2);
  EXPECT_EQ(s.json["messages"].size(), 4u);
  EXPECT_EQ(s.json["variables"]["sum"]["result"], 4);
  Reply list = Get(daemon_->client(), "/state/agent/helper/sessions");
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_THAT(list.body, HasSubstr(session));

  // Runs are recorded.
  Reply run = Get(daemon_->client(), "/agent-runs/" + second.json.value("run_id", ""));
  ASSERT_EQ(run.status, 200) << run.body;
  EXPECT_EQ(run.json["status"], "succeeded");
  EXPECT_EQ(run.json["session_id"], session);
  Reply runs = Get(daemon_->client(), "/agent-runs?session_id=" + session);
  ASSERT_EQ(runs.status, 200) << runs.body;
  EXPECT_EQ(runs.json["runs"].size(), 2u) << runs.body;

  // A session made ahead, with variables; another agent cannot use it.
  Reply made = Post(daemon_->client(), "/state/agent/helper/session",
                    json{{"variables", {{"name", "Ada"}}}}.dump());
  ASSERT_EQ(made.status, 201) << made.body;
  Reply wrong =
      RunAgent({{"name", "claude"}, {"input", "hi"}, {"session_id", made.json["session_id"]}});
  EXPECT_EQ(wrong.status, 409) << wrong.body;
  EXPECT_EQ(Post(daemon_->client(), "/state/agent/nobody/session", "{}").status, 404);
  Reply gone = ToReply(daemon_->client().Delete("/agent-sessions/" + session));
  EXPECT_EQ(gone.status, 200) << gone.body;
  EXPECT_EQ(Get(daemon_->client(), "/agent-sessions/" + session).status, 404);
}

// A provider the server does not know: a warning when the manifest loads, 409 when it runs.
TEST_F(AgentApi, AnUnknownProviderIsAWarningThenAClearError) {
  Reply v = Get(daemon_->client(), "/registry/validate-dependencies/Agent/lost");
  ASSERT_EQ(v.status, 200) << v.body;
  EXPECT_THAT(v.json["warnings"].dump(),
              HasSubstr("cognitive_engine.primary.provider: 'nowhere' is not a configured llm "
                        "provider"))
      << v.body;
  Reply r = RunAgent({{"name", "lost"}, {"input", "hi"}});
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_THAT(ErrorMessage(r), HasSubstr("llm provider 'nowhere' is not configured"));
}

TEST_F(AgentApi, BadRequestsGetClearErrors) {
  Reply r = RunAgent({{"input", "hi"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(ErrorMessage(r), HasSubstr("'name'"));
  r = RunAgent({{"name", "helper"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(ErrorMessage(r), HasSubstr("'input' is required"));
  r = RunAgent({{"name", "nobody"}, {"input", "hi"}});
  EXPECT_EQ(r.status, 404);
  r = RunAgent({{"name", "helper"}, {"input", "hi"}, {"session_id", "as_nope"}});
  EXPECT_EQ(r.status, 404);
  EXPECT_THAT(ErrorMessage(r), HasSubstr("no agent session 'as_nope'"));
  r = RunAgent({{"name", "helper"}, {"input", "hi"}, {"token_budget", -1}});
  EXPECT_EQ(r.status, 400);
  Reply bad = Post(daemon_->client(), "/execute/agent", "{\"name\": ");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(llm_->left(), 0u);
}

TEST_F(AgentApi, ProvidersAreListedWithTheirFigures) {
  Reply r = Get(daemon_->client(), "/llm/providers");
  ASSERT_EQ(r.status, 200) << r.body;
  json vllm;
  for (const auto& p : r.json["providers"]) {
    if (p["name"] == "vllm") vllm = p;
  }
  ASSERT_FALSE(vllm.is_null()) << r.body;
  EXPECT_EQ(vllm["available"], true);
  EXPECT_EQ(vllm["breaker"], "closed");
  EXPECT_EQ(vllm["type"], "openai");
  EXPECT_TRUE(vllm.contains("calls"));
  Reply reset = Post(daemon_->client(), "/llm/providers/vllm/reset", "{}");
  EXPECT_EQ(reset.status, 200) << reset.body;
  reset = Post(daemon_->client(), "/llm/providers/nope/reset", "{}");
  EXPECT_EQ(reset.status, 404);
}

}  // namespace
}  // namespace cortex::testing
