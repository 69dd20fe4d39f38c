#include "mcp/client.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <thread>

#include "common/fd.h"
#include "common/json.h"
#include "common/log.h"
#include "http/http.h"
#include "mcp/server.h"

namespace cortex::mcp {

namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kComponent = "mcp";
constexpr size_t kMaxLineBytes = 16u << 20;  // one message from a stdio server
constexpr size_t kStderrTail = 4096;
constexpr auto kCancelPoll = std::chrono::milliseconds(100);

Json InitializeParams(const ClientOptions& o) {
  return {{"protocolVersion", std::string(kProtocolVersions[0])},
          {"capabilities", Json::object()},
          {"clientInfo", {{"name", o.client_name}, {"version", o.client_version}}}};
}

// The error of a JSON-RPC response as a Status.
Status RpcErrorStatus(const Json& error) {
  int code = error.is_object() ? error.value("code", 0) : 0;
  std::string message = error.is_object() ? error.value("message", "") : "";
  std::string text = "the MCP server answered error " + std::to_string(code) + ": " + message;
  return code == kInvalidParams || code == kMethodNotFound ? InvalidArgumentError(text)
                                                           : FailedPreconditionError(text);
}

// ---- stdio ----------------------------------------------------------------------------------

// A server started as a command: newline-delimited JSON-RPC on its stdin and stdout. One
// thread reads its stdout (answers, notifications, its own requests) and stderr (kept, the end
// of it, for messages).
class StdioConnection final : public Connection {
 public:
  static Result<std::unique_ptr<StdioConnection>> Start(const ServerSpec& spec) {
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 ||
        ::pipe2(err, O_CLOEXEC) != 0) {
      return ResourceExhaustedError("pipe: " + ErrnoText(errno));
    }
    Fd in_r(in[0]), in_w(in[1]), out_r(out[0]), out_w(out[1]), err_r(err[0]), err_w(err[1]);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in_r.get(), 0);
    posix_spawn_file_actions_adddup2(&fa, out_w.get(), 1);
    posix_spawn_file_actions_adddup2(&fa, err_w.get(), 2);
    if (!spec.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, spec.cwd.c_str());
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // Its own process group (stopped as a whole), default signal dispositions and mask.
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(
        &attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    std::vector<char*> argv, envp;
    for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    pid_t pid = 0;
    int rc = ::posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      return FailedPreconditionError("cannot start the MCP server " + spec.Describe() + ": " +
                                     ErrnoText(rc));
    }
    auto c = std::unique_ptr<StdioConnection>(new StdioConnection(spec.Describe(), pid));
    {
      MutexLock lock(c->write_mu_);  // (not shared yet)
      c->in_ = std::move(in_w);
    }
    c->out_ = std::move(out_r);
    c->err_ = std::move(err_r);
    c->reader_ = std::thread([p = c.get()] { p->ReadLoop(); });
    return c;
  }

  ~StdioConnection() override {
    {
      MutexLock lock(write_mu_);
      in_.Reset();  // EOF: a well-behaved server exits
    }
    // SIGTERM after a moment, SIGKILL after two seconds.
    auto deadline = Clock::now() + std::chrono::milliseconds(200);
    bool gone = WaitGone(deadline);
    if (!gone) {
      ::kill(-pid_, SIGTERM);
      gone = WaitGone(Clock::now() + std::chrono::seconds(2));
    }
    if (!gone) {
      ::kill(-pid_, SIGKILL);
      int status;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
    ::kill(-pid_, SIGKILL);  // what it left behind in its group
    stop_ = true;
    if (reader_.joinable()) reader_.join();
  }

  bool alive() const override {
    MutexLock lock(mu_);
    return !dead_;
  }

  Result<Json> Request(const std::string& method, const Json& params,
                       std::chrono::milliseconds timeout, const CancelToken* cancel,
                       const std::function<void(const Json&)>& on_notification) override {
    auto call = std::make_shared<Pending>();
    call->on_notification = on_notification;
    int64_t id;
    {
      MutexLock lock(mu_);
      if (dead_) return UnavailableError(why_dead_);
      id = next_id_++;
      pending_[id] = call;
      if (params.is_object() && params.contains("_meta") &&
          params["_meta"].contains("progressToken")) {
        progress_[DumpJson(params["_meta"]["progressToken"])] = call;
      }
    }
    Json message = {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}};
    Status sent = Send(message);
    const auto deadline = Clock::now() + timeout;
    MutexLock lock(mu_);
    if (sent.ok()) {
      while (!call->done && !dead_) {
        if (cancel && cancel->cancelled()) break;
        if (Clock::now() >= deadline) break;
        auto until = std::min(deadline, Clock::now() + kCancelPoll);
        cv_.wait_until(lock.native(), until);
      }
    }
    pending_.erase(id);
    std::erase_if(progress_, [&](const auto& kv) { return kv.second == call; });
    if (call->done) {
      if (call->response.contains("error")) return RpcErrorStatus(call->response["error"]);
      return call->response.value("result", Json::object());
    }
    if (!sent.ok()) return sent;
    if (dead_) return UnavailableError(why_dead_);
    lock.Unlock();
    // Tell the server to stop working on it.
    (void)Send({{"jsonrpc", "2.0"},
                {"method", "notifications/cancelled"},
                {"params", {{"requestId", id}, {"reason", "cancelled by Cortex"}}}});
    if (cancel && cancel->cancelled()) return FailedPreconditionError(method + " was cancelled");
    return DeadlineExceededError(method + " got no answer from the MCP server " + describe_ +
                                 " in " + std::to_string(timeout.count()) + " ms");
  }

  // A notification (no answer expected).
  Status Notify(const Json& message) { return Send(message); }

 private:
  struct Pending {
    bool done = false;
    Json response;
    std::function<void(const Json&)> on_notification;
  };

  StdioConnection(std::string describe, pid_t pid) : describe_(std::move(describe)), pid_(pid) {}

  bool WaitGone(Clock::time_point deadline) {
    int status;
    while (Clock::now() < deadline) {
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_ || (r < 0 && errno == ECHILD)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  Status Send(const Json& message) {
    std::string line = DumpJson(message) + "\n";
    MutexLock lock(write_mu_);
    size_t off = 0;
    while (off < line.size()) {
      if (!in_.valid()) return UnavailableError("the MCP server " + describe_ + " is stopping");
      // EPIPE, not SIGPIPE, when it stopped reading: the server ignores SIGPIPE (api/daemon.cc,
      // and http::Client for the CLI).
      ssize_t n = ::write(in_.get(), line.data() + off, line.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        MarkDead("the MCP server " + describe_ + " stopped reading (" + ErrnoText(errno) + ")");
        return UnavailableError("the MCP server " + describe_ + " is gone");
      }
      off += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  void MarkDead(const std::string& why) {
    {
      MutexLock lock(mu_);
      if (dead_) return;
      dead_ = true;
      why_dead_ = why;
      if (!stderr_tail_.empty()) why_dead_ += "; its stderr ended with: " + stderr_tail_;
    }
    cv_.notify_all();
  }

  void Dispatch(std::string_view line) {
    auto parsed = ParseJson(line);
    if (!parsed.ok() || !parsed->is_object()) {
      log::Warn(kComponent, "the MCP server " + describe_ + " wrote a line that is not JSON-RPC");
      return;
    }
    Json& m = *parsed;
    if (m.contains("id") && !m.contains("method")) {  // an answer
      if (!m["id"].is_number_integer()) return;
      std::shared_ptr<Pending> call;
      {
        MutexLock lock(mu_);
        auto it = pending_.find(m["id"].get<int64_t>());
        if (it == pending_.end()) return;  // cancelled meanwhile
        call = it->second;
        call->response = std::move(m);
        call->done = true;
      }
      cv_.notify_all();
      return;
    }
    if (!m.contains("method") || !m["method"].is_string()) return;
    if (m.contains("id")) {
      // The server's own request (roots/list, sampling, elicitation): Cortex offers none.
      Json answer =
          m["method"] == "ping"
              ? Json{{"jsonrpc", "2.0"}, {"id", m["id"]}, {"result", Json::object()}}
              : Server::ErrorResponse(m["id"], kMethodNotFound,
                                      "Cortex does not offer " + m["method"].get<std::string>());
      (void)Send(answer);
      return;
    }
    if (m["method"] == "notifications/progress" && m.contains("params") &&
        m["params"].is_object() && m["params"].contains("progressToken")) {
      std::shared_ptr<Pending> call;
      {
        MutexLock lock(mu_);
        auto it = progress_.find(DumpJson(m["params"]["progressToken"]));
        if (it != progress_.end()) call = it->second;
      }
      if (call && call->on_notification) call->on_notification(m);
    }
  }

  void ReadLoop() {
    std::string buf, err;
    char chunk[65536];
    bool out_open = true, err_open = true;
    while (out_open && !stop_) {
      pollfd fds[2] = {{out_.get(), POLLIN, 0}, {err_.get(), POLLIN, 0}};
      int n = ::poll(fds, err_open ? 2 : 1, 200);
      if (n < 0 && errno != EINTR) break;
      if (n <= 0) continue;
      if (fds[0].revents) {
        ssize_t r = ::read(out_.get(), chunk, sizeof chunk);
        if (r <= 0 && !(r < 0 && errno == EINTR)) {
          out_open = false;
        } else if (r > 0) {
          buf.append(chunk, static_cast<size_t>(r));
          size_t start = 0, nl;
          while ((nl = buf.find('\n', start)) != std::string::npos) {
            std::string_view line(buf.data() + start, nl - start);
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
            if (!line.empty()) Dispatch(line);
            start = nl + 1;
          }
          buf.erase(0, start);
          if (buf.size() > kMaxLineBytes) {
            MarkDead("the MCP server " + describe_ + " wrote a line longer than 16 MiB");
            ::kill(-pid_, SIGKILL);
            out_open = false;
          }
        }
      }
      if (err_open && fds[1].revents) {
        ssize_t r = ::read(err_.get(), chunk, sizeof chunk);
        if (r <= 0 && !(r < 0 && errno == EINTR)) {
          err_open = false;
        } else if (r > 0) {
          err.append(chunk, static_cast<size_t>(r));
          if (err.size() > kStderrTail) err.erase(0, err.size() - kStderrTail);
          MutexLock lock(mu_);
          stderr_tail_ = ToValidUtf8(err);
        }
      }
    }
    MarkDead("the MCP server " + describe_ + " exited");
  }

  const std::string describe_;
  const pid_t pid_;
  Mutex write_mu_;
  Fd in_ CORTEX_GUARDED_BY(write_mu_);
  Fd out_, err_;  // the reader thread's
  std::thread reader_;
  std::atomic<bool> stop_{false};
  mutable Mutex mu_ CORTEX_ACQUIRED_AFTER(write_mu_);
  std::condition_variable cv_;
  int64_t next_id_ CORTEX_GUARDED_BY(mu_) = 1;
  std::map<int64_t, std::shared_ptr<Pending>> pending_ CORTEX_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Pending>> progress_ CORTEX_GUARDED_BY(mu_);
  bool dead_ CORTEX_GUARDED_BY(mu_) = false;
  std::string why_dead_ CORTEX_GUARDED_BY(mu_);
  std::string stderr_tail_ CORTEX_GUARDED_BY(mu_);
};

// ---- Streamable HTTP ------------------------------------------------------------------------

class HttpConnection final : public Connection {
 public:
  explicit HttpConnection(const ServerSpec& spec) : spec_(spec) {
    auto [base, path] = http::SplitUrl(spec.url);
    base_ = base;
    path_ = path;
  }

  bool alive() const override {
    MutexLock lock(mu_);
    return !dead_;
  }

  void SetSession(std::string id, std::string version) {
    MutexLock lock(mu_);
    session_ = std::move(id);
    version_ = std::move(version);
  }

  Result<Json> Request(const std::string& method, const Json& params,
                       std::chrono::milliseconds timeout, const CancelToken* cancel,
                       const std::function<void(const Json&)>& on_notification) override {
    int64_t id;
    http::Headers headers;
    {
      MutexLock lock(mu_);
      id = next_id_++;
      if (!session_.empty()) headers.emplace("Mcp-Session-Id", session_);
      if (!version_.empty()) headers.emplace("MCP-Protocol-Version", version_);
    }
    headers.emplace("Accept", "application/json, text/event-stream");
    for (const auto& [k, v] : spec_.headers) headers.emplace(k, v);
    http::ClientOptions o;
    o.read_timeout = timeout;
    http::Client client(base_, o);
    Json message = {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}};
    Json answer;
    auto r = client.Send("POST", path_, DumpJson(message), "application/json", headers,
                         [&](const http::SseEvent& e) {
                           auto m = ParseJson(e.data);
                           if (!m.ok() || !m->is_object()) return true;
                           if (m->contains("id") && !m->contains("method")) {
                             answer = std::move(*m);
                             return false;
                           }
                           if (on_notification) on_notification(*m);
                           return !(cancel && cancel->cancelled());
                         });
    if (!r.ok()) return r.status();
    if (r->status == 404) {
      MutexLock lock(mu_);
      dead_ = true;  // the session ended: the pool connects again
      return UnavailableError("the MCP server " + spec_.url + " no longer knows this session");
    }
    if (r->status < 200 || r->status > 299) {
      return UnavailableError("the MCP server " + spec_.url + " answered HTTP " +
                              std::to_string(r->status) + ": " + r->body.substr(0, 500));
    }
    if (answer.is_null() && !r->body.empty()) {
      auto parsed = ParseJson(r->body);
      if (parsed.ok()) answer = std::move(parsed).value();
    }
    if (method == "initialize") {
      auto sid = r->headers.find("Mcp-Session-Id");
      SetSession(sid == r->headers.end() ? "" : sid->second,
                 answer.contains("result") ? answer["result"].value("protocolVersion", "") : "");
    }
    if (cancel && cancel->cancelled() && answer.is_null()) {
      return FailedPreconditionError(method + " was cancelled");
    }
    if (!answer.is_object()) {
      return UnavailableError("the MCP server " + spec_.url + " gave no answer to " + method);
    }
    if (answer.contains("error")) return RpcErrorStatus(answer["error"]);
    return answer.value("result", Json::object());
  }

  void Notify(const Json& message) {
    http::Headers headers;
    {
      MutexLock lock(mu_);
      if (!session_.empty()) headers.emplace("Mcp-Session-Id", session_);
      if (!version_.empty()) headers.emplace("MCP-Protocol-Version", version_);
    }
    headers.emplace("Accept", "application/json, text/event-stream");
    for (const auto& [k, v] : spec_.headers) headers.emplace(k, v);
    http::Client client(base_);
    (void)client.Send("POST", path_, DumpJson(message), "application/json", headers, nullptr);
  }

 private:
  const ServerSpec spec_;
  std::string base_, path_;
  mutable Mutex mu_;
  int64_t next_id_ CORTEX_GUARDED_BY(mu_) = 1;
  std::string session_ CORTEX_GUARDED_BY(mu_);
  std::string version_ CORTEX_GUARDED_BY(mu_);
  bool dead_ CORTEX_GUARDED_BY(mu_) = false;
};

}  // namespace

std::string ServerSpec::Key() const {
  // Not the folder: tools that name the same command share its process, started in the folder
  // of the first one called.
  std::string key = url;
  for (const auto& a : argv) key += '\0' + a;
  for (const auto& e : env) key += '\0' + e;
  for (const auto& [k, v] : headers) key += '\0' + k + ':' + v;
  return key;
}

std::string ServerSpec::Describe() const {
  if (!url.empty()) return url;
  std::string text;
  for (const auto& a : argv) text += (text.empty() ? "" : " ") + a;
  return "'" + text + "'";
}

Result<std::unique_ptr<Connection>> Connect(const ServerSpec& spec, const ClientOptions& options) {
  const Json note = {{"jsonrpc", "2.0"}, {"method", "notifications/initialized"}};
  if (!spec.url.empty()) {
    auto c = std::make_unique<HttpConnection>(spec);
    auto init =
        c->Request("initialize", InitializeParams(options), options.connect_timeout, nullptr, {});
    if (!init.ok()) return init.status();
    c->Notify(note);
    return std::unique_ptr<Connection>(std::move(c));
  }
  if (spec.argv.empty()) return InvalidArgumentError("an MCP server needs a command or a URL");
  CORTEX_ASSIGN_OR_RETURN(auto c, StdioConnection::Start(spec));
  auto init =
      c->Request("initialize", InitializeParams(options), options.connect_timeout, nullptr, {});
  if (!init.ok()) {
    return Status(init.status().code(), "the MCP server " + spec.Describe() +
                                            " did not start: " + init.status().message());
  }
  if (Status st = c->Notify(note); !st.ok()) return st;
  return std::unique_ptr<Connection>(std::move(c));
}

// ---- Pool -------------------------------------------------------------------------------------

ClientPool::~ClientPool() {
  std::map<std::string, std::shared_ptr<Connection>> all;
  {
    MutexLock lock(mu_);
    all.swap(connections_);
  }
  all.clear();  // stops stdio servers (no call can be using them: the pool is going away)
}

size_t ClientPool::connections() const {
  MutexLock lock(mu_);
  return connections_.size();
}

Result<std::shared_ptr<Connection>> ClientPool::Get(const ServerSpec& spec) {
  const std::string key = spec.Key();
  std::shared_ptr<Mutex> connecting;
  {
    MutexLock lock(mu_);
    if (auto it = connections_.find(key); it != connections_.end() && it->second->alive()) {
      return it->second;
    }
    auto& slot = connecting_[key];
    if (!slot) slot = std::make_shared<Mutex>();
    connecting = slot;
  }
  MutexLock one(*connecting);
  {
    MutexLock lock(mu_);  // someone else connected while this call waited
    if (auto it = connections_.find(key); it != connections_.end() && it->second->alive()) {
      return it->second;
    }
  }
  auto c = Connect(spec, options_);
  if (!c.ok()) return c.status();
  std::shared_ptr<Connection> shared = std::move(c).value();
  std::shared_ptr<Connection> old;
  {
    MutexLock lock(mu_);
    auto& slot = connections_[key];
    old = std::move(slot);
    slot = shared;
  }
  if (old) log::Info(kComponent, "the MCP server " + spec.Describe() + " was started again");
  return shared;
}

void ClientPool::Drop(const ServerSpec& spec, const std::shared_ptr<Connection>& dead) {
  std::shared_ptr<Connection> gone;
  {
    MutexLock lock(mu_);
    auto it = connections_.find(spec.Key());
    if (it != connections_.end() && it->second == dead) {
      gone = std::move(it->second);
      connections_.erase(it);
    }
  }
}

Result<ToolCallResult> ClientPool::CallTool(
    const ServerSpec& spec, const std::string& tool, const Json& arguments,
    std::chrono::milliseconds timeout, const CancelToken* cancel,
    const std::function<void(const std::string&)>& on_progress) {
  static std::atomic<uint64_t> tokens{0};
  Json params = {{"name", tool}, {"arguments", arguments.is_object() ? arguments : Json::object()}};
  if (on_progress) params["_meta"] = {{"progressToken", "cortex-" + std::to_string(++tokens)}};
  auto note = [&](const Json& m) {
    if (!on_progress) return;
    const Json& p = m["params"];
    std::string text = p.value("message", "");
    if (text.empty() && p.contains("progress")) {
      text = "progress " + DumpJson(p["progress"]) +
             (p.contains("total") ? "/" + DumpJson(p["total"]) : std::string());
    }
    on_progress(text);
  };
  for (int attempt = 0;; ++attempt) {
    CORTEX_ASSIGN_OR_RETURN(std::shared_ptr<Connection> c, Get(spec));
    auto r = c->Request("tools/call", params, timeout, cancel, note);
    if (!r.ok() && !c->alive()) {
      Drop(spec, c);
      // Started again for the next call; this one is retried only when the server was found
      // dead before it could have run it.
      if (attempt == 0 && r.status().code() == StatusCode::kUnavailable &&
          r.status().message().find("is gone") != std::string::npos) {
        continue;
      }
    }
    if (!r.ok()) return r.status();
    ToolCallResult out;
    if (r->contains("content") && (*r)["content"].is_array()) out.content = (*r)["content"];
    if (r->contains("structuredContent")) out.structured = (*r)["structuredContent"];
    out.is_error = r->value("isError", false);
    return out;
  }
}

Result<std::vector<Json>> ClientPool::ListTools(const ServerSpec& spec,
                                                std::chrono::milliseconds timeout) {
  CORTEX_ASSIGN_OR_RETURN(std::shared_ptr<Connection> c, Get(spec));
  std::vector<Json> tools;
  Json params = Json::object();
  for (int page = 0; page < 100; ++page) {
    auto r = c->Request("tools/list", params, timeout, nullptr, {});
    if (!r.ok()) {
      if (!c->alive()) Drop(spec, c);
      return r.status();
    }
    if (r->contains("tools") && (*r)["tools"].is_array()) {
      for (auto& t : (*r)["tools"]) tools.push_back(t);
    }
    if (!r->contains("nextCursor") || !(*r)["nextCursor"].is_string()) break;
    params["cursor"] = (*r)["nextCursor"];
  }
  return tools;
}

}  // namespace cortex::mcp
