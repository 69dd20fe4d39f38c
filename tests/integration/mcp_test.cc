// MCP end to end: the official TypeScript SDK's client (npm @modelcontextprotocol/sdk) against a
// real `cortex serve`, over Streamable HTTP at /mcp and over stdio through `cortex mcp`; then the
// transport's rules and bad input with raw HTTP, and roles with authentication on.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <thread>

#include "cli/cli_process.h"
#include "integration/api_reply.h"
#include "integration/daemon.h"
#include "integration/keys.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

void WriteMcpManifests(const fs::path& m) {
  WriteFile(m / "tools/adder/tool.yml", R"y(kind: Tool
name: adder
description: Adds two integers.
implementation: {runtime: bash, entrypoint: ./add.sh}
parameters:
  - {name: a, type: integer, required: true, description: The first}
  - {name: b, type: integer, required: true}
)y");
  WriteFile(m / "tools/adder/add.sh", R"y(#!/usr/bin/env bash
params="${1:-$(cat)}"
python3 -c 'import json,sys; p=json.loads(sys.argv[1]); print(json.dumps({"sum": p["a"]+p["b"]}))' "$params"
)y");
  fs::permissions(m / "tools/adder/add.sh", fs::perms(0755));
  WriteFile(m / "tools/slow/tool.yml", R"y(kind: Tool
name: slow
description: Reports three steps, then answers.
implementation: {runtime: bash, entrypoint: ./slow.sh}
)y");
  WriteFile(m / "tools/slow/slow.sh", R"y(#!/usr/bin/env bash
for i in 1 2 3; do echo "step $i" >&2; sleep 0.2; done
echo '{"done": true}'
)y");
  fs::permissions(m / "tools/slow/slow.sh", fs::perms(0755));
  WriteFile(m / "tools/sleeper/tool.yml", R"y(kind: Tool
name: sleeper
description: Says it started, then sleeps for half a minute.
implementation: {runtime: bash, entrypoint: ./sleep.sh}
)y");
  WriteFile(m / "tools/sleeper/sleep.sh", "#!/usr/bin/env bash\necho started >&2\nsleep 30\n");
  fs::permissions(m / "tools/sleeper/sleep.sh", fs::perms(0755));
  WriteFile(m / "workflows/sum_twice.workflow.yml", R"y(kind: Workflow
name: sum_twice
description: Adds x to itself, then adds 1.
trigger:
  type: manual
  parameters:
    - {name: x, type: integer, required: true}
steps:
  - {name: first, type: tool, target: adder, parameters: {a: "$(trigger.x)", b: "$(trigger.x)"}}
  - {name: second, type: tool, target: adder, parameters: {a: "$(steps.first.sum)", b: 1}}
outputs:
  total: {source: "steps.second.sum"}
)y");
  WriteFile(m / "agents/helper/agent.md", R"y(---
kind: Agent
name: helper
description: Helps.
cognitive_engine:
  primary: {provider: openai_compatible, model: local-model}
---
You are a helpful test persona.
)y");
}

json RunNodeClient(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/bin/env", "node",
                                   std::string(CORTEX_SOURCE_DIR) + "/tests/node/mcp_client.mjs"};
  argv.insert(argv.end(), args.begin(), args.end());
  CliResult r = RunCli(argv);
  EXPECT_EQ(r.exit_code, 0) << r;
  json j = json::parse(r.out, nullptr, false);
  EXPECT_TRUE(j.is_object()) << r;
  return j.is_object() ? j : json::object();
}

// What both transports must show.
void ExpectTheSession(json j) {  // a copy: a missing key reads as null, not an assert
  EXPECT_EQ(j["server"]["name"], "cortex") << j;
  EXPECT_TRUE(j["capabilities"]["tools"]["listChanged"].get<bool>()) << j;
  EXPECT_EQ(j["tools"], json({"adder", "agent_helper", "sleeper", "slow", "workflow_sum_twice"}))
      << j;
  EXPECT_EQ(j["adderSchema"]["type"], "object") << j;
  EXPECT_EQ(j["adderSchema"]["properties"]["a"]["type"], "integer") << j;
  EXPECT_EQ(j["adderSchema"]["required"], json({"a", "b"})) << j;

  EXPECT_FALSE(j["add"]["isError"].get<bool>()) << j;
  EXPECT_EQ(j["add"]["content"][0]["text"], "{\"sum\":5}") << j;
  EXPECT_EQ(j["add"]["structuredContent"]["sum"], 5) << j;

  // Bad arguments: an error result the model can read, naming the field.
  EXPECT_TRUE(j["badArgs"]["isError"].get<bool>()) << j;
  EXPECT_EQ(j["badArgs"]["content"][0]["text"],
            "invalid arguments for adder:\n- a: expected an integer, got string \"two\"\n"
            "- b: missing required parameter")
      << j;
  // An unknown tool: a protocol error, with a hint.
  EXPECT_EQ(j["unknown"]["code"], -32602) << j;
  EXPECT_THAT(j["unknown"]["message"].get<std::string>(), HasSubstr("unknown tool: no_such_tool"));

  // The long call: one progress notification per output line (stderr's marked), then the result.
  EXPECT_FALSE(j["slow"]["isError"].get<bool>()) << j;
  EXPECT_EQ(j["slow"]["structuredContent"]["done"], true) << j;
  ASSERT_EQ(j["progress"].size(), 4u) << j;
  EXPECT_EQ(j["progress"][0]["progress"], 1) << j;
  EXPECT_EQ(j["progress"][2]["message"], "stderr: step 3") << j;
  EXPECT_EQ(j["progress"][3]["message"], "{\"done\": true}") << j;

  EXPECT_EQ(j["workflow"]["structuredContent"]["total"], 9) << j;

  EXPECT_THAT(j["resources"].dump(), HasSubstr("cortex://manifest/Tool/adder")) << j;
  EXPECT_EQ(j["resource"]["mimeType"], "application/yaml") << j;
  EXPECT_THAT(j["resource"]["text"].get<std::string>(), HasSubstr("name: adder")) << j;
  EXPECT_EQ(j["prompts"], json({"helper"})) << j;
  EXPECT_THAT(j["prompt"]["messages"][0]["content"]["text"].get<std::string>(),
              HasSubstr("You are a helpful test persona."))
      << j;
  EXPECT_EQ(j["prompt"]["messages"][1]["content"]["text"], "Hello there") << j;

  // A manifest added on disk: the client was told, and lists it.
  EXPECT_GE(j["listChanged"].get<int>(), 1) << j;
  EXPECT_THAT(j["toolsAfter"].dump(), HasSubstr("\"late\"")) << j;
}

TEST(Mcp, TheSdkClientOverStreamableHttp) {
  Daemon d({}, WriteMcpManifests);
  ASSERT_DAEMON(d);
  json j = RunNodeClient({"http", d.url(), d.manifests_dir().string()});
  ExpectTheSession(j);
  // Tool calls are executions like any other: in the history.
  http::Client c(d.url());
  Reply list = Get(c, "/executions?tool=adder");
  EXPECT_EQ(list.status, 200) << list.body;
  EXPECT_GE(list.json["executions"].size(), 2u) << list.body;
}

TEST(Mcp, TheSdkClientOverStdioThroughCortexMcp) {
  Daemon d({}, WriteMcpManifests);
  ASSERT_DAEMON(d);
  json j = RunNodeClient({"stdio", CortexBinary(), d.url(), d.manifests_dir().string()});
  ExpectTheSession(j);
}

// The transport's rules, as a client that gets them wrong meets them.
TEST(Mcp, TransportRulesAndBadInput) {
  Daemon d({}, WriteMcpManifests);
  ASSERT_DAEMON(d);
  http::Client c(d.url());
  const http::Headers accept = {{"Accept", "application/json, text/event-stream"}};
  auto post = [&](const std::string& body, http::Headers h = {}) {
    h.insert(accept.begin(), accept.end());
    return ToReply(c.Post("/mcp", body, "application/json", h));
  };

  Reply garbage = post("{not json");
  EXPECT_EQ(garbage.status, 400);
  EXPECT_EQ(garbage.json["error"]["code"], -32700) << garbage.body;
  Reply no_session = post(R"({"jsonrpc":"2.0","id":1,"method":"tools/list"})");
  EXPECT_EQ(no_session.status, 400);
  EXPECT_THAT(no_session.body, HasSubstr("Mcp-Session-Id")) << no_session.body;
  Reply stranger =
      post(R"({"jsonrpc":"2.0","id":1,"method":"tools/list"})", {{"Mcp-Session-Id", "mcp_0123"}});
  EXPECT_EQ(stranger.status, 404) << stranger.body;
  Reply evil = post(R"({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}})",
                    {{"Origin", "http://evil.example"}});
  EXPECT_EQ(evil.status, 403) << evil.body;

  // A session: an old client's version is kept; an unknown one gets the newest.
  Reply init = post(R"({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
      "protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}})");
  ASSERT_EQ(init.status, 200) << init.body;
  EXPECT_EQ(init.json["result"]["protocolVersion"], "2024-11-05") << init.body;
  const std::string sid = init.header("Mcp-Session-Id");
  ASSERT_EQ(sid.rfind("mcp_", 0), 0u) << init.body;
  Reply newest = post(R"({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
      "protocolVersion":"1999-01-01"}})");
  EXPECT_EQ(newest.json["result"]["protocolVersion"], "2025-06-18") << newest.body;

  http::Headers s = {{"Mcp-Session-Id", sid}};
  EXPECT_EQ(post(R"({"jsonrpc":"2.0","method":"notifications/initialized"})", s).status, 202);
  Reply unknown = post(R"({"jsonrpc":"2.0","id":"x","method":"sampling/whatever"})", s);
  EXPECT_EQ(unknown.json["error"]["code"], -32601) << unknown.body;
  EXPECT_EQ(unknown.json["id"], "x") << unknown.body;
  Reply bad_params =
      post(R"({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":3}})", s);
  EXPECT_EQ(bad_params.json["error"]["code"], -32602) << bad_params.body;
  Reply not_rpc = post(R"({"id":3,"method":"ping"})", s);
  EXPECT_EQ(not_rpc.status, 400) << not_rpc.body;
  EXPECT_EQ(not_rpc.json["error"]["code"], -32600) << not_rpc.body;
  Reply bad_version = post(R"({"jsonrpc":"2.0","id":4,"method":"ping"})",
                           {{"Mcp-Session-Id", sid}, {"MCP-Protocol-Version", "2030-01-01"}});
  EXPECT_EQ(bad_version.status, 400) << bad_version.body;
  // A batch (2025-03-26): answers in order, the notification in it unanswered.
  Reply batch = post(R"([{"jsonrpc":"2.0","id":5,"method":"ping"},
      {"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":99}},
      {"jsonrpc":"2.0","id":6,"method":"resources/read","params":{"uri":"cortex://manifest/Tool/nobody"}}])",
                     s);
  ASSERT_TRUE(batch.json.is_array()) << batch.body;
  ASSERT_EQ(batch.json.size(), 2u) << batch.body;
  EXPECT_EQ(batch.json[0]["id"], 5);
  EXPECT_EQ(batch.json[1]["error"]["code"], -32002) << batch.body;
  // Deep and invalid input is refused, not crashed on.
  EXPECT_EQ(post(std::string(100000, '[') + std::string(100000, ']'), s).status, 400);
  EXPECT_EQ(post("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"p\xff\"}", s).status, 400);

  // GET needs an event stream; DELETE ends the session.
  Reply get = ToReply(c.Get("/mcp", {{"Mcp-Session-Id", sid}, {"Accept", "application/json"}}));
  EXPECT_EQ(get.status, 405) << get.body;
  Reply del = ToReply(c.Send("DELETE", "/mcp", "", "", s, nullptr));
  EXPECT_EQ(del.status, 200) << del.body;
  EXPECT_EQ(post(R"({"jsonrpc":"2.0","id":8,"method":"ping"})", s).status, 404);
}

// notifications/cancelled stops a call in progress: the tool's process is killed (it would sleep
// 30 s), the call answers an error result at once, and the execution is recorded as cancelled.
TEST(Mcp, ACancelledCallStopsTheToolAndAnswersAtOnce) {
  Daemon d({}, WriteMcpManifests);
  ASSERT_DAEMON(d);
  http::Client c(d.url());
  http::Headers h = {{"Accept", "application/json, text/event-stream"}};
  Reply init = ToReply(c.Post(
      "/mcp",
      R"({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}})",
      "application/json", h));
  ASSERT_EQ(init.status, 200) << init.body;
  h.emplace("Mcp-Session-Id", init.header("Mcp-Session-Id"));

  std::atomic<bool> started{false};
  std::vector<json> events;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread caller([&] {
    http::ClientOptions o;
    o.read_timeout = std::chrono::seconds(60);
    http::Client own(d.url(), o);
    auto r = own.Send("POST", "/mcp",
                      R"({"jsonrpc":"2.0","id":"long","method":"tools/call","params":{
                          "name":"sleeper","arguments":{},"_meta":{"progressToken":"p"}}})",
                      "application/json", h, [&](const http::SseEvent& e) {
                        events.push_back(json::parse(e.data, nullptr, false));
                        started = true;
                        return true;
                      });
    EXPECT_TRUE(r.ok()) << r.status().ToString();
  });
  ASSERT_TRUE(WaitFor([&] { return started.load(); }, std::chrono::seconds(20)));
  Reply cancel = ToReply(c.Post(
      "/mcp",
      R"({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"long"}})",
      "application/json", h));
  EXPECT_EQ(cancel.status, 202) << cancel.body;
  caller.join();
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, std::chrono::seconds(20)) << "the call ran on after its cancellation";
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.front()["method"], "notifications/progress");
  EXPECT_EQ(events.front()["params"]["message"], "stderr: started");
  const json& answer = events.back();
  EXPECT_EQ(answer["id"], "long") << answer;
  EXPECT_TRUE(answer["result"]["isError"].get<bool>()) << answer;
  EXPECT_THAT(answer.dump(), HasSubstr("tool sleeper cancelled")) << answer;
  Reply list = Get(c, "/executions?tool=sleeper");
  ASSERT_EQ(list.json["executions"].size(), 1u) << list.body;
  EXPECT_EQ(list.json["executions"][0]["status"], "cancelled") << list.body;

  // Without a progress token the call runs on the request's own thread (as POST /execute/tool
  // does): a cancellation still reaches it.
  const auto t1 = std::chrono::steady_clock::now();
  json plain_answer;
  std::thread plain([&] {
    http::ClientOptions o;
    o.read_timeout = std::chrono::seconds(60);
    http::Client own(d.url(), o);
    auto r = own.Post("/mcp",
                      R"({"jsonrpc":"2.0","id":"plain","method":"tools/call","params":{
                          "name":"sleeper","arguments":{}}})",
                      "application/json", h);
    if (r.ok()) plain_answer = json::parse(r->body, nullptr, false);
  });
  ASSERT_TRUE(WaitFor(
      [&] {
        Reply l = Get(c, "/executions?tool=sleeper");
        return l.json["executions"].size() == 2u && l.json["executions"][0]["status"] == "running";
      },
      std::chrono::seconds(20)));
  EXPECT_EQ(ToReply(c.Post("/mcp",
                           R"({"jsonrpc":"2.0","method":"notifications/cancelled",
                               "params":{"requestId":"plain"}})",
                           "application/json", h))
                .status,
            202);
  plain.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t1, std::chrono::seconds(20));
  EXPECT_TRUE(plain_answer["result"]["isError"].get<bool>()) << plain_answer;
  EXPECT_THAT(plain_answer.dump(), HasSubstr("tool sleeper cancelled")) << plain_answer;
}

// An agent as an MCP tool: the README's example assistant (its model a recording played back)
// answers through tools/call, its actions reported as progress.
TEST(Mcp, AnAgentAnswersAsATool) {
  const fs::path examples = fs::path(CORTEX_SOURCE_DIR) / "examples";
  Daemon d({"--config", (examples / "cortex.yml").string()}, [&](const fs::path& m) {
    fs::copy(examples / "manifests", m, fs::copy_options::recursive);
  });
  ASSERT_DAEMON(d);
  http::Client c(d.url());
  http::Headers h = {{"Accept", "application/json, text/event-stream"}};
  Reply init = ToReply(c.Post(
      "/mcp",
      R"({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}})",
      "application/json", h));
  ASSERT_EQ(init.status, 200) << init.body;
  h.emplace("Mcp-Session-Id", init.header("Mcp-Session-Id"));
  std::vector<json> events;
  auto r = c.Send("POST", "/mcp",
                  R"({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{
                      "name":"agent_assistant","arguments":{"message":"What is 17 + 25?"},
                      "_meta":{"progressToken":7}}})",
                  "application/json", h, [&](const http::SseEvent& e) {
                    events.push_back(json::parse(e.data, nullptr, false));
                    return true;
                  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_GE(events.size(), 2u) << r->body;
  std::string progress;
  for (size_t i = 0; i + 1 < events.size(); ++i) progress += events[i]["params"].dump() + "\n";
  EXPECT_THAT(progress, HasSubstr("action")) << progress;
  const json& answer = events.back()["result"];
  EXPECT_FALSE(answer["isError"].get<bool>()) << answer;
  EXPECT_EQ(answer["content"][0]["text"], "17 + 25 = 42") << answer;
  EXPECT_EQ(answer["structuredContent"]["run_id"].get<std::string>().rfind("ar_", 0), 0u) << answer;
}

// With authentication on, /mcp follows the key: a viewer lists and reads but a call is an error
// result; an operator calls; a scoped key sees and calls only its manifests.
TEST(Mcp, RolesAndScopesDecideWhatAKeySeesAndCalls) {
  TempDir config;
  WriteFile(config.path() / "cortex.yml", "auth:\n  mode: on\n");
  std::map<std::string, std::string> keys;
  Daemon d({"--config", (config.path() / "cortex.yml").string()}, [&](const fs::path& m) {
    WriteMcpManifests(m);
    fs::path data = m.parent_path() / "data";
    keys["viewer"] = CreateKey(data, "v", "viewer");
    keys["operator"] = CreateKey(data, "o", "operator");
    keys["slow-only"] = CreateKey(data, "s", "operator", nullptr, {"tool:slow"});
  });
  ASSERT_DAEMON(d);
  http::Client c(d.url());
  // One session per key; `call` sends a request on it and answers the JSON-RPC result.
  auto session = [&](const std::string& who) {
    http::Headers h = {{"Accept", "application/json, text/event-stream"},
                       {"Authorization", "Bearer " + keys[who]}};
    Reply init = ToReply(c.Post(
        "/mcp",
        R"({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18"}})",
        "application/json", h));
    EXPECT_EQ(init.status, 200) << who << ": " << init.body;
    h.emplace("Mcp-Session-Id", init.header("Mcp-Session-Id"));
    return h;
  };
  auto call = [&](const http::Headers& h, const std::string& method, const json& params) {
    json m = {{"jsonrpc", "2.0"}, {"id", 1}, {"method", method}, {"params", params}};
    Reply r = ToReply(c.Post("/mcp", m.dump(), "application/json", h));
    EXPECT_EQ(r.status, 200) << r.body;
    return r.json["result"];
  };
  auto names = [](const json& list) {
    std::vector<std::string> out;
    for (const auto& t : list["tools"]) out.push_back(t["name"]);
    return out;
  };
  const json add = {{"name", "adder"}, {"arguments", {{"a", 1}, {"b", 2}}}};

  // No key: 401, as on every route.
  EXPECT_EQ(ToReply(c.Post("/mcp", "{}", "application/json")).status, 401);

  http::Headers viewer = session("viewer");
  EXPECT_EQ(
      names(call(viewer, "tools/list", json::object())),
      (std::vector<std::string>{"adder", "sleeper", "slow", "workflow_sum_twice", "agent_helper"}));
  json refused = call(viewer, "tools/call", add);
  EXPECT_TRUE(refused["isError"].get<bool>()) << refused;
  EXPECT_THAT(refused.dump(), HasSubstr("needs the operator role; this caller is viewer"));

  json done = call(session("operator"), "tools/call", add);
  EXPECT_FALSE(done["isError"].get<bool>()) << done;
  EXPECT_EQ(done["structuredContent"]["sum"], 3) << done;

  http::Headers scoped = session("slow-only");
  EXPECT_EQ(names(call(scoped, "tools/list", json::object())), std::vector<std::string>{"slow"});
  json outside = call(scoped, "tools/call", add);
  EXPECT_TRUE(outside["isError"].get<bool>()) << outside;
  EXPECT_THAT(outside.dump(), HasSubstr("tool:slow")) << outside;
  json resources = call(scoped, "resources/list", json::object());
  ASSERT_EQ(resources["resources"].size(), 1u) << resources;
  EXPECT_EQ(resources["resources"][0]["uri"], "cortex://manifest/Tool/slow");
}

}  // namespace
}  // namespace cortex::testing
