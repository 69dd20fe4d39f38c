// agent_bench: what the agent loop adds, each figure against a baseline measured in the same run.
//
//   agent_bench [--reps N] [--iterations N] [--parser-mb N] [--keep]
//
// 1. Actions started as their closing tag arrives. A model reply (scripted, streamed at 50
//    tokens/s: 4-byte chunks every 20 ms) asks for three independent tools that each sleep
//    200 ms, early in the reply, then goes on talking. The real `cortex serve` of this build tree
//    runs it (sandboxed tools, the Store on). Baseline: the same reply with the actions written
//    as plain text (so no tool runs) -- the stream as the loop experiences it -- plus the longest
//    tool (200 ms). Reported for Cortex's dispatch (at the closing tag) and for dispatch at the
//    end of the message (llm.dispatch_at_message_end, what most runtimes do), each as a ratio of
//    (stream + longest tool). Goal (issue 11): early dispatch within 1.1x.
// 2. Loop overhead per iteration, model and tool time excluded: --iterations (default 20) turns
//    of an instant model (the whole reply at once) each asking for one internal action
//    (system_clock), the run's wall time minus the model calls' own latency (the usage events'
//    latency_ms), per iteration; p50 over --reps runs. Goal: < 1 ms.
// 3. Parser throughput: --parser-mb (default 16) MB of protocol text (thoughts, actions,
//    responses), parsed whole and in 4 KiB pieces, in MB/s, against a memchr scan for '<' over
//    the same bytes (a lower bound: looking at every byte once).
// 4. From an action's closing tag leaving the model server to its tool's process starting (the
//    tool's first command stamps the time; same clock): p50 over --samples runs. Baseline: from
//    a POST /execute/tool of the same tool to its process starting. Goal: < 2 ms.
// 5. Against the OpenAI Agents SDK for JavaScript (@openai/agents, bench/node): the same
//    single-tool conversation (the model calls `stamp`, then answers) against the same scripted
//    server, N times each; overhead per turn = (wall - the tool script's own time) / 2 turns,
//    p50. Cortex runs the agent in native function-calling mode, as the SDK does, its tool
//    sandboxed; the SDK's function spawns the same script. Goal: Cortex <= 0.5x of the SDK.
//    Needs `npm ci --prefix bench/node` (run_all.sh does it); skipped without.
// 6. --concurrent (default 200) agent runs started at once (async), each one model turn: all
//    complete?, their wall time, and the server's memory: peak, and per idle session after (each
//    run leaves a session, kept in the Store).
//
// The model is the scripted OpenAI-compatible server of the tests (tests/integration/
// scripted_llm.h), in this process, on 127.0.0.1. Prints figures; never asserts timing.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "agent/protocol.h"
#include "bench_util.h"
#include "http/http.h"
#include "integration/scripted_llm.h"

namespace {
using cortex::bench::Median;
using cortex::bench::Percentile;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;
using cortex::testing::Says;
using cortex::testing::ScriptedLlm;

struct Options {
  int reps = 5;
  int iterations = 20;
  int parser_mb = 16;
  int samples = 30;
  int concurrent = 200;
  bool keep = false;
};

void Usage() {
  std::fprintf(stderr,
               "usage: agent_bench [--reps N] [--iterations N] [--parser-mb N] [--samples N] "
               "[--concurrent N] [--keep]\n");
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// About `n` tokens of filler text (4 bytes each).
std::string Words(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += "la, ";
  return s;
}

std::string NapAction(const std::string& id) {
  return "<action type=\"tool\" mode=\"async\" id=\"" + id +
         "\">{\"name\": \"nap\", \"parameters\": {}, \"output_key\": \"" + id + "\"}</action>";
}

// The reply of part 1: three actions early, then more talk, then the answer.
std::string NapReply(bool with_actions) {
  // Without actions, text of exactly the same length: the same stream, nothing to run.
  auto act = [&](const std::string& id) {
    std::string action = NapAction(id);
    return with_actions ? action : std::string(action.size(), '.');
  };
  return "<thought>Three naps at once. " + act("a") + Words(8) + act("b") + Words(8) + act("c") +
         Words(120) + "</thought><response>Done.</response>";
}

void WriteManifests(const fs::path& m) {
  fs::create_directories(m / "tools/nap");
  cortex::bench::WriteText(m / "tools/nap/tool.yml",
                           "kind: Tool\nname: nap\ndescription: Sleeps 200 ms.\n"
                           "implementation: {runtime: sh, entrypoint: ./nap.sh}\n");
  cortex::bench::WriteText(m / "tools/nap/nap.sh", "sleep 0.2\necho '{\"slept\": 200}'\n");
  fs::permissions(m / "tools/nap/nap.sh", fs::perms(0755));
  fs::permissions(m / "tools/nap", fs::perms(0755));
  fs::permissions(m / "tools", fs::perms(0755));
  fs::permissions(m, fs::perms(0755));
  cortex::bench::WriteText(m / "agents/napper.md",
                           "---\nkind: Agent\nname: napper\ndescription: naps\niteration_cap: 0\n"
                           "cognitive_engine:\n  primary: {provider: bench, model: scripted}\n"
                           "import:\n  tools: [nap]\n---\nYou nap.\n");
  // stamp: prints when it started and ended (ns, the wall clock), nothing else.
  fs::create_directories(m / "tools/stamp");
  cortex::bench::WriteText(m / "tools/stamp/tool.yml",
                           "kind: Tool\nname: stamp\ndescription: Prints when it ran.\n"
                           "implementation: {runtime: sh, entrypoint: ./stamp.sh}\n");
  cortex::bench::WriteText(m / "tools/stamp/stamp.sh",
                           "s=$(date +%s%N)\ne=$(date +%s%N)\n"
                           "echo \"{\\\"start_ns\\\": $s, \\\"end_ns\\\": $e}\"\n");
  fs::permissions(m / "tools/stamp/stamp.sh", fs::perms(0755));
  fs::permissions(m / "tools/stamp", fs::perms(0755));
  for (const char* mode : {"streaming", "native"}) {
    std::string name = std::string("stamper_") + mode;
    cortex::bench::WriteText(
        m / "agents" / (name + ".md"),
        "---\nkind: Agent\nname: " + name +
            "\ndescription: stamps\niteration_cap: 0\n"
            "cognitive_engine:\n  primary: {provider: bench, model: scripted}\n"
            "  protocol: " +
            mode + "\nimport:\n  tools: [stamp]\n---\nYou stamp.\n");
  }
  cortex::bench::WriteText(m / "agents/quick.md",
                           "---\nkind: Agent\nname: quick\ndescription: answers at once\n"
                           "cognitive_engine:\n  primary: {provider: bench, model: scripted}\n"
                           "---\nYou answer.\n");
}

struct Server {
  cortex::bench::ScratchDir dir;
  cortex::bench::ServeProcess serve{std::string(CORTEX_BINARY_DIR) + "/cortex"};
  std::unique_ptr<cortex::http::Client> client;
  // `extra`: more cortex.yml (e.g. "exec:\n  sandbox: false\n  allow_unsandboxed: true\n").
  Server(const ScriptedLlm& llm, bool at_message_end, bool keep, const std::string& extra = "")
      : dir("cortex-agent-bench-", keep) {
    WriteManifests(dir.path() / "manifests");
    fs::permissions(dir.path(), fs::perms(0755));
    cortex::bench::WriteText(
        dir.path() / "cortex.yml",
        "llm:\n  max_iterations: 10000\n  dispatch_at_message_end: " +
            std::string(at_message_end ? "true" : "false") +
            "\n  providers:\n    - {name: bench, type: openai, base_url: " + llm.base_url() +
            ", max_retries: 0, max_concurrency: 256}\n" + extra);
    if (!serve.Start(dir.path() / "manifests", dir.path() / "data", dir.path() / "serve.log",
                     {"--config", (dir.path() / "cortex.yml").string()})) {
      std::fprintf(stderr, "cortex serve did not start; see %s\n",
                   (dir.path() / "serve.log").c_str());
      std::exit(1);
    }
    cortex::http::ClientOptions o;
    o.read_timeout = std::chrono::minutes(5);
    client = std::make_unique<cortex::http::Client>(
        "http://127.0.0.1:" + std::to_string(serve.port()), o);
  }
};

// One run; its wall time, and the model calls' own latency (from the usage events).
struct RunTime {
  double wall_ms = 0, model_ms = 0;
  bool ok = false;
};

RunTime Run(Server& s, const std::string& input) {
  RunTime t;
  std::string body = Json{{"name", "napper"}, {"input", input}, {"stream", true}}.dump();
  std::string status;
  auto start = Clock::now();
  cortex::Status st = s.client->StreamPost("/execute/agent", body, [&](const auto& e) {
    auto data = Json::parse(e.data, nullptr, false);
    if (e.event == "usage") t.model_ms += data.value("latency_ms", 0.0);
    if (e.event == "done") {
      status = data.value("status", "");
      return false;
    }
    return true;
  });
  t.wall_ms = Ms(Clock::now() - start);
  t.ok = st.ok() && status == "succeeded";
  if (!t.ok) std::fprintf(stderr, "a run failed: %s (%s)\n", st.ToString().c_str(), status.c_str());
  return t;
}

void EarlyDispatch(const Options& o) {
  std::printf("\n== 1. three 200 ms tools, the reply streamed at 50 tokens/s ==\n");
  ScriptedLlm llm;
  const auto stream_turn = [](bool actions) {
    return Says(NapReply(actions), 4, std::chrono::milliseconds(20));
  };
  double chunks = static_cast<double>((NapReply(true).size() + 3) / 4);
  std::printf("reply: %zu bytes, %.0f chunks of 4 bytes every 20 ms (%.0f ms of stream)\n",
              NapReply(true).size(), chunks, chunks * 20);
  for (bool at_end : {false, true}) {
    Server s(llm, at_end, o.keep);
    std::vector<double> baseline, run;
    for (int i = 0; i < o.reps; ++i) {
      llm.Script({stream_turn(false)});
      RunTime b = Run(s, "stream only");
      llm.Script({stream_turn(true)});
      RunTime r = Run(s, "nap three times");
      if (b.ok && r.ok) {
        baseline.push_back(b.wall_ms + 200);
        run.push_back(r.wall_ms);
      }
    }
    double base = Median(baseline), wall = Median(run);
    std::printf(
        "%-32s run %7.1f ms  baseline (stream %6.1f + longest tool 200) %7.1f ms  "
        "ratio %.3fx\n",
        at_end ? "dispatch at message end:" : "dispatch at closing tag (Cortex):", wall, base - 200,
        base, base > 0 ? wall / base : 0);
  }
}

void LoopOverhead(const Options& o) {
  std::printf("\n== 2. loop overhead per iteration (model and tool time excluded) ==\n");
  ScriptedLlm llm;
  Server s(llm, false, o.keep);
  std::vector<double> per_iteration;
  for (int rep = 0; rep < o.reps; ++rep) {
    std::vector<cortex::testing::ScriptedTurn> turns;
    for (int i = 0; i + 1 < o.iterations; ++i) {
      cortex::testing::ScriptedTurn t = Says(
          "<action type=\"internal\" id=\"c\">{\"name\": \"system_clock\"}</action>"
          "<response final=\"false\">.</response>",
          1 << 20);
      turns.push_back(t);
    }
    turns.push_back(Says("<response>done</response>", 1 << 20));
    llm.Script(turns);
    RunTime r = Run(s, "tick");
    if (r.ok) per_iteration.push_back((r.wall_ms - r.model_ms) / o.iterations);
  }
  std::printf("%d iterations a run, %d runs: overhead per iteration p50 %.3f ms (goal < 1 ms)\n",
              o.iterations, o.reps, Median(per_iteration));
}

void ParserThroughput(const Options& o) {
  std::printf("\n== 3. streaming protocol parser throughput ==\n");
  std::string unit = "<thought>Looking at the numbers, 1 < 2 and <b>this</b> is fine. " +
                     Words(40) + NapAction("x") + "</thought>" +
                     "<response final=\"false\">Partial: $x.slept " + Words(20) + "</response>";
  std::string text;
  while (text.size() < static_cast<size_t>(o.parser_mb) << 20) text += unit;
  const double mb = static_cast<double>(text.size()) / (1 << 20);
  auto start = Clock::now();
  size_t events = cortex::agent::ParseProtocol(text).size();
  double whole = Ms(Clock::now() - start);
  start = Clock::now();
  cortex::agent::ProtocolParser p;
  std::vector<cortex::agent::ProtocolEvent> out;
  size_t pieces_events = 0;
  for (size_t i = 0; i < text.size(); i += 4096) {
    p.Feed(std::string_view(text).substr(i, 4096), &out);
    pieces_events += out.size();
    out.clear();
  }
  p.Finish(&out);
  double pieces = Ms(Clock::now() - start);
  start = Clock::now();
  size_t lt = 0;
  for (const char* c = text.data();
       (c = static_cast<const char*>(std::memchr(c, '<', text.data() + text.size() - c))) !=
       nullptr;
       ++c) {
    ++lt;
  }
  double scan = Ms(Clock::now() - start);
  std::printf(
      "%.1f MB, %zu events: whole %.0f MB/s, in 4 KiB pieces %.0f MB/s (%zu events); "
      "memchr scan for '<' %.0f MB/s (%zu found): the parser at %.2fx of a scan\n",
      mb, events, mb / (whole / 1000), mb / (pieces / 1000), pieces_events, mb / (scan / 1000), lt,
      scan / pieces);
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void TagToProcess(const Options& o) {
  std::printf("\n== 4. from an action's closing tag to its tool's process starting ==\n");
  ScriptedLlm llm;
  const std::string action = "<action type=\"tool\" id=\"s\">{\"name\": \"stamp\"}</action>";
  for (bool sandbox : {true, false}) {
    Server s(llm, false, o.keep,
             sandbox ? "" : "exec:\n  sandbox: false\n  allow_unsandboxed: true\n");
    std::vector<double> tag, api;
    for (int i = 0; i < o.samples; ++i) {
      std::atomic<int64_t> sent{0};
      // The action alone in the first piece, then the rest of the reply 300 ms later.
      cortex::testing::ScriptedTurn t =
          Says(action + "<response>ok</response>", action.size(), std::chrono::milliseconds(300));
      t.on_sent = [&sent](size_t piece) {
        if (piece == 0) sent = NowNs();
      };
      llm.Script({t});
      auto r = s.client->Post("/execute/agent",
                              Json{{"name", "stamper_streaming"}, {"input", "stamp"}}.dump());
      if (!r.ok() || r->status != 200) {
        std::fprintf(stderr, "a run failed: %s\n", r.ok() ? r->body.c_str() : "no answer");
        continue;
      }
      Json j = Json::parse(r->body, nullptr, false);
      if (!j.is_object() || j["actions"].empty()) continue;
      Json out = j["actions"][0].value("result", Json());
      if (out.is_object() && out.contains("start_ns") && sent > 0) {
        tag.push_back(static_cast<double>(out["start_ns"].get<int64_t>() - sent) / 1e6);
      }
      int64_t before = NowNs();
      auto e = s.client->Post("/execute/tool", Json{{"name", "stamp"}}.dump());
      if (!e.ok() || e->status != 200) continue;
      Json ej = Json::parse(e->body, nullptr, false);
      Json eo = ej.is_object() ? ej.value("result", Json()) : Json();
      if (eo.is_object() && eo.contains("start_ns")) {
        api.push_back(static_cast<double>(eo["start_ns"].get<int64_t>() - before) / 1e6);
      }
    }
    double p50 = Percentile(tag, 50), base = Percentile(api, 50);
    std::printf(
        "%s, %zu samples: closing tag -> process start p50 %.2f ms (p90 %.2f); baseline POST "
        "/execute/tool -> process start p50 %.2f ms (p90 %.2f); the loop's own share %.2f ms; "
        "ratio %.2fx (goal < 2 ms)\n",
        sandbox ? "sandboxed" : "unsandboxed", tag.size(), p50, Percentile(tag, 90), base,
        Percentile(api, 90), p50 - base, base > 0 ? p50 / base : 0);
  }
}

// One stamp conversation's turns: the model calls stamp, then answers.
std::vector<cortex::testing::ScriptedTurn> StampTurns() {
  return {cortex::testing::Calls({{{"id", "call_1"}, {"name", "stamp"}, {"arguments", "{}"}}}),
          Says("done", 1 << 20)};
}

void AgainstAgentsSdk(const Options& o) {
  std::printf("\n== 5. overhead per turn against the OpenAI Agents SDK for JavaScript ==\n");
  fs::path sdk = fs::path(CORTEX_SOURCE_DIR) / "bench/node";
  if (!fs::exists(sdk / "node_modules/@openai/agents")) {
    std::printf("skipped: the SDK is not installed (npm ci --prefix bench/node)\n");
    return;
  }
  ScriptedLlm llm;
  const int runs = std::max(5, o.samples);
  // Cortex sandboxes its tools; the SDK's function spawns the script as it is: both reported.
  auto cortex_overhead = [&](bool sandbox) {
    Server s(llm, false, o.keep,
             sandbox ? "" : "exec:\n  sandbox: false\n  allow_unsandboxed: true\n");
    std::vector<double> per_turn;
    for (int i = 0; i < runs; ++i) {
      llm.Script(StampTurns());
      auto start = Clock::now();
      auto r = s.client->Post("/execute/agent",
                              Json{{"name", "stamper_native"}, {"input", "Stamp, please."}}.dump());
      double wall = Ms(Clock::now() - start);
      if (!r.ok() || r->status != 200) continue;
      Json j = Json::parse(r->body, nullptr, false);
      if (!j.is_object() || j.value("status", "") != "succeeded" || j["actions"].empty() ||
          j["actions"][0].value("status", "") != "succeeded") {
        std::fprintf(stderr, "a run failed: %s\n", r->body.substr(0, 300).c_str());
        continue;
      }
      Json out = j["actions"][0].value("result", Json());
      double tool = out.is_object() ? static_cast<double>(out.value("end_ns", int64_t{0}) -
                                                          out.value("start_ns", int64_t{0})) /
                                          1e6
                                    : 0;
      per_turn.push_back((wall - tool) / 2);
    }
    return per_turn;
  };
  std::vector<double> cortex_turn = cortex_overhead(true);
  std::vector<double> cortex_bare = cortex_overhead(false);
  std::vector<double> sdk_turn;
  Server s(llm, false, o.keep);
  std::vector<cortex::testing::ScriptedTurn> all;
  for (int i = 0; i < runs; ++i) {
    for (auto& t : StampTurns()) all.push_back(t);
  }
  llm.Script(all);
  std::string script = (s.dir.path() / "manifests/tools/stamp/stamp.sh").string();
  std::string cmd = "node " + (sdk / "agents_sdk_run.mjs").string() + " " + llm.base_url() + " " +
                    script + " " + std::to_string(runs) + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) {
    std::printf("skipped: cannot run node\n");
    return;
  }
  char line[4096];
  int failed = 0;
  while (std::fgets(line, sizeof line, p)) {
    Json j = Json::parse(line, nullptr, false);
    if (!j.is_object()) {
      std::fprintf(stderr, "sdk: %s", line);
      continue;
    }
    if (!j.value("ok", false)) {
      ++failed;
      continue;
    }
    sdk_turn.push_back((j.value("wall_ms", 0.0) - j.value("tool_ms", 0.0)) / 2);
  }
  ::pclose(p);
  // The SDK's first runs include Node's warm-up: the median is over all runs, as for Cortex.
  double c = Percentile(cortex_turn, 50), b = Percentile(cortex_bare, 50),
         k = Percentile(sdk_turn, 50);
  std::printf(
      "%d runs each: overhead per turn p50 Cortex sandboxed %.2f ms (%zu ok), unsandboxed %.2f "
      "ms (%zu ok), Agents SDK %.2f ms (%zu ok, %d failed); ratio Cortex/SDK sandboxed %.2fx, "
      "unsandboxed %.2fx (goal <= 0.5x)\n",
      runs, c, cortex_turn.size(), b, cortex_bare.size(), k, sdk_turn.size(), failed,
      k > 0 ? c / k : 0, k > 0 ? b / k : 0);
}

// The server's memory from /proc: VmRSS and VmHWM (peak), in KiB.
std::pair<long, long> Memory(pid_t pid) {
  std::string status = cortex::bench::ReadAll("/proc/" + std::to_string(pid) + "/status");
  auto field = [&](const char* name) {
    size_t at = status.find(name);
    return at == std::string::npos ? 0L : std::atol(status.c_str() + at + std::strlen(name));
  };
  return {field("VmRSS:"), field("VmHWM:")};
}

void Concurrent(const Options& o) {
  std::printf("\n== 6. %d agent runs at once ==\n", o.concurrent);
  ScriptedLlm llm;
  Server s(llm, false, o.keep);
  // Warm up (the first run's one-time costs), then the baseline memory.
  llm.Script({Says("<response>ok</response>", 1 << 20)});
  (void)s.client->Post("/execute/agent", Json{{"name", "quick"}, {"input", "hi"}}.dump());
  auto [rss_before, peak_before] = Memory(s.serve.pid());
  std::vector<cortex::testing::ScriptedTurn> turns(static_cast<size_t>(o.concurrent),
                                                   Says("<response>ok</response>", 1 << 20));
  llm.Script(turns);
  auto start = Clock::now();
  std::vector<std::string> ids;
  for (int i = 0; i < o.concurrent; ++i) {
    auto r = s.client->Post(
        "/execute/agent",
        Json{{"name", "quick"}, {"input", "run " + std::to_string(i)}, {"async", true}}.dump());
    if (r.ok() && r->status == 202) {
      ids.push_back(Json::parse(r->body, nullptr, false).value("run_id", ""));
    }
  }
  size_t done = 0, succeeded = 0;
  while (Clock::now() - start < std::chrono::minutes(5)) {
    done = succeeded = 0;
    for (const auto& id : ids) {
      auto r = s.client->Get("/agent-runs/" + id);
      if (!r.ok()) continue;
      std::string status = Json::parse(r->body, nullptr, false).value("status", "running");
      done += status != "running";
      succeeded += status == "succeeded";
    }
    if (done == ids.size()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  double wall = Ms(Clock::now() - start);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // idle
  auto [rss_after, peak_after] = Memory(s.serve.pid());
  std::printf(
      "started %zu of %d, finished %zu, succeeded %zu, in %.0f ms (%.1f runs/s); server memory: "
      "before %ld KiB, peak %ld KiB, idle after %ld KiB: %.1f KiB per idle session (sessions "
      "live in the Store)\n",
      ids.size(), o.concurrent, done, succeeded, wall, 1000.0 * static_cast<double>(done) / wall,
      rss_before, std::max(peak_before, peak_after), rss_after,
      static_cast<double>(rss_after - rss_before) / std::max<size_t>(1, succeeded));
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  cortex::bench::Flags flags(argc, argv, Usage);
  for (std::string a; flags.Next(&a);) {
    if (a == "--reps") {
      o.reps = std::max(1, std::atoi(flags.Value()));
    } else if (a == "--iterations") {
      o.iterations = std::max(1, std::atoi(flags.Value()));
    } else if (a == "--parser-mb") {
      o.parser_mb = std::max(1, std::atoi(flags.Value()));
    } else if (a == "--samples") {
      o.samples = std::max(1, std::atoi(flags.Value()));
    } else if (a == "--concurrent") {
      o.concurrent = std::max(1, std::atoi(flags.Value()));
    } else if (a == "--keep") {
      o.keep = true;
    } else {
      Usage();
      return 2;
    }
  }
  std::printf("agent_bench (load %s)\n", cortex::bench::LoadAvg().c_str());
  ParserThroughput(o);
  LoopOverhead(o);
  EarlyDispatch(o);
  TagToProcess(o);
  AgainstAgentsSdk(o);
  Concurrent(o);
  return 0;
}
