// cortex mcp: the MCP stdio transport, for desktop clients (Claude Desktop, Cursor, VS Code) that
// start a server as a command. It relays newline-delimited JSON-RPC messages between its stdin and
// stdout and the server's Streamable HTTP endpoint, /mcp, with the context's server URL and key:
// the tools run on the server (sandboxed, recorded, under the key's role), not in this process.
//
// Each request is relayed on a thread of its own, so a long tools/call does not hold back a ping
// or a cancellation; an answer streamed as events (progress, then the result) is written message
// by message as it arrives. Once the session is open, a second thread follows GET /mcp and writes
// the server's own notifications (tools/list_changed). At the end of stdin the session is ended
// (DELETE /mcp). Nothing but protocol messages goes to stdout; what goes wrong goes to stderr.
#include <CLI/CLI.hpp>
#include <atomic>
#include <iostream>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cli/client.h"
#include "cli/verbs.h"
#include "common/json.h"
#include "common/mutex.h"

namespace cortex::cli {

namespace {

constexpr size_t kMaxLineBytes = 16u << 20;

class Bridge {
 public:
  explicit Bridge(const Context& ctx) : ctx_(ctx) {}

  int Run() {
    std::string line;
    while (ReadLine(line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      auto message = ParseJson(line);
      if (!message.ok()) {
        Write(ErrorFor(nullptr, -32700, "Parse error: " + message.status().message()));
        continue;
      }
      if (message->is_object() && message->value("method", "") == "initialize") {
        Relay(*message);  // first, and alone: the session exists once it is answered
        StartNotifications();
        continue;
      }
      Reap();
      threads_.emplace_back(std::make_unique<Worker>());
      Worker* w = threads_.back().get();
      w->thread = std::thread([this, w, m = std::move(message).value()] {
        Relay(m);
        w->done = true;
      });
    }
    for (auto& w : threads_) w->thread.join();
    threads_.clear();
    stopping_ = true;
    std::string session = SessionId();
    if (!session.empty()) {
      http::Client client(ctx_.server, ClientOptionsWithToken(ctx_));
      (void)client.Send("DELETE", "/mcp", "", "", SessionHeaders(), nullptr);
    }
    if (notifications_.joinable()) notifications_.join();
    return kExitOk;
  }

 private:
  struct Worker {
    std::thread thread;
    std::atomic<bool> done{false};
  };

  bool ReadLine(std::string& line) {
    line.clear();
    int c;
    while ((c = std::cin.get()) != EOF) {
      if (c == '\n') return true;
      if (line.size() < kMaxLineBytes) line.push_back(static_cast<char>(c));
    }
    return !line.empty();
  }

  void Reap() {
    std::erase_if(threads_, [](std::unique_ptr<Worker>& w) {
      if (!w->done) return false;
      w->thread.join();
      return true;
    });
  }

  std::string SessionId() {
    MutexLock lock(mu_);
    return session_id_;
  }

  http::Headers SessionHeaders() {
    MutexLock lock(mu_);
    http::Headers h;
    if (!session_id_.empty()) h.emplace("Mcp-Session-Id", session_id_);
    if (!protocol_version_.empty()) h.emplace("MCP-Protocol-Version", protocol_version_);
    return h;
  }

  void Write(const Json& message) { WriteText(DumpJson(message)); }
  void WriteText(const std::string& text) {
    MutexLock lock(out_mu_);
    std::cout << text << "\n" << std::flush;
  }

  static Json ErrorFor(const Json& id, int code, const std::string& message) {
    return Json{{"jsonrpc", "2.0"},
                {"id", id.is_string() || id.is_number_integer() ? id : Json(nullptr)},
                {"error", {{"code", code}, {"message", message}}}};
  }

  // POSTs one message and writes what comes back: the JSON answer, or each event's message.
  void Relay(const Json& message) {
    const bool is_request =
        message.is_object() && message.contains("method") && message.contains("id");
    const Json id = is_request ? message["id"] : Json(nullptr);
    http::ClientOptions options;
    options.read_timeout = std::chrono::minutes(11);  // a long tools/call answers when it ends
    http::Client client(ctx_.server, ClientOptionsWithToken(ctx_, options));
    http::Headers headers = SessionHeaders();
    headers.emplace("Accept", "application/json, text/event-stream");
    bool answered = false;  // an event stream carried the answer to this request
    auto answer = client.Send("POST", "/mcp", DumpJson(message), "application/json", headers,
                              [&](const http::SseEvent& e) {
                                if (e.data.empty()) return true;
                                auto m = ParseJson(e.data);
                                if (m.ok() && m->is_object() && m->contains("id") &&
                                    !m->contains("method") && (*m)["id"] == id) {
                                  answered = true;
                                }
                                WriteText(e.data);
                                return true;
                              });
    if (!answer.ok()) {
      std::cerr << "cortex mcp: " << UnreachableMessage(ctx_.server) << " ("
                << answer.status().message() << ")\n";
      if (is_request)
        Write(ErrorFor(id, -32000, "cannot reach the Cortex server at " + ctx_.server));
      return;
    }
    if (auto it = answer->headers.find("Mcp-Session-Id"); it != answer->headers.end()) {
      MutexLock lock(mu_);
      session_id_ = it->second;
    }
    if (answer->body.empty()) {
      // 202 (nothing to answer), or an event stream, written as it came. A stream that broke
      // before its answer must still end the client's wait.
      bool streamed = answer->status >= 200 && answer->status <= 299 && answer->status != 202;
      if (is_request && streamed && !answered) {
        Write(ErrorFor(id, -32000, "the server's answer stream ended before its answer"));
      }
      return;
    }
    auto body = ParseJson(answer->body);
    if (answer->status >= 200 && answer->status <= 299 && body.ok()) {
      if (message.value("method", "") == "initialize" && body->contains("result")) {
        MutexLock lock(mu_);
        protocol_version_ = (*body)["result"].value("protocolVersion", "");
      }
      Write(*body);
      return;
    }
    // A refusal of the transport (401, 403, 404 session gone, ...): the client sees it as the
    // answer to its request, with the server's reason.
    std::string why = body.ok() && body->contains("error") && (*body)["error"].is_object()
                          ? (*body)["error"].value("message", "")
                          : FormatApiError(answer->status, answer->body);
    std::cerr << "cortex mcp: HTTP " << answer->status << ": " << why << "\n";
    if (is_request)
      Write(ErrorFor(id, -32000, "HTTP " + std::to_string(answer->status) + ": " + why));
  }

  // Follows GET /mcp while the session lasts, again after a broken stream.
  void StartNotifications() {
    if (SessionId().empty() || notifications_.joinable()) return;
    notifications_ = std::thread([this] {
      auto pause = std::chrono::milliseconds(200);
      while (!stopping_) {
        http::ClientOptions options;
        options.read_timeout = std::chrono::seconds(60);  // keep-alives come every 15 s
        http::Client client(ctx_.server, ClientOptionsWithToken(ctx_, options));
        http::Headers headers = SessionHeaders();
        headers.emplace("Accept", "text/event-stream");
        auto r = client.Send("GET", "/mcp", "", "", headers, [this](const http::SseEvent& e) {
          if (!e.data.empty()) WriteText(e.data);
          return !stopping_.load();
        });
        if (stopping_) return;
        if (r.ok() && (r->status == 404 || r->status == 405)) return;  // no session, no stream
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::milliseconds(5000));
      }
    });
  }

  const Context& ctx_;
  Mutex mu_;
  std::string session_id_ CORTEX_GUARDED_BY(mu_);
  std::string protocol_version_ CORTEX_GUARDED_BY(mu_);
  Mutex out_mu_;  // one message a line, never interleaved
  std::vector<std::unique_ptr<Worker>> threads_;
  std::thread notifications_;
  std::atomic<bool> stopping_{false};
};

}  // namespace

void AddMcpCommand(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand(
      "mcp",
      "Speak MCP over stdin/stdout for a desktop client, relayed to the server's /mcp "
      "(its tools, workflows and agents as MCP tools)");
  cmd->fallthrough();  // global options (--server) may follow the verb
  cmd->callback([&ctx] {
    Bridge bridge(ctx);
    ctx.exit_code = bridge.Run();
  });
}

}  // namespace cortex::cli
