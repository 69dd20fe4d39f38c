// Access control end to end: API keys made by `cortex auth`, every registered route walked with
// no key, a wrong key, a revoked key and each role (401 / 403 / allowed as the route table
// says; a route without an entry in the table fails the walk), the audit log (one entry per
// mutating call, refused ones included, with the answer's request id), the CLI sending
// CORTEX_TOKEN, and the server refusing to start open on a network or with no key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "cli/cli_process.h"
#include "integration/api_reply.h"
#include "integration/daemon.h"
#include "integration/keys.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

const std::vector<std::string> kRoles = {"viewer", "operator", "admin"};

int Rank(const std::string& role) {
  if (role == "public") return 0;
  if (role == "viewer") return 1;
  if (role == "operator") return 2;
  if (role == "admin") return 3;
  return 99;
}

class AuthApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    config_ = new TempDir();
    WriteFile(config_->path() / "cortex.yml", "auth:\n  mode: on\n");
    daemon_ =
        new Daemon({"--config", (config_->path() / "cortex.yml").string()}, [](const fs::path& m) {
          fs::path data = m.parent_path() / "data";
          for (const auto& role : kRoles) keys_[role] = CreateKey(data, role, role);
          std::string id;
          keys_["revoked"] = CreateKey(data, "old", "admin", &id);
          CliResult r = RunCli({"auth", "--data-dir", data.string(), "revoke-key", id});
          EXPECT_EQ(r.exit_code, 0) << r;
          // Scoped keys: an admin of the manifests named in-*, and two operators of tools.
          keys_["scoped-admin"] = CreateKey(data, "scoped", "admin", nullptr, {"*:in-*"});
          keys_["calc-only"] =
              CreateKey(data, "calc", "operator", nullptr, {"tool:calc*", "workflow:none"});
          keys_["others-only"] = CreateKey(data, "others", "operator", nullptr, {"tool:other-*"});
          fs::create_directories(m / "tools");
          fs::copy(fs::path(CORTEX_SOURCE_DIR) / "examples/manifests/tools/calculator",
                   m / "tools/calculator", fs::copy_options::recursive);
        });
    ASSERT_DAEMON(*daemon_);
  }
  static void TearDownTestSuite() {
    delete daemon_;
    delete config_;
  }

  static http::Headers As(const std::string& who) {
    if (who.empty()) return {};
    auto it = keys_.find(who);
    return {{"Authorization", "Bearer " + (it == keys_.end() ? who : it->second)}};
  }
  // One call of `method` on `path` (a JSON body, "{}" unless given, for writes), with a short
  // read timeout: an allowed event stream does not end. The status, or 0 when it did not answer
  // in time.
  static int Call(const std::string& method, const std::string& path, const std::string& who,
                  const std::string& body = "{}") {
    http::ClientOptions o;
    o.read_timeout = std::chrono::milliseconds(1500);
    o.headers = As(who);
    http::Client c(daemon_->url(), o);
    Result<http::ClientResponse> r = UnavailableError("no call");
    if (method == "GET") r = c.Get(path);
    if (method == "POST") r = c.Post(path, body);
    if (method == "PUT") r = c.Put(path, body);
    if (method == "DELETE") r = c.Delete(path);
    return r.ok() ? r->status : 0;
  }

  static TempDir* config_;
  static Daemon* daemon_;
  static std::map<std::string, std::string> keys_;
};
TempDir* AuthApi::config_ = nullptr;
Daemon* AuthApi::daemon_ = nullptr;
std::map<std::string, std::string> AuthApi::keys_;

TEST_F(AuthApi, EveryRouteIsInTheTableAndAnswersAsItSays) {
  Reply routes = Get(daemon_->client(), "/auth/routes", As("viewer"));
  ASSERT_EQ(routes.status, 200) << routes.body;
  ASSERT_GT(routes.json["routes"].size(), 60u) << routes.body;
  for (const json& r : routes.json["routes"]) {
    std::string method = r.value("method", ""), pattern = r.value("pattern", "");
    std::string role = r.value("role", "");
    SCOPED_TRACE(method + " " + pattern + " (" + role + ")");
    EXPECT_NE(role, "none") << "a route without an entry in the access table";
    if (role == "none") continue;
    std::string path = pattern;
    for (size_t at; (at = path.find('{')) != std::string::npos;) {
      path.replace(at, path.find('}', at) - at + 1, "x");
    }
    if (role == "public") {
      EXPECT_NE(Call(method, path, ""), 401);
      continue;
    }
    EXPECT_EQ(Call(method, path, ""), 401);
    EXPECT_EQ(Call(method, path, "ctx_not_a_key"), 401);
    EXPECT_EQ(Call(method, path, "revoked"), 401);
    for (const auto& who : kRoles) {
      int status = Call(method, path, who);
      if (Rank(who) < Rank(role)) {
        EXPECT_EQ(status, 403) << who;
      } else {
        EXPECT_NE(status, 401) << who;
        EXPECT_NE(status, 403) << who;
      }
    }
  }
}

// A body naming the manifest `name` for each route whose target is in its body; a route of that
// kind missing here fails the walk below.
std::optional<std::string> BodyNaming(const std::string& route, const std::string& name) {
  if (route == "POST /registry/manifests") {
    std::string tool =
        ReadFile(fs::path(CORTEX_SOURCE_DIR) / "examples/manifests/tools/calculator/tool.yml");
    tool.replace(tool.find("name: calculator"), 16, "name: " + name);
    return json{{"content", tool}}.dump();
  }
  if (route == "POST /execute/tool" || route == "POST /execute/workflow" ||
      route == "POST /deploy/relic" || route == "POST /deploy/monument") {
    return json{{"name", name}}.dump();
  }
  if (route == "POST /execute/batch") {
    return json{{"calls", {{{"name", "in-first"}}, {{"name", name}}}}}.dump();
  }
  if (route == "POST /execute/agent") return json{{"agent", name}, {"input", "hi"}}.dump();
  if (route == "POST /v1/chat/completions") {
    return json{{"model", name}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}}.dump();
  }
  return std::nullopt;
}

TEST_F(AuthApi, AScopedKeyActsOnlyOnTheManifestsItsScopesName) {
  // The key is an admin scoped to `*:in-*`: every route is walked with a manifest inside its
  // scope and one outside it, as the route table's target says.
  Reply routes = Get(daemon_->client(), "/auth/routes", As("viewer"));
  ASSERT_EQ(routes.status, 200) << routes.body;
  int named = 0, in_body = 0, global = 0;
  for (const json& r : routes.json["routes"]) {
    std::string method = r.value("method", ""), pattern = r.value("pattern", "");
    std::string role = r.value("role", ""), target = r.value("target", "");
    SCOPED_TRACE(method + " " + pattern + " (" + target + ")");
    if (role == "public") continue;
    auto path_with = [&](const std::string& name) {
      std::string path = pattern;
      for (size_t at; (at = path.find('{')) != std::string::npos;) {
        std::string param = path.substr(at + 1, path.find('}', at) - at - 1);
        path.replace(at, param.size() + 2,
                     param == "kind"        ? "tool"
                     : param == "operation" ? "op"
                                            : name);
      }
      return path;
    };
    if (target == "each") {
      // Per message, in the handler (/mcp lists only what is in scope): never the filter's 403.
      int status = Call(method, pattern, "scoped-admin");
      EXPECT_NE(status, 401);
      EXPECT_NE(status, 403);
    } else if (target == "any") {
      int status = Call(method, path_with("out-x"), "scoped-admin");
      EXPECT_NE(status, 401);
      EXPECT_NE(status, 403);
    } else if (target == "global") {
      ++global;
      EXPECT_EQ(Call(method, path_with("in-x"), "scoped-admin"), 403);
    } else if (target == "body") {
      ++in_body;
      auto in = BodyNaming(method + " " + pattern, "in-x");
      auto out = BodyNaming(method + " " + pattern, "out-x");
      ASSERT_TRUE(in && out) << "a route whose body names its manifest has no case in this test";
      EXPECT_EQ(Call(method, pattern, "scoped-admin", *out), 403);
      int status = Call(method, pattern, "scoped-admin", *in);
      EXPECT_NE(status, 401);
      EXPECT_NE(status, 403);
      if (pattern == "/registry/manifests") {  // written in scope, and only there
        EXPECT_EQ(Get(daemon_->client(), "/registry/manifest/tool/in-x", As("viewer")).status, 200);
        EXPECT_EQ(Get(daemon_->client(), "/registry/manifest/tool/out-x", As("viewer")).status,
                  404);
      }
    } else if (target.find("{id}") != std::string::npos) {
      // A run that is not there: the handler's 404, not the scope's 403 (runs below).
      EXPECT_NE(Call(method, path_with("in-x"), "scoped-admin"), 403);
    } else {
      ++named;
      EXPECT_EQ(Call(method, path_with("out-x"), "scoped-admin"), 403);
      int status = Call(method, path_with("in-x"), "scoped-admin");
      EXPECT_NE(status, 401);
      EXPECT_NE(status, 403);
    }
  }
  EXPECT_GT(named, 20);
  EXPECT_EQ(in_body, 8);
  EXPECT_GT(global, 4);
}

TEST_F(AuthApi, AScopedKeySeesAndControlsOnlyTheRunsOfItsManifests) {
  Reply run = Post(daemon_->client(), "/execute/tool",
                   R"({"name": "calculator", "parameters": {"operation": "add", "a": 1, "b": 2}})",
                   As("calc-only"));
  ASSERT_EQ(run.status, 200) << run.body;
  const std::string id = run.json.value("execution_id", run.json.value("id", ""));
  ASSERT_FALSE(id.empty()) << run.body;
  EXPECT_EQ(Call("GET", "/executions/" + id, "calc-only"), 200);
  EXPECT_EQ(Call("GET", "/executions/" + id + "/logs", "calc-only"), 200);
  Reply refused = Get(daemon_->client(), "/executions/" + id, As("others-only"));
  EXPECT_EQ(refused.status, 403) << refused.body;
  EXPECT_EQ(refused.json["error"].value("code", ""), "forbidden");
  EXPECT_THAT(refused.json["error"].value("message", ""),
              AllOf(HasSubstr("tool:other-*"), HasSubstr("calculator"), HasSubstr(id)));
  EXPECT_EQ(Call("POST", "/executions/" + id + "/cancel", "others-only"), 403);
  EXPECT_EQ(Call("POST", "/execute/tool", "others-only", R"({"name": "calculator"})"), 403);
  // A scoped operator is still an operator: no manifests written, whatever their name.
  EXPECT_EQ(Call("POST", "/registry/manifests", "calc-only",
                 *BodyNaming("POST /registry/manifests", "calc2")),
            403);
  // whoami and the key list show the scopes.
  Reply me = Get(daemon_->client(), "/auth/whoami", As("calc-only"));
  EXPECT_EQ(me.json["scopes"], json({"tool:calc*", "workflow:none"})) << me.body;
  Reply keys = Get(daemon_->client(), "/auth/keys", As("admin"));
  bool listed = false;
  for (const json& k : keys.json["keys"]) {
    if (k.value("name", "") == "calc") {
      listed = true;
      EXPECT_EQ(k["scopes"], json({"tool:calc*", "workflow:none"}));
    }
  }
  EXPECT_TRUE(listed) << keys.body;
}

TEST_F(AuthApi, ScopesThatSayNothingValidAreRefusedAndNoKeyIsMade) {
  for (const json& scopes : {json({"nightly"}), json({"tools:x"}), json({"tool:a b"}),
                             json("tool:x"), json({1}), json({"tool:ÿ"})}) {
    SCOPED_TRACE(scopes.dump(-1, ' ', false, json::error_handler_t::replace));
    Reply r = Post(daemon_->client(), "/auth/keys",
                   json{{"name", "badscope"}, {"role", "viewer"}, {"scopes", scopes}}.dump(
                       -1, ' ', false, json::error_handler_t::ignore),
                   As("admin"));
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_THAT(r.body, HasSubstr("scope")) << r.body;
  }
  CliResult bad = RunCli({"auth", "--data-dir", daemon_->data_dir().string(), "create-key",
                          "badscope", "--role", "viewer", "--scope", "workflows:nightly"});
  EXPECT_EQ(bad.exit_code, 2) << bad;
  EXPECT_THAT(bad.err, HasSubstr("names no kind")) << bad;
  CliResult listed = RunCli({"auth", "--data-dir", daemon_->data_dir().string(), "list-keys"});
  EXPECT_THAT(listed.out, Not(HasSubstr("badscope"))) << listed;
}

TEST_F(AuthApi, MutatingCallsAreAuditedOnceWithTheirRequestId) {
  auto newest = [] {
    Reply a = Get(daemon_->client(), "/audit?limit=1", As("admin"));
    return a.json["entries"].empty() ? json() : a.json["entries"][0];
  };
  auto count = [] {
    return Get(daemon_->client(), "/audit?limit=1000", As("admin")).json["entries"].size();
  };
  struct Case {
    std::string method, path, body, who;
    int status;
    std::string actor_has, target;
  };
  for (const Case& k : {
           Case{"POST", "/execute/tool",
                R"({"name": "calculator", "parameters": {"operation": "add", "a": 1, "b": 2}})",
                "operator", 200, "(operator)", "calculator"},
           // Refused before its body is read: no target from the body.
           Case{"POST", "/execute/tool", R"({"name": "calculator"})", "viewer", 403, "(viewer)",
                ""},
           Case{"DELETE", "/agent-sessions/as_none", "", "operator", 404, "(operator)", "as_none"},
           Case{"POST", "/auth/keys", R"({"name": "ci", "role": "viewer"})", "admin", 201,
                "(admin)", "ci"},
           Case{"POST", "/registry/sync", "{}", "", 401, "unauthenticated", ""},
       }) {
    SCOPED_TRACE(k.method + " " + k.path + " as " + k.who);
    size_t before = count();
    http::ClientOptions o;
    o.headers = As(k.who);
    http::Client c(daemon_->url(), o);
    auto r = k.method == "DELETE" ? c.Delete(k.path) : c.Post(k.path, k.body);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, k.status) << r->body;
    std::string request_id;
    for (const auto& [name, value] : r->headers) {
      if (name == "X-Request-Id") request_id = value;
    }
    EXPECT_FALSE(request_id.empty());
    EXPECT_EQ(count(), before + 1) << "exactly one entry a call";
    json e = newest();
    EXPECT_EQ(e.value("method", ""), k.method);
    EXPECT_EQ(e.value("path", ""), k.path);
    EXPECT_EQ(e.value("status", 0), k.status);
    EXPECT_THAT(e.value("actor", ""), HasSubstr(k.actor_has));
    EXPECT_EQ(e.value("target", ""), k.target);
    EXPECT_EQ(e.value("request_id", ""), request_id);
  }
  // Reads are not audited; the audit log is for admins.
  size_t before = count();
  EXPECT_EQ(Get(daemon_->client(), "/registry/manifests", As("viewer")).status, 200);
  EXPECT_EQ(count(), before);
  EXPECT_EQ(Get(daemon_->client(), "/audit", As("operator")).status, 403);
}

TEST_F(AuthApi, HostileCredentialsAndKeyNamesGetClearErrors) {
  // Each is refused with 401 and a JSON error, and the server goes on answering.
  for (const std::string& value :
       {std::string("Bearer \xff\xfe\x80"), "Bearer " + std::string(4000, 'k'),
        "Bearer " + keys_["admin"] + "\xc3", std::string("Bearer"), std::string("Bearer    "),
        std::string("Basic YWRtaW46YWRtaW4="), std::string(5000, '\xff')}) {
    SCOPED_TRACE(value.substr(0, 40));
    Reply r = Get(daemon_->client(), "/registry/manifests", {{"Authorization", value}});
    EXPECT_EQ(r.status, 401) << r.body;
    EXPECT_EQ(r.json["error"].value("code", ""), "unauthenticated") << r.body;
  }
  // Past the header size limit, the request itself is refused (before any key is looked at).
  Reply huge = Get(daemon_->client(), "/registry/manifests",
                   {{"Authorization", "Bearer " + std::string(100000, 'k')}});
  EXPECT_THAT(huge.status, ::testing::AnyOf(400, 431)) << huge.body;
  EXPECT_EQ(Get(daemon_->client(), "/registry/manifests", As("viewer")).status, 200);
  // Key names: UTF-8 text of 1 to 100 bytes, no control characters, over the API and the CLI.
  for (const std::string& name : {std::string(101, 'n'), std::string(""), std::string("a\tb")}) {
    Reply r = Post(daemon_->client(), "/auth/keys", json{{"name", name}, {"role", "viewer"}}.dump(),
                   As("admin"));
    EXPECT_EQ(r.status, 400) << r.body;
    EXPECT_THAT(r.body, HasSubstr("name")) << r.body;
  }
  CliResult bad = RunCli({"auth", "--data-dir", daemon_->data_dir().string(), "create-key",
                          "bad\xffname", "--role", "viewer"});
  EXPECT_NE(bad.exit_code, 0) << bad;
  EXPECT_THAT(bad.err, HasSubstr("UTF-8")) << bad;
  CliResult listed = RunCli({"auth", "--data-dir", daemon_->data_dir().string(), "list-keys"});
  EXPECT_THAT(listed.out, Not(HasSubstr("bad"))) << "nothing half-made";
}

TEST_F(AuthApi, ARevokedKeyIsRefusedAtOnceThroughTheApiAndSoonFromTheCli) {
  // Both keys are used first, so the server remembers them.
  std::string api_id, cli_id;
  std::string by_api = CreateKey(daemon_->data_dir(), "soon-gone", "viewer", &api_id);
  std::string by_cli = CreateKey(daemon_->data_dir(), "also-gone", "viewer", &cli_id);
  for (const auto& k : {by_api, by_cli}) {
    EXPECT_EQ(Call("GET", "/registry/manifests", k), 200);
  }
  // `cortex auth revoke-key` writes the Store from another process: the server still remembers
  // the key for a moment, then refuses it.
  CliResult r = RunCli({"auth", "--data-dir", daemon_->data_dir().string(), "revoke-key", cli_id});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(WaitFor([&] { return Call("GET", "/registry/manifests", by_cli) == 401; },
                      std::chrono::seconds(10)));
  // Through the API: refused at once.
  EXPECT_EQ(Call("GET", "/registry/manifests", by_api), 200);
  http::ClientOptions o;
  o.headers = As("admin");
  http::Client admin(daemon_->url(), o);
  auto revoked = admin.Delete("/auth/keys/" + api_id);
  ASSERT_TRUE(revoked.ok() && revoked->status == 200);
  EXPECT_EQ(Call("GET", "/registry/manifests", by_api), 401);
}

TEST_F(AuthApi, TheCliSendsCortexToken) {
  CliResult no_key = RunCli({"--server", daemon_->url(), "get", "tools"});
  EXPECT_NE(no_key.exit_code, 0) << no_key;
  EXPECT_THAT(no_key.err, HasSubstr("API key")) << no_key;
  CliResult with_key =
      RunCli({"--server", daemon_->url(), "get", "tools"}, "", {"CORTEX_TOKEN=" + keys_["viewer"]});
  EXPECT_EQ(with_key.exit_code, 0) << with_key;
  EXPECT_THAT(with_key.out, HasSubstr("calculator")) << with_key;
  CliResult listed = RunCli({"auth", "--data-dir", daemon_->data_dir().string(), "list-keys"});
  EXPECT_EQ(listed.exit_code, 0) << listed;
  EXPECT_THAT(listed.out, HasSubstr("(revoked)")) << listed;
  EXPECT_THAT(listed.out, Not(HasSubstr("ctx_"))) << "secrets are never shown again";
}

TEST_F(AuthApi, TheCliTakesItsServerAndKeyFromAContext) {
  TempDir home;
  const std::string contexts = "CORTEX_CONTEXTS=" + (home.path() / "contexts.yml").string();
  auto cli = [&](std::vector<std::string> args, std::vector<std::string> env = {}) {
    env.push_back(contexts);
    return RunCli(std::move(args), "", env);
  };
  WriteFile(home.path() / "admin.key", keys_["admin"] + "\n");
  CliResult set =
      cli({"context", "set", "prod", "--server", daemon_->url(), "--token", keys_["viewer"]});
  ASSERT_EQ(set.exit_code, 0) << set;
  ASSERT_EQ(cli({"context", "set", "root", "--server", daemon_->url(), "--token-file",
                 (home.path() / "admin.key").string()})
                .exit_code,
            0);
  EXPECT_EQ(fs::status(home.path() / "contexts.yml").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write)
      << "the file may hold keys";
  // The first context set is the current one: no --server, no CORTEX_TOKEN.
  CliResult got = cli({"get", "tools"});
  EXPECT_EQ(got.exit_code, 0) << got;
  EXPECT_THAT(got.out, HasSubstr("calculator"));
  CliResult listed = cli({"context", "ls"});
  EXPECT_THAT(listed.out, HasSubstr("prod")) << listed;
  EXPECT_THAT(listed.out, Not(HasSubstr(keys_["viewer"]))) << "keys are never listed";
  // The audit log needs an admin: the viewer's context is refused, the admin's (key from a
  // file) reads it.
  CliResult refused = cli({"audit"});
  EXPECT_NE(refused.exit_code, 0) << refused;
  EXPECT_THAT(refused.err, HasSubstr("admin")) << refused;
  CliResult audit = cli({"--context", "root", "audit", "--path", "/auth/keys", "-o", "json"});
  EXPECT_EQ(audit.exit_code, 0) << audit;
  json entries = json::parse(audit.out, nullptr, false);
  ASSERT_TRUE(entries.is_array()) << audit;
  for (const auto& e : entries) EXPECT_THAT(e.value("path", ""), HasSubstr("/auth/keys"));
  ASSERT_EQ(cli({"context", "use", "root"}).exit_code, 0);
  EXPECT_EQ(cli({"audit", "--limit", "1"}).exit_code, 0);
  // CORTEX_TOKEN outranks the context's key; an unknown context is a usage error.
  CliResult wrong = cli({"get", "tools"}, {"CORTEX_TOKEN=ctx_wrong"});
  EXPECT_NE(wrong.exit_code, 0) << wrong;
  EXPECT_THAT(wrong.err, HasSubstr("not valid")) << wrong;
  CliResult unknown = cli({"--context", "staging", "get", "tools"});
  EXPECT_EQ(unknown.exit_code, 2) << unknown;
  EXPECT_THAT(unknown.err, HasSubstr("no context named 'staging'")) << unknown;
  // A broken file is named with its line.
  WriteFile(home.path() / "contexts.yml", "current: prod\ncontexts:\n  prod: [1, 2]\n");
  CliResult broken = cli({"get", "tools"});
  EXPECT_EQ(broken.exit_code, 2) << broken;
  EXPECT_THAT(broken.err, HasSubstr("contexts.yml:3")) << broken;
  // Hostile files: a usage error naming the file (and line), never a crash or a silent default.
  struct Hostile {
    std::string name, text, expect;
  };
  for (const Hostile& h : {
           Hostile{"typo", "current: prod\ncontexts:\n  prod: {server: x, tokn: y}\n",
                   "contexts.yml:3"},
           Hostile{"invalid utf-8", "current: \xff\xfe\ncontexts: {}\n", "contexts.yml"},
           Hostile{"deep", std::string(5000, '[') + std::string(5000, ']') + "\n", "contexts.yml"},
           Hostile{"huge", "# " + std::string(2 << 20, 'x') + "\n", "larger than 1 MiB"},
       }) {
    SCOPED_TRACE(h.name);
    WriteFile(home.path() / "contexts.yml", h.text);
    CliResult r = cli({"get", "tools"});
    EXPECT_EQ(r.exit_code, 2) << r;
    EXPECT_THAT(r.err, HasSubstr(h.expect)) << r;
  }
}

TEST(AuthRateLimit, PastItsRateACallerGets429WithRetryAfter) {
  TempDir cfg;
  WriteFile(cfg.path() / "cortex.yml", "auth:\n  rate_limit: 0.5\n  rate_burst: 3\n");
  Daemon d({"--config", (cfg.path() / "cortex.yml").string()});
  ASSERT_DAEMON(d);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Get(d.client(), "/registry/manifests").status, 200) << i;
  }
  auto r = d.client().Get("/registry/manifests");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 429) << r->body;
  EXPECT_THAT(r->body, HasSubstr("rate_limited"));
  std::string retry;
  for (const auto& [name, value] : r->headers) {
    if (name == "Retry-After") retry = value;
  }
  EXPECT_EQ(retry, "2") << "one token comes back in 2 s at 0.5 a second";
  // Health checks are limited too (by address), but the limit is per caller, not global: a
  // keyed caller would have a bucket of its own (see the table test's calls, unlimited there).
}

TEST(AuthStartup, RefusesToRunOpenOnANetworkOrWithoutAKey) {
  // A port on every address (the registry's own): authentication turns on, and there is no key.
  {
    TempDir cfg;
    WriteFile(cfg.path() / "cortex.yml", "services:\n  registry: 0.0.0.0:0\n");
    Daemon open({"--config", (cfg.path() / "cortex.yml").string()});
    EXPECT_FALSE(open.ok());
    EXPECT_NE(open.Stop(), 0);
    EXPECT_THAT(open.log(), HasSubstr("no API key")) << open.log();
    EXPECT_THAT(open.log(), HasSubstr("cortex auth create-key")) << open.log();
  }
  {
    TempDir cfg;
    WriteFile(cfg.path() / "cortex.yml", "auth:\n  mode: off\nservices:\n  registry: 0.0.0.0:0\n");
    Daemon off({"--config", (cfg.path() / "cortex.yml").string()});
    EXPECT_FALSE(off.ok());
    EXPECT_NE(off.Stop(), 0);
    EXPECT_THAT(off.log(), HasSubstr("anyone who reaches it could run code")) << off.log();
  }
}

}  // namespace
}  // namespace cortex::testing
