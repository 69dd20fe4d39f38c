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
//
// The model is the scripted OpenAI-compatible server of the tests (tests/integration/
// scripted_llm.h), in this process, on 127.0.0.1. Prints figures; never asserts timing.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "agent/protocol.h"
#include "bench_util.h"
#include "http/http.h"
#include "integration/scripted_llm.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;
using cortex::testing::Says;
using cortex::testing::ScriptedLlm;

struct Options {
  int reps = 5;
  int iterations = 20;
  int parser_mb = 16;
  bool keep = false;
};

void Usage() {
  std::fprintf(stderr, "usage: agent_bench [--reps N] [--iterations N] [--parser-mb N] [--keep]\n");
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

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
}

struct Server {
  cortex::bench::ScratchDir dir;
  cortex::bench::ServeProcess serve{std::string(CORTEX_BINARY_DIR) + "/cortex"};
  std::unique_ptr<cortex::http::Client> client;
  Server(const ScriptedLlm& llm, bool at_message_end, bool keep)
      : dir("cortex-agent-bench-", keep) {
    WriteManifests(dir.path() / "manifests");
    fs::permissions(dir.path(), fs::perms(0755));
    cortex::bench::WriteText(dir.path() / "cortex.yml",
                             "llm:\n  max_iterations: 10000\n  dispatch_at_message_end: " +
                                 std::string(at_message_end ? "true" : "false") +
                                 "\n  providers:\n    - {name: bench, type: openai, base_url: " +
                                 llm.base_url() + ", max_retries: 0}\n");
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
  return 0;
}
