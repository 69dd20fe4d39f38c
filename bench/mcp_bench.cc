// mcp_bench: what MCP adds to a tool call. The same no-op tool is called, alternately and on one
// keep-alive connection each, through POST /execute/tool (the baseline) and through tools/call on
// POST /mcp (Streamable HTTP, an initialized session) of the real `cortex serve` of this build
// tree. Prints p50/p90/p99 of both and the difference of the medians (issue 15's goal: <= 0.3 ms
// p50). Then, when bench/node has its npm packages (run_all.sh installs them), Cortex as an MCP
// client: bench/node/mcp_client_bench.mjs calls a stdio MCP server written with the official SDK
// (tests/node/mcp_test_server.mjs) directly and through Cortex (goal: <= 1.2x). Never asserts:
// the figures go in bench/README.md.
//
//   build/bench/mcp_bench [--calls 1000] [--sandbox] [--keep]
#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.h"
#include "http/http.h"
#include "mcp/client.h"

namespace cortex::bench {
namespace {

void Usage() { std::fprintf(stderr, "usage: mcp_bench [--calls N] [--sandbox] [--keep]\n"); }

void Report(const char* name, const std::vector<double>& ms) {
  std::printf("  %-44s p50 %7.3f ms  p90 %7.3f ms  p99 %7.3f ms  (%zu calls)\n", name,
              Percentile(ms, 50), Percentile(ms, 90), Percentile(ms, 99), ms.size());
}

int Main(int argc, char** argv) {
  int calls = 1000;
  bool sandbox = false, keep = false;
  Flags flags(argc, argv, Usage);
  for (std::string a; flags.Next(&a);) {
    if (a == "--calls") {
      calls = std::atoi(flags.Value());
    } else if (a == "--sandbox") {
      sandbox = true;
    } else if (a == "--keep") {
      keep = true;
    } else {
      Usage();
      return 2;
    }
  }
  ScratchDir dir("cortex-mcp-bench", keep);
  if (!dir.ok()) return 1;
  const auto m = dir.path() / "manifests";
  WriteText(m / "tools/noop/tool.yml",
            "kind: Tool\nname: noop\ndescription: Does nothing.\n"
            "implementation: {type: shell, entrypoint: ./noop.sh}\n");
  WriteText(m / "tools/noop/noop.sh", "#!/bin/sh\necho '{}'\n");
  const std::string server_script =
      std::string(CORTEX_SOURCE_DIR) + "/tests/node/mcp_test_server.mjs";
  WriteText(m / "tools/remote_echo/tool.yml",
            "kind: Tool\nname: remote_echo\ndescription: The test server's echo.\n"
            "implementation:\n  type: mcp\n  mcp: {command: [node, " +
                server_script + "], tool: echo}\n");
  std::filesystem::permissions(m / "tools/noop/noop.sh", std::filesystem::perms(0755));
  WriteText(dir.path() / "cortex.yml",
            sandbox ? "exec:\n  sandbox: true\n"
                    : "exec:\n  sandbox: false\n  allow_unsandboxed: true\n");

  std::printf("mcp_bench: %d calls of a no-op tool (%s), each way, alternating\n", calls,
              sandbox ? "sandboxed" : "unsandboxed");
  std::printf("loadavg at the start: %s\n", LoadAvg().c_str());
  ServeProcess serve(std::string(CORTEX_BINARY_DIR) + "/cortex");
  if (!serve.Start(m, dir.path() / "data", dir.path() / "serve.log",
                   {"--config", (dir.path() / "cortex.yml").string()})) {
    std::fprintf(stderr, "cortex serve did not start:\n%s\n", serve.log().c_str());
    return 1;
  }
  http::Client rest(serve.url());
  http::Client mcp(serve.url());
  http::Headers h = {{"Accept", "application/json, text/event-stream"}};
  auto init = mcp.Post("/mcp",
                       R"({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                           "protocolVersion":"2025-06-18","capabilities":{},
                           "clientInfo":{"name":"mcp_bench","version":"1"}}})",
                       "application/json", h);
  if (!init.ok() || init->status != 200) {
    std::fprintf(stderr, "initialize failed: %s\n",
                 init.ok() ? init->body.c_str() : init.status().ToString().c_str());
    return 1;
  }
  h.emplace("Mcp-Session-Id", init->headers.find("Mcp-Session-Id")->second);
  h.emplace("MCP-Protocol-Version", "2025-06-18");
  (void)mcp.Post("/mcp", R"({"jsonrpc":"2.0","method":"notifications/initialized"})",
                 "application/json", h);

  using Clock = std::chrono::steady_clock;
  auto time_ms = [](auto&& f) {
    auto t0 = Clock::now();
    bool ok = f();
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    return ok ? ms : -1.0;
  };
  auto call_rest = [&] {
    auto r = rest.Post("/execute/tool", R"({"name":"noop","parameters":{}})");
    return r.ok() && r->status == 200 && r->body.find("\"succeeded\"") != std::string::npos;
  };
  int id = 1;
  auto call_mcp = [&] {
    std::string body = R"({"jsonrpc":"2.0","id":)" + std::to_string(id++) +
                       R"(,"method":"tools/call","params":{"name":"noop","arguments":{}}})";
    auto r = mcp.Post("/mcp", body, "application/json", h);
    return r.ok() && r->status == 200 && r->body.find("\"isError\":false") != std::string::npos;
  };
  for (int i = 0; i < 20; ++i) {  // warm-up: connections, cgroup slots, the Store's pages
    call_rest();
    call_mcp();
  }
  std::vector<double> rest_ms, mcp_ms;
  int failures = 0;
  for (int i = 0; i < calls; ++i) {
    double a = time_ms(call_rest);
    double b = time_ms(call_mcp);
    if (a < 0 || b < 0) {
      ++failures;
      continue;
    }
    rest_ms.push_back(a);
    mcp_ms.push_back(b);
  }
  std::printf("\n");
  Report("POST /execute/tool (baseline)", rest_ms);
  Report("tools/call over POST /mcp", mcp_ms);
  double diff = Median(mcp_ms) - Median(rest_ms);
  std::printf("  -> MCP overhead at p50: %+.3f ms (ratio %.3f)%s\n", diff,
              Median(rest_ms) > 0 ? Median(mcp_ms) / Median(rest_ms) : 0.0,
              failures ? " (some calls failed)" : "");
  std::printf("\ngoal: <= 0.3 ms at p50 above POST /execute/tool (%s: %+.3f ms)\n",
              diff <= 0.3 ? "MET" : "MISSED", diff);

  const std::string client_bench =
      std::string(CORTEX_SOURCE_DIR) + "/bench/node/mcp_client_bench.mjs";
  if (!std::filesystem::exists(std::string(CORTEX_SOURCE_DIR) +
                               "/bench/node/node_modules/@modelcontextprotocol/sdk")) {
    std::printf("\nMCP client: skipped (npm ci --prefix bench/node, as run_all.sh does)\n");
  } else {
    std::printf("\nMCP client: echo of a stdio MCP server (the SDK's), %d calls each way\n", calls);
    std::string cmd = "node " + client_bench + " " + serve.url() + " " + server_script + " " +
                      std::to_string(calls);
    FILE* p = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    while (p && std::fgets(buf, sizeof buf, p)) out += buf;
    int rc = p ? ::pclose(p) : -1;
    auto j = nlohmann::json::parse(out, nullptr, false);
    if (rc != 0 || !j.is_object()) {
      std::printf("  failed (exit %d): %s\n", rc, out.c_str());
    } else {
      auto row = [&](const char* name, const nlohmann::json& r) {
        std::printf("  %-44s p50 %7.3f ms  p90 %7.3f ms  p99 %7.3f ms\n", name,
                    r["p50"].get<double>(), r["p90"].get<double>(), r["p99"].get<double>());
      };
      row("SDK client -> server (stdio, baseline)", j["direct"]);
      row("SDK client -> Cortex /mcp -> server", j["cortex_mcp"]);
      row("POST /execute/tool -> Cortex -> server", j["cortex_rest"]);
      // Cortex's own client (mcp::ClientPool, what the executor calls) on the same server.
      mcp::ClientPool pool(mcp::ClientOptions{});
      mcp::ServerSpec spec;
      spec.argv = {"/usr/bin/env", "node", server_script};
      const char* path = std::getenv("PATH");
      spec.env = {std::string("PATH=") + (path ? path : "/usr/bin:/bin"), "HOME=/tmp"};
      std::vector<double> client_ms;
      bool client_ok = true;
      for (int i = -20; i < calls && client_ok; ++i) {
        const std::string text = "m" + std::to_string(i);
        auto t0 = std::chrono::steady_clock::now();
        auto r = pool.CallTool(spec, "echo", {{"text", text}}, std::chrono::seconds(10), nullptr,
                               nullptr);
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                        .count();
        client_ok = r.ok() && !r->is_error && r->content[0].value("text", "") == text;
        if (i >= 0) client_ms.push_back(ms);
      }
      if (!client_ok) {
        std::printf("  Cortex's client failed\n");
      } else {
        Report("Cortex's client (mcp::ClientPool) -> server", client_ms);
      }
      const double direct = j["direct"]["p50"].get<double>();
      const double ratio = Median(client_ms) / direct;
      std::printf("  -> Cortex's client: %.2fx the SDK's client on the same server\n", ratio);
      std::printf(
          "  -> the whole call through Cortex: %.2fx over /mcp, %.2fx over REST (the "
          "API, the executor and the call's record in the Store on top)\n",
          j["ratio_mcp"].get<double>(), j["ratio_rest"].get<double>());
      std::printf(
          "goal: Cortex as the client <= 1.2x the SDK client calling the server directly "
          "(%s: %.2fx)\n",
          ratio <= 1.2 ? "MET" : "MISSED", ratio);
    }
  }
  std::printf("loadavg at the end: %s\n", LoadAvg().c_str());
  return failures ? 1 : 0;
}

}  // namespace
}  // namespace cortex::bench

int main(int argc, char** argv) { return cortex::bench::Main(argc, argv); }
