// Tracing end to end: a request's W3C traceparent reaches the tool process (TRACEPARENT), the
// work it starts gets spans under it (request -> tool; request -> workflow run -> step -> tool),
// and every span is exported over OTLP/HTTP JSON to a collector stand-in (a real HTTP server on
// loopback that records what it is sent). A hostile traceparent starts a new trace and costs
// nothing else; a collector that is down loses spans, not requests.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <mutex>

#include "http/http.h"
#include "integration/api_reply.h"
#include "integration/daemon.h"
#include "integration/scripted_llm.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

constexpr char kTrace[] = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr char kParent[] = "00f067aa0ba902b7";

// Records the spans POSTed to /v1/traces.
class Collector {
 public:
  Collector() : server_(Options()) {
    server_.Handle("POST", "/v1/traces", [this](const http::Request& req) {
      json body = json::parse(req.body, nullptr, false);
      std::lock_guard lock(mu_);
      ++posts_;
      if (!body.is_object() || !body.contains("resourceSpans")) ++unparsed_;
      if (body.is_object()) {
        for (const auto& rs : body["resourceSpans"]) {
          service_ = rs["resource"]["attributes"][0]["value"]["stringValue"];
          for (const auto& ss : rs["scopeSpans"]) {
            for (const auto& s : ss["spans"]) spans_.push_back(s);
          }
        }
      }
      return http::Response::Json(200, "{}");
    });
    // A service a relic step calls: it answers with the traceparent it was sent.
    server_.Handle("GET", "/echo", [](const http::Request& req) {
      return http::Response::Json(
          200, json{{"traceparent", req.Header("traceparent").value_or("")}}.dump());
    });
    EXPECT_TRUE(server_.Start().ok());
  }
  static http::ServerOptions Options() {
    http::ServerOptions o;
    o.host = "127.0.0.1";
    o.port = 0;
    return o;
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(server_.port()); }
  std::vector<json> Spans(const std::string& trace_id) {
    std::lock_guard lock(mu_);
    std::vector<json> out;
    for (const auto& s : spans_) {
      if (s.value("traceId", "") == trace_id) out.push_back(s);
    }
    return out;
  }
  int unparsed() {
    std::lock_guard lock(mu_);
    return unparsed_;
  }
  std::string service() {
    std::lock_guard lock(mu_);
    return service_;
  }

 private:
  http::Server server_;
  std::mutex mu_;
  std::vector<json> spans_;
  std::string service_;
  int posts_ = 0;
  int unparsed_ = 0;
};

std::string Attr(const json& span, const std::string& key) {
  for (const auto& a : span["attributes"]) {
    if (a["key"] == key) {
      return a["value"].contains("intValue") ? a["value"]["intValue"].get<std::string>()
                                             : a["value"].value("stringValue", "");
    }
  }
  return "";
}

void WriteTracedManifests(const fs::path& m) {
  WriteFile(m / "tools/tracer/tool.yml",
            "kind: Tool\nname: tracer\ndescription: Prints the trace context it was given.\n"
            "implementation: {runtime: bash, entrypoint: ./run.sh}\n");
  WriteFile(m / "tools/tracer/run.sh",
            "#!/usr/bin/env bash\necho \"{\\\"traceparent\\\": \\\"${TRACEPARENT:-none}\\\"}\"\n");
  fs::permissions(m / "tools/tracer/run.sh", fs::perms::owner_all | fs::perms::group_read |
                                                 fs::perms::group_exec | fs::perms::others_read |
                                                 fs::perms::others_exec);
  WriteFile(m / "tools/broken/tool.yml",
            "kind: Tool\nname: broken\ndescription: Always fails.\n"
            "implementation: {runtime: bash, entrypoint: ./run.sh}\n");
  WriteFile(m / "tools/broken/run.sh", "#!/usr/bin/env bash\necho 'it broke' >&2\nexit 3\n");
  WriteFile(m / "workflows/traced.workflow.yml",
            "kind: Workflow\nname: traced\ndescription: One traced step.\n"
            "trigger: {type: manual}\nsteps:\n"
            "  - {name: probe, type: tool, target: tracer}\n");
  WriteFile(m / "agents/prober/agent.md",
            "---\nkind: Agent\nname: prober\ndescription: Runs the tracer.\niteration_cap: 2\n"
            "cognitive_engine:\n  primary: {provider: scripted, model: m}\n"
            "import:\n  tools: [tracer]\n---\nYou probe.\n");
}

TEST(Tracing, ARequestsTraceReachesTheToolAndEverySpanIsExported) {
  Collector collector;
  ScriptedLlm llm;
  ASSERT_TRUE(llm.ok());
  llm.Script({Says(R"(<action id="t">{"name":"tracer"}</action><response>Probed.</response>)")});
  TempDir cfg;
  WriteFile(cfg.path() / "cortex.yml",
            "tracing:\n  otlp_endpoint: " + collector.url() +
                "\n  service_name: cortex-test\nllm:\n  providers:\n    - name: scripted\n"
                "      type: openai\n      api_key_env: ''\n      base_url: " +
                llm.base_url() + "\n");
  Daemon d({"--config", (cfg.path() / "cortex.yml").string()}, [&](const fs::path& m) {
    WriteTracedManifests(m);
    WriteFile(m / "workflows/called.workflow.yml",
              "kind: Workflow\nname: called\ndescription: Calls a service.\n"
              "trigger: {type: manual}\nsteps:\n"
              "  - {name: call, type: relic, target: \"" +
                  collector.url() + "/echo\"}\n");
  });
  ASSERT_DAEMON(d);
  const std::string parent = std::string("00-") + kTrace + "-" + kParent + "-01";
  const http::Headers traced = {{"traceparent", parent}};

  // A tool: its process gets the context of its own span, in the caller's trace.
  Reply tool = Post(d.client(), "/execute/tool", R"({"name": "tracer"})", traced);
  ASSERT_EQ(tool.status, 200) << tool.body;
  const std::string seen = tool.json["result"].value("traceparent", "");
  EXPECT_THAT(seen, ::testing::StartsWith(std::string("00-") + kTrace + "-")) << tool.body;
  EXPECT_THAT(seen, ::testing::Not(HasSubstr(kParent))) << "the tool's parent is Cortex's span";

  // A workflow: run -> step -> tool, under the request's span.
  Reply wf = Post(d.client(), "/execute/workflow", R"({"name": "traced", "wait": true})", traced);
  ASSERT_EQ(wf.status / 100, 2) << wf.body;
  EXPECT_EQ(wf.json.value("status", ""), "succeeded") << wf.body;

  // A relic step: the service it calls gets the step's context as the traceparent header.
  Reply called =
      Post(d.client(), "/execute/workflow", R"({"name": "called", "wait": true})", traced);
  ASSERT_EQ(called.status / 100, 2) << called.body;
  EXPECT_EQ(called.json.value("status", ""), "succeeded") << called.body;
  const std::string sent = called.json["steps"][0]["output"].value("traceparent", "");
  EXPECT_THAT(sent, ::testing::StartsWith(std::string("00-") + kTrace + "-")) << called.body;

  // An agent: run -> action -> tool.
  Reply agent = Post(d.client(), "/execute/agent", R"({"agent": "prober", "input": "go"})", traced);
  ASSERT_EQ(agent.status, 200) << agent.body;
  EXPECT_EQ(agent.json.value("status", ""), "succeeded") << agent.body;

  std::vector<json> spans;
  ASSERT_TRUE(WaitFor([&] {
    spans = collector.Spans(kTrace);
    return spans.size() >= 13;
  })) << "spans exported: "
      << spans.size() << "\n"
      << d.log();
  std::map<std::string, json> by_name;
  std::map<std::string, json> by_id;
  for (const json& s : spans) {
    by_id[s["spanId"]] = s;
    by_name.emplace(s["name"].get<std::string>(), s);  // the first of each name
  }
  auto parent_of = [&](const json& s) -> json {
    auto it = by_id.find(s.value("parentSpanId", ""));
    return it == by_id.end() ? json() : it->second;
  };
  ASSERT_TRUE(by_name.count("POST /execute/tool")) << json(spans).dump(1);
  const json& server = by_name["POST /execute/tool"];
  EXPECT_EQ(server.value("parentSpanId", ""), kParent);
  EXPECT_EQ(server["kind"], 2) << "SPAN_KIND_SERVER";
  EXPECT_EQ(Attr(server, "http.route"), "/execute/tool");
  EXPECT_EQ(Attr(server, "http.response.status_code"), "200");
  EXPECT_FALSE(Attr(server, "cortex.request_id").empty());
  // The tool span whose context the process saw is the request span's child.
  bool found_tool = false;
  for (const json& s : spans) {
    if (s["name"] != "tool tracer" ||
        seen.find(s["spanId"].get<std::string>()) == std::string::npos)
      continue;
    found_tool = true;
    EXPECT_EQ(parent_of(s)["name"], "POST /execute/tool");
    EXPECT_FALSE(Attr(s, "cortex.execution_id").empty());
  }
  EXPECT_TRUE(found_tool) << json(spans).dump(1);
  ASSERT_TRUE(by_name.count("workflow traced") && by_name.count("step probe"))
      << json(spans).dump(1);
  EXPECT_EQ(parent_of(by_name["workflow traced"])["name"], "POST /execute/workflow");
  EXPECT_EQ(parent_of(by_name["step probe"])["name"], "workflow traced");
  // How many spans of `name` have a parent named `parent`.
  auto under = [&](const std::string& name, const std::string& parent) {
    size_t n = 0;
    for (const json& s : spans) {
      if (s["name"] == name && parent_of(s)["name"] == parent) ++n;
    }
    return n;
  };
  EXPECT_EQ(under("tool tracer", "step probe"), 1u);
  ASSERT_TRUE(by_name.count("agent prober") && by_name.count("action tool tracer"))
      << json(spans).dump(1);
  EXPECT_EQ(parent_of(by_name["agent prober"])["name"], "POST /execute/agent");
  EXPECT_EQ(parent_of(by_name["action tool tracer"])["name"], "agent prober");
  EXPECT_EQ(under("tool tracer", "action tool tracer"), 1u);
  // The relic call's header names the span of its step.
  bool relic_step = false;
  for (const json& s : spans) {
    if (s["name"] == "step call" &&
        sent.find(s["spanId"].get<std::string>()) != std::string::npos) {
      relic_step = true;
    }
  }
  EXPECT_TRUE(relic_step) << sent;
  for (const json& s : spans) {
    EXPECT_LE(std::stoll(s["startTimeUnixNano"].get<std::string>()),
              std::stoll(s["endTimeUnixNano"].get<std::string>()));
  }
  EXPECT_EQ(collector.service(), "cortex-test");

  // A failed tool's span has the error status; an unsampled caller's spans are not exported
  // (checked once a later, sampled trace has arrived: spans leave in the order they end).
  const std::string failing = "0af7651916cd43dd8448eb211c80319c";
  Reply broke = Post(d.client(), "/execute/tool", R"({"name": "broken"})",
                     {{"traceparent", "00-" + failing + "-b7ad6b7169203331-01"}});
  EXPECT_EQ(broke.json.value("status", ""), "failed") << broke.body;
  const std::string quiet = "11111111111111111111111111111111";
  EXPECT_EQ(Post(d.client(), "/execute/tool", R"({"name": "tracer"})",
                 {{"traceparent", "00-" + quiet + "-b7ad6b7169203331-00"}})
                .status,
            200);
  const std::string marker = "22222222222222222222222222222222";
  EXPECT_EQ(Post(d.client(), "/execute/tool", R"({"name": "tracer"})",
                 {{"traceparent", "00-" + marker + "-b7ad6b7169203331-01"}})
                .status,
            200);
  ASSERT_TRUE(WaitFor([&] { return collector.Spans(marker).size() >= 2; }));
  EXPECT_TRUE(collector.Spans(quiet).empty()) << "an unsampled trace was exported";
  bool failed_span = false;
  for (const json& s : collector.Spans(failing)) {
    if (s["name"] != "tool broken") continue;
    failed_span = true;
    EXPECT_EQ(s["status"].value("code", 0), 2) << s.dump();
    EXPECT_EQ(Attr(s, "process.exit.code"), "3") << s.dump();
  }
  EXPECT_TRUE(failed_span) << json(collector.Spans(failing)).dump(1);
  EXPECT_EQ(collector.unparsed(), 0);

  // Hostile trace headers start a new trace; the call is served as any other.
  for (const std::string& bad :
       {std::string("garbage"), std::string("00-") + std::string(32, '0') + "-" + kParent + "-01",
        std::string("00-") + kTrace + "-" + kParent + "-01-extra", std::string(5000, 'f'),
        std::string("00-\xff\xfe") + std::string(51, 'a')}) {
    Reply r = Post(d.client(), "/execute/tool", R"({"name": "tracer"})", {{"traceparent", bad}});
    ASSERT_EQ(r.status, 200) << r.body;
    const std::string got = r.json["result"].value("traceparent", "");
    EXPECT_EQ(got.size(), 55u) << got;
    EXPECT_THAT(got, ::testing::Not(HasSubstr(kTrace))) << got;
  }
}

TEST(Tracing, ACollectorThatIsDownCostsSpansNotRequests) {
  TempDir cfg;
  // Nothing listens on port 9 of loopback (discard): every export fails.
  WriteFile(cfg.path() / "cortex.yml", "tracing:\n  otlp_endpoint: http://127.0.0.1:9\n");
  Daemon d({"--config", (cfg.path() / "cortex.yml").string()}, WriteTracedManifests);
  ASSERT_DAEMON(d);
  for (int i = 0; i < 3; ++i) {
    Reply r = Post(d.client(), "/execute/tool", R"({"name": "tracer"})");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json["result"].value("traceparent", "").size(), 55u) << r.body;
  }
  // The loss is counted (the exporter sends once a second).
  auto dropped = [&] {
    const std::string body = Get(d.client(), "/metrics").body;
    const std::string name = "\ncortex_trace_spans_dropped_total ";
    const size_t at = body.find(name);
    return at == std::string::npos ? 0.0 : std::stod(body.substr(at + name.size()));
  };
  EXPECT_TRUE(WaitFor([&] { return dropped() >= 3; })) << Get(d.client(), "/metrics").body;
  // A bad endpoint is refused at startup.
  WriteFile(cfg.path() / "bad.yml", "tracing:\n  otlp_endpoint: 127.0.0.1:4318\n");
  Daemon bad({"--config", (cfg.path() / "bad.yml").string()});
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.Stop(), 0);
  EXPECT_THAT(bad.log(), HasSubstr("otlp_endpoint"));
}

}  // namespace
}  // namespace cortex::testing
