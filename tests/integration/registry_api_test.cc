// Integration tests of the registry HTTP API: the real `cortex serve` on a free port, driven over
// HTTP. See hot_reload_test.cc for the file-watching half.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "integration/daemon.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using ::testing::HasSubstr;

// ---- Helpers ------------------------------------------------------------------------------

// One HTTP answer; `json` is discarded when the body is not JSON.
struct Reply {
  int status = 0;  // 0: transport failure
  std::string body;
  Json json;
  std::string content_type;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
  http::Headers headers;
};

Reply ToReply(const Result<http::ClientResponse>& r) {
  Reply out;
  if (!r.ok()) {
    ADD_FAILURE() << "transport failure: " << r.status().ToString();
    return out;
  }
  out.status = r->status;
  out.body = r->body;
  out.headers = r->headers;
  out.json = Json::parse(r->body, nullptr, false);
  auto ct = r->headers.find("Content-Type");
  if (ct != r->headers.end()) out.content_type = ct->second;
  return out;
}

Reply Get(Daemon& d, const std::string& path, const http::Headers& headers = {}) {
  return ToReply(d.client().Get(path, headers));
}
Reply Post(Daemon& d, const std::string& path, const std::string& body,
           const std::string& content_type = "application/json") {
  return ToReply(d.client().Post(path, body, content_type));
}
Reply Delete(Daemon& d, const std::string& path) { return ToReply(d.client().Delete(path)); }

std::string ErrorCode(const Reply& r) {
  if (!r.json.is_object() || !r.json.contains("error")) return "<no error object: " + r.body + ">";
  return r.json["error"].value("code", "<no code>");
}
std::string ErrorMessage(const Reply& r) {
  if (!r.json.is_object() || !r.json.contains("error")) return "";
  return r.json["error"].value("message", "");
}

// A valid Tool manifest (an API tool: no entrypoint file needed). `extra` is appended as more
// top-level YAML.
std::string ToolYaml(const std::string& name, const std::string& summary = "a test tool",
                     const std::string& extra = "") {
  return "kind: Tool\nname: " + name + "\nversion: \"1.0\"\nsummary: " + summary +
         "\ndescription: A tool for the integration tests.\nimplementation:\n  type: api\n" + extra;
}

// A valid Relic manifest (no required spec fields).
std::string RelicYaml(const std::string& name, const std::string& extra = "") {
  return "kind: Relic\nname: " + name + "\ndescription: A relic.\n" + extra;
}

// A Markdown agent whose persona is its body.
std::string AgentMd(const std::string& name, const std::string& front_extra = "",
                    const std::string& body = "You are a helpful test agent.\n") {
  return "---\nkind: Agent\nname: " + name + "\nsummary: an agent\n" + front_extra + "---\n" + body;
}

// Every path under `root` (files and folders, hidden ones too), relative, sorted.
std::vector<std::string> Tree(const fs::path& root) {
  std::vector<std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    out.push_back(fs::relative(it->path(), root).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// The entry of `list` (array of objects) whose `field` equals `value`, or null.
Json FindBy(const Json& list, const std::string& field, const std::string& value) {
  if (!list.is_array()) return nullptr;
  for (const Json& j : list) {
    if (j.is_object() && j.contains(field) && j[field] == value) return j;
  }
  return nullptr;
}

std::vector<std::string> Strings(const Json& list, const std::string& field) {
  std::vector<std::string> out;
  if (!list.is_array()) return out;
  for (const Json& j : list) out.push_back(j.value(field, ""));
  return out;
}

// A port nobody listens on right now (bind port 0, read it back, close).
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

#define ASSERT_DAEMON(d) ASSERT_TRUE((d).ok()) << "cortex serve did not start:\n" << (d).log()

// A registry with a bit of everything, written before the server starts.
void WriteSampleRegistry(const fs::path& m) {
  WriteFile(m / "tools/calculator/tool.yml", ToolYaml("calculator", "adds numbers"));
  WriteFile(m / "tools/clock/tool.yml", ToolYaml("clock", "tells the time"));
  WriteFile(m / "agents/helper/agent.md",
            AgentMd("helper", "import:\n  tools: [calculator]\n", "Help the user.\n"));
  WriteFile(m / "relics/store/relic.yml", RelicYaml("store"));
}

// ---- Health, routing ----------------------------------------------------------------------

TEST(RegistryApi, HealthEndpoints) {
  Daemon d;
  ASSERT_DAEMON(d);
  Reply z = Get(d, "/healthz");
  EXPECT_EQ(z.status, 200);
  EXPECT_EQ(z.json, Json::parse(R"({"status":"ok"})"));
  EXPECT_THAT(z.content_type, HasSubstr("application/json"));

  Reply h = Get(d, "/health");
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.json.value("status", ""), "healthy");
  EXPECT_EQ(h.json.value("service", ""), "cortex");
  EXPECT_FALSE(h.json.value("version", "").empty()) << h.body;
}

TEST(RegistryApi, UnknownRouteIs404Json) {
  Daemon d;
  ASSERT_DAEMON(d);
  for (const char* path : {"/nope", "/registry/nope", "/registry/manifest/tool"}) {
    Reply r = Get(d, path);
    EXPECT_EQ(r.status, 404) << path;
    EXPECT_EQ(ErrorCode(r), "not_found") << path << ": " << r.body;
    EXPECT_THAT(ErrorMessage(r), HasSubstr(path));
    EXPECT_THAT(r.content_type, HasSubstr("application/json"));
  }
}

TEST(RegistryApi, WrongMethodIs405) {
  Daemon d;
  ASSERT_DAEMON(d);
  Reply r = Delete(d, "/healthz");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(ErrorCode(r), "method_not_allowed") << r.body;
  EXPECT_THAT(r.header("Allow"), HasSubstr("GET"));

  Reply p = Post(d, "/registry/status", "{}");
  EXPECT_EQ(p.status, 405);
  EXPECT_EQ(ErrorCode(p), "method_not_allowed") << p.body;

  Reply g = Get(d, "/registry/sync");
  EXPECT_EQ(g.status, 405);
  EXPECT_THAT(g.header("Allow"), HasSubstr("POST"));
}

// ---- Listing and reading ------------------------------------------------------------------

TEST(RegistryApi, ListManifests) {
  Daemon d({}, WriteSampleRegistry);
  ASSERT_DAEMON(d);

  Reply all = Get(d, "/registry/manifests");
  ASSERT_EQ(all.status, 200) << all.body;
  EXPECT_EQ(all.json["count"], 4);
  EXPECT_GE(all.json["generation"].get<int>(), 1);
  // Sorted by kind (Tool, Agent, Relic, ...), then name.
  std::vector<std::string> names = Strings(all.json["manifests"], "name");
  EXPECT_EQ(names, (std::vector<std::string>{"calculator", "clock", "helper", "store"}));
  Json calc = FindBy(all.json["manifests"], "name", "calculator");
  EXPECT_EQ(calc["kind"], "Tool");
  EXPECT_EQ(calc["version"], "1.0");
  EXPECT_EQ(calc["summary"], "adds numbers");
  EXPECT_EQ(calc["path"], "tools/calculator/tool.yml");
  EXPECT_EQ(calc["resolved"], true);

  Reply tools = Get(d, "/registry/manifests?kind=tool");
  ASSERT_EQ(tools.status, 200) << tools.body;
  EXPECT_EQ(tools.json["count"], 2);
  EXPECT_EQ(Strings(tools.json["manifests"], "kind"), (std::vector<std::string>{"Tool", "Tool"}));

  Reply agents = Get(d, "/registry/manifests?kind=Agents");
  ASSERT_EQ(agents.status, 200) << agents.body;
  EXPECT_EQ(Strings(agents.json["manifests"], "name"), (std::vector<std::string>{"helper"}));

  Reply none = Get(d, "/registry/manifests?kind=workflow");
  ASSERT_EQ(none.status, 200) << none.body;
  EXPECT_EQ(none.json["count"], 0);
  EXPECT_TRUE(none.json["manifests"].empty());

  Reply bogus = Get(d, "/registry/manifests?kind=bogus");
  EXPECT_EQ(bogus.status, 400);
  EXPECT_EQ(ErrorCode(bogus), "invalid_argument") << bogus.body;
  EXPECT_THAT(ErrorMessage(bogus), HasSubstr("bogus"));

  // The per-kind name listing.
  Reply tool_names = Get(d, "/registry/tools");
  ASSERT_EQ(tool_names.status, 200) << tool_names.body;
  EXPECT_EQ(tool_names.json, Json::parse(R"({"Tool":["calculator","clock"]})"));
}

TEST(RegistryApi, GetManifestTypedJson) {
  Daemon d({}, WriteSampleRegistry);
  ASSERT_DAEMON(d);
  Reply r = Get(d, "/registry/manifest/tool/calculator");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.content_type, HasSubstr("application/json"));
  const Json& j = r.json;
  EXPECT_EQ(j["kind"], "Tool");
  EXPECT_EQ(j["name"], "calculator");
  EXPECT_EQ(j["path"], "tools/calculator/tool.yml");
  EXPECT_EQ(j["resolved"], true);
  EXPECT_EQ(j["stale"], false);
  EXPECT_TRUE(j["problems"].empty());
  EXPECT_TRUE(j["warnings"].is_array());
  EXPECT_FALSE(j.contains("latest_errors"));
  EXPECT_FALSE(j.contains("raw"));
  EXPECT_FALSE(j.contains("body"));  // a YAML file has no Markdown body
  EXPECT_THAT(j.value("loaded_at", ""),
              ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z"));
  // The typed manifest, with canonical field names and defaults filled in.
  const Json& m = j["manifest"];
  EXPECT_EQ(m["kind"], "Tool");
  EXPECT_EQ(m["name"], "calculator");
  EXPECT_EQ(m["version"], "1.0");
  EXPECT_EQ(m["summary"], "adds numbers");
  EXPECT_EQ(m["description"], "A tool for the integration tests.");
  EXPECT_EQ(m["state"], "unstable");
  EXPECT_EQ(m["implementation"]["type"], "api");
  EXPECT_TRUE(m["parameters"].is_array());
  EXPECT_TRUE(j["dependencies"].is_array());
  EXPECT_TRUE(j["dependencies"].empty());
}

TEST(RegistryApi, GetMarkdownManifestHasBody) {
  Daemon d({}, WriteSampleRegistry);
  ASSERT_DAEMON(d);
  Reply r = Get(d, "/registry/manifest/agent/helper");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["path"], "agents/helper/agent.md");
  EXPECT_EQ(r.json["body"], "Help the user.");
  EXPECT_EQ(r.json["manifest"]["kind"], "Agent");
  EXPECT_EQ(r.json["manifest"]["summary"], "an agent");
  ASSERT_EQ(r.json["dependencies"].size(), 1u) << r.body;
  EXPECT_EQ(r.json["dependencies"][0]["target"], "Tool/calculator");
}

TEST(RegistryApi, GetManifestRawAndAsFileText) {
  const std::string tool_text = ToolYaml("calculator", "adds numbers");
  const std::string agent_text = AgentMd("helper", "", "Help the user.\n");
  Daemon d({}, [&](const fs::path& m) {
    WriteFile(m / "tools/calculator/tool.yml", tool_text);
    WriteFile(m / "agents/helper/agent.md", agent_text);
  });
  ASSERT_DAEMON(d);

  // ?raw=true: the typed JSON plus the file's text.
  Reply raw = Get(d, "/registry/manifest/tool/calculator?raw=true");
  ASSERT_EQ(raw.status, 200) << raw.body;
  EXPECT_EQ(raw.json.value("raw", ""), tool_text);
  EXPECT_EQ(raw.json["manifest"]["name"], "calculator");
  Reply raw_false = Get(d, "/registry/manifest/tool/calculator?raw=false");
  EXPECT_FALSE(raw_false.json.contains("raw")) << raw_false.body;

  // Accept: application/yaml answers the file itself.
  Reply yaml = Get(d, "/registry/manifest/tool/calculator", {{"Accept", "application/yaml"}});
  ASSERT_EQ(yaml.status, 200);
  EXPECT_EQ(yaml.body, tool_text);
  EXPECT_THAT(yaml.content_type, HasSubstr("application/yaml"));

  // So does ?format=raw.
  Reply fmt = Get(d, "/registry/manifest/tool/calculator?format=raw");
  ASSERT_EQ(fmt.status, 200);
  EXPECT_EQ(fmt.body, tool_text);

  // A Markdown file is answered as Markdown, front matter included.
  Reply md = Get(d, "/registry/manifest/agent/helper", {{"Accept", "text/markdown"}});
  ASSERT_EQ(md.status, 200);
  EXPECT_EQ(md.body, agent_text);
  EXPECT_THAT(md.content_type, HasSubstr("text/markdown"));
  Reply md_yaml = Get(d, "/registry/manifest/agent/helper", {{"Accept", "application/yaml"}});
  EXPECT_EQ(md_yaml.body, agent_text);
  EXPECT_THAT(md_yaml.content_type, HasSubstr("text/markdown"));
}

TEST(RegistryApi, KindInAnyCaseOrPlural) {
  Daemon d({}, WriteSampleRegistry);
  ASSERT_DAEMON(d);
  for (const char* kind : {"Tool", "tool", "TOOL", "tOoL", "tools", "Tools", "TOOLS"}) {
    Reply r = Get(d, std::string("/registry/manifest/") + kind + "/calculator");
    EXPECT_EQ(r.status, 200) << kind << ": " << r.body;
    EXPECT_EQ(r.json.value("name", ""), "calculator") << kind;
  }
  Reply agent = Get(d, "/registry/manifest/AGENTS/helper");
  EXPECT_EQ(agent.status, 200) << agent.body;

  Reply bad = Get(d, "/registry/manifest/gadget/calculator");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(ErrorCode(bad), "invalid_argument") << bad.body;
  EXPECT_THAT(ErrorMessage(bad), HasSubstr("gadget"));
}

TEST(RegistryApi, MissingNameIs404WithDidYouMean) {
  Daemon d({}, WriteSampleRegistry);
  ASSERT_DAEMON(d);
  Reply r = Get(d, "/registry/manifest/tool/calculater");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(ErrorCode(r), "not_found") << r.body;
  EXPECT_THAT(ErrorMessage(r), HasSubstr("no Tool named 'calculater'"));
  EXPECT_THAT(ErrorMessage(r), HasSubstr("did you mean 'calculator'?"));

  // Nothing close: no suggestion.
  Reply far = Get(d, "/registry/manifest/tool/zzzzzzzzzzzzzzzz");
  EXPECT_EQ(far.status, 404);
  EXPECT_THAT(ErrorMessage(far), ::testing::Not(HasSubstr("did you mean")));

  // A name of another kind is not found under this kind.
  Reply other = Get(d, "/registry/manifest/relic/calculator");
  EXPECT_EQ(other.status, 404) << other.body;
}

// ---- Apply (POST /registry/manifests) ------------------------------------------------------

TEST(RegistryApi, PostYamlCreatesThenUpdates) {
  Daemon d;
  ASSERT_DAEMON(d);
  const std::string text = ToolYaml("adder", "adds");
  Reply created = Post(d, "/registry/manifests", text, "application/yaml");
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(created.json["key"], "Tool/adder");
  EXPECT_EQ(created.json["path"], "tools/adder/tool.yml");
  EXPECT_EQ(created.json["created"], true);
  EXPECT_EQ(created.json["resolved"], true);
  EXPECT_TRUE(created.json["warnings"].empty());
  const fs::path file = d.manifests_dir() / "tools/adder/tool.yml";
  ASSERT_TRUE(fs::is_regular_file(file));
  EXPECT_EQ(ReadFile(file), text);
  // No temp file left behind.
  EXPECT_EQ(Tree(d.manifests_dir() / "tools/adder"), (std::vector<std::string>{"tool.yml"}));

  // Served at once (the apply publishes; no need to wait for the watcher).
  Reply got = Get(d, "/registry/manifest/tool/adder");
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.json["manifest"]["summary"], "adds");
  EXPECT_GT(created.json["generation"].get<int>(), 0);

  // The same again: 200, not created.
  Reply again = Post(d, "/registry/manifests", text, "application/yaml");
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.json["created"], false);
  EXPECT_EQ(again.json["path"], "tools/adder/tool.yml");

  // A change replaces the file.
  const std::string changed = ToolYaml("adder", "adds, faster");
  Reply update = Post(d, "/registry/manifests", changed, "application/yaml");
  EXPECT_EQ(update.status, 200) << update.body;
  EXPECT_EQ(ReadFile(file), changed);
  EXPECT_EQ(Get(d, "/registry/manifest/tool/adder").json["manifest"]["summary"], "adds, faster");
  EXPECT_GT(update.json["generation"].get<int>(), created.json["generation"].get<int>());
}

TEST(RegistryApi, PostReplacesTheFileThatDefinesTheManifest) {
  Daemon d({}, [](const fs::path& m) {
    WriteFile(m / "custom/place/my-tool.yaml", ToolYaml("placed", "v1"));
  });
  ASSERT_DAEMON(d);
  Reply r = Post(d, "/registry/manifests", ToolYaml("placed", "v2"), "application/yaml");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["path"], "custom/place/my-tool.yaml");
  EXPECT_EQ(ReadFile(d.manifests_dir() / "custom/place/my-tool.yaml"), ToolYaml("placed", "v2"));
  EXPECT_FALSE(fs::exists(d.manifests_dir() / "tools/placed"));
}

TEST(RegistryApi, PostJsonContent) {
  Daemon d;
  ASSERT_DAEMON(d);
  Json body = {{"content", ToolYaml("jsontool", "from json")}, {"format", "yaml"}};
  Reply r = Post(d, "/registry/manifests", body.dump());
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.json["key"], "Tool/jsontool");
  EXPECT_EQ(ReadFile(d.manifests_dir() / "tools/jsontool/tool.yml"), body["content"]);

  // format defaults to yaml.
  Json no_format = {{"content", ToolYaml("jsontool2")}};
  Reply r2 = Post(d, "/registry/manifests", no_format.dump());
  EXPECT_EQ(r2.status, 201) << r2.body;
  EXPECT_TRUE(fs::exists(d.manifests_dir() / "tools/jsontool2/tool.yml"));

  // Markdown through JSON.
  Json md = {{"content", AgentMd("jsonagent", "", "Be brief.\n")}, {"format", "markdown"}};
  Reply r3 = Post(d, "/registry/manifests", md.dump());
  ASSERT_EQ(r3.status, 201) << r3.body;
  EXPECT_EQ(r3.json["path"], "agents/jsonagent/agent.md");
  EXPECT_EQ(Get(d, "/registry/manifest/agent/jsonagent").json["body"], "Be brief.");

  // The manifest itself as a JSON object (JSON is YAML).
  Json manifest = {{"kind", "Relic"}, {"name", "jsonrelic"}, {"description", "as JSON"}};
  Reply r4 = Post(d, "/registry/manifests", manifest.dump());
  EXPECT_EQ(r4.status, 201) << r4.body;
  EXPECT_EQ(Get(d, "/registry/manifest/relic/jsonrelic").json["manifest"]["description"],
            "as JSON");

  // A bad format is refused.
  Json bad = {{"content", ToolYaml("x")}, {"format", "toml"}};
  Reply r5 = Post(d, "/registry/manifests", bad.dump());
  EXPECT_EQ(r5.status, 400);
  EXPECT_EQ(ErrorCode(r5), "invalid_argument") << r5.body;
  Json not_string = {{"content", 42}};
  Reply r6 = Post(d, "/registry/manifests", not_string.dump());
  EXPECT_EQ(r6.status, 400);
  EXPECT_EQ(ErrorCode(r6), "invalid_argument") << r6.body;
  EXPECT_FALSE(fs::exists(d.manifests_dir() / "tools/x"));
}

TEST(RegistryApi, PostJsonWithNonStringFormatIs400) {
  Daemon d;
  ASSERT_DAEMON(d);
  Json body = {{"content", ToolYaml("numformat")}, {"format", 5}};
  Reply r = Post(d, "/registry/manifests", body.dump());
  // Regression: this threw inside the handler (nlohmann value() type_error 302) and answered
  // 500 internal.
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(ErrorCode(r), "invalid_argument");
  EXPECT_FALSE(fs::exists(d.manifests_dir() / "tools/numformat"));
}

TEST(RegistryApi, PostInvalidManifestIs400WithDiagnosticsAndWritesNothing) {
  Daemon d({}, WriteSampleRegistry);
  ASSERT_DAEMON(d);
  const std::vector<std::string> before = Tree(d.manifests_dir());
  const int gen_before = Get(d, "/registry/status").json["generation"].get<int>();

  // Line 5, column 3: the implementation block lacks its entrypoint.
  const std::string missing_entrypoint =
      "kind: Tool\nname: broken\ndescription: d\nimplementation:\n  type: python\n";
  Reply r = Post(d, "/registry/manifests", missing_entrypoint, "application/yaml");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorCode(r), "invalid_argument") << r.body;
  ASSERT_TRUE(r.json["error"].contains("details")) << r.body;
  const Json& diags = r.json["error"]["details"]["diagnostics"];
  ASSERT_TRUE(diags.is_array() && !diags.empty()) << r.body;
  EXPECT_EQ(diags[0]["severity"], "error");
  EXPECT_EQ(diags[0]["line"], 5);
  EXPECT_EQ(diags[0]["column"], 3);
  EXPECT_THAT(diags[0].value("message", ""), HasSubstr("entrypoint"));
  EXPECT_TRUE(r.json["error"]["details"]["warnings"].is_array());

  // Broken YAML: the position of the syntax error.
  Reply y = Post(d, "/registry/manifests", "kind: Tool\nname: [\n", "application/yaml");
  EXPECT_EQ(y.status, 400);
  const Json& ydiags = y.json["error"]["details"]["diagnostics"];
  ASSERT_FALSE(ydiags.empty()) << y.body;
  EXPECT_GT(ydiags[0]["line"].get<int>(), 0);
  EXPECT_THAT(ydiags[0].value("message", ""), HasSubstr("invalid YAML"));

  // An invalid edit of an existing manifest leaves it alone.
  Reply e = Post(d, "/registry/manifests",
                 "kind: Tool\nname: calculator\ndescription: d\nimplementation:\n  type: nope\n",
                 "application/yaml");
  EXPECT_EQ(e.status, 400) << e.body;
  EXPECT_EQ(ReadFile(d.manifests_dir() / "tools/calculator/tool.yml"),
            ToolYaml("calculator", "adds numbers"));

  EXPECT_EQ(Tree(d.manifests_dir()), before);
  EXPECT_EQ(Get(d, "/registry/status").json["generation"].get<int>(), gen_before);
  EXPECT_EQ(Get(d, "/registry/manifest/tool/broken").status, 404);
}

TEST(RegistryApi, PostBadOrEmptyBodyIs400) {
  Daemon d;
  ASSERT_DAEMON(d);
  struct Case {
    std::string body, content_type, message;
  };
  const std::vector<Case> cases = {
      {"{not json", "application/json", "not valid JSON"},
      {"[1, 2]", "application/json", "JSON object"},
      {"", "application/yaml", "empty"},
      {"", "application/json", "not valid JSON"},
      {R"({"content": ""})", "application/json", "empty"},
      {"", "text/markdown", "empty"},
      {"# Just a README\n\nNo front matter.\n", "text/markdown", "front matter"},
      {"just a string\n", "application/yaml", "mapping"},
      {"name: x\n", "application/yaml", "kind"},
  };
  for (const Case& c : cases) {
    Reply r = Post(d, "/registry/manifests", c.body, c.content_type);
    EXPECT_EQ(r.status, 400) << c.content_type << " '" << c.body << "': " << r.body;
    EXPECT_EQ(ErrorCode(r), "invalid_argument") << r.body;
    EXPECT_THAT(ErrorMessage(r), HasSubstr(c.message)) << c.content_type << " '" << c.body << "'";
  }
  EXPECT_TRUE(Tree(d.manifests_dir()).empty());
}

TEST(RegistryApi, PostWithUnknownFieldWarnsOrFailsWhenStrict) {
  const std::string text = ToolYaml("odd") + "frobnicate: 3\n";  // line 8
  {
    Daemon d;
    ASSERT_DAEMON(d);
    Reply r = Post(d, "/registry/manifests", text, "application/yaml");
    ASSERT_EQ(r.status, 201) << r.body;
    ASSERT_EQ(r.json["warnings"].size(), 1u) << r.body;
    const Json& w = r.json["warnings"][0];
    EXPECT_EQ(w["severity"], "warning");
    EXPECT_EQ(w["file"], "tools/odd/tool.yml");
    EXPECT_EQ(w["line"], 8);
    EXPECT_EQ(w["column"], 1);
    EXPECT_THAT(w.value("message", ""), HasSubstr("unknown field 'frobnicate'"));
    Reply got = Get(d, "/registry/manifest/tool/odd");
    EXPECT_EQ(got.json["unknown_fields"], Json::parse(R"({"frobnicate": 3})")) << got.body;
    EXPECT_EQ(got.json["warnings"].size(), 1u) << got.body;
  }
  {
    Daemon strict({"--strict"});
    ASSERT_DAEMON(strict);
    Reply r = Post(strict, "/registry/manifests", text, "application/yaml");
    EXPECT_EQ(r.status, 400) << r.body;
    const Json& diags = r.json["error"]["details"]["diagnostics"];
    ASSERT_FALSE(diags.empty()) << r.body;
    EXPECT_EQ(diags[0]["line"], 8);
    EXPECT_FALSE(fs::exists(strict.manifests_dir() / "tools/odd"));
  }
}

TEST(RegistryApi, PostOversizedBodies) {
  Daemon d;
  ASSERT_DAEMON(d);
  // Over the 1 MiB manifest limit: a validation error.
  std::string big = ToolYaml("big") + "# " + std::string(2u << 20, 'x') + "\n";
  Reply r = Post(d, "/registry/manifests", big, "application/yaml");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorCode(r), "invalid_argument");
  EXPECT_THAT(ErrorMessage(r), HasSubstr("over the limit of 1048576 bytes"));
  // Over the 8 MiB request limit: refused by the server.
  Reply huge = Post(d, "/registry/manifests", std::string(9u << 20, 'x'), "application/yaml");
  EXPECT_EQ(huge.status, 413);
  EXPECT_EQ(ErrorCode(huge), "payload_too_large") << huge.body;
  EXPECT_TRUE(Tree(d.manifests_dir()).empty());
  EXPECT_EQ(Get(d, "/healthz").status, 200);
}

TEST(RegistryApi, PostMarkdownWithFrontMatter) {
  Daemon d;
  ASSERT_DAEMON(d);
  const std::string text = AgentMd("writer", "tags: [docs]\n", "You write documentation.\n");
  Reply r = Post(d, "/registry/manifests", text, "text/markdown");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.json["key"], "Agent/writer");
  EXPECT_EQ(r.json["path"], "agents/writer/agent.md");
  EXPECT_EQ(ReadFile(d.manifests_dir() / "agents/writer/agent.md"), text);
  Reply got = Get(d, "/registry/manifest/agent/writer");
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.json["body"], "You write documentation.");
  EXPECT_EQ(got.json["manifest"]["tags"], Json::parse(R"(["docs"])"));

  // The same manifest as YAML targets a Markdown file: refused, not duplicated.
  Reply yaml = Post(d, "/registry/manifests",
                    "kind: Agent\nname: writer\npersona:\n  agent: p.md\n", "application/yaml");
  EXPECT_EQ(yaml.status, 409) << yaml.body;
  EXPECT_EQ(ErrorCode(yaml), "failed_precondition");
  EXPECT_FALSE(fs::exists(d.manifests_dir() / "agents/writer/agent.yml"));
}

// ---- Delete -------------------------------------------------------------------------------

TEST(RegistryApi, DeleteManifest) {
  Daemon d({}, WriteSampleRegistry);
  ASSERT_DAEMON(d);
  const fs::path file = d.manifests_dir() / "tools/clock/tool.yml";
  ASSERT_TRUE(fs::exists(file));
  Reply r = Delete(d, "/registry/manifest/tools/clock");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["deleted"], "Tool/clock");
  EXPECT_GT(r.json["generation"].get<int>(), 1);
  EXPECT_FALSE(fs::exists(file));
  EXPECT_EQ(Get(d, "/registry/manifest/tool/clock").status, 404);
  EXPECT_EQ(Get(d, "/registry/manifests?kind=tool").json["count"], 1);

  Reply again = Delete(d, "/registry/manifest/tool/clock");
  EXPECT_EQ(again.status, 404);
  EXPECT_EQ(ErrorCode(again), "not_found") << again.body;

  Reply never = Delete(d, "/registry/manifest/agent/nobody");
  EXPECT_EQ(never.status, 404);
  EXPECT_EQ(ErrorCode(never), "not_found") << never.body;

  Reply bad_kind = Delete(d, "/registry/manifest/gadget/clock");
  EXPECT_EQ(bad_kind.status, 400) << bad_kind.body;

  // A Markdown manifest too.
  Reply md = Delete(d, "/registry/manifest/agent/helper");
  EXPECT_EQ(md.status, 200) << md.body;
  EXPECT_FALSE(fs::exists(d.manifests_dir() / "agents/helper/agent.md"));
  EXPECT_EQ(Get(d, "/registry/manifest/agent/helper").status, 404);
}

// ---- Dependencies, graph, errors, schema, status, sync ------------------------------------

TEST(RegistryApi, DependencyOrderPutsDependenciesFirst) {
  Daemon d({}, [](const fs::path& m) {
    // helper -> {wrapper, store}; wrapper -> {base}; store -> {base-relic}.
    WriteFile(m / "tools/base/tool.yml", ToolYaml("base"));
    WriteFile(m / "tools/wrapper/tool.yml",
              ToolYaml("wrapper", "wraps", "import:\n  tools: [base]\n"));
    WriteFile(m / "relics/base-relic/relic.yml", RelicYaml("base-relic"));
    WriteFile(m / "relics/store/relic.yml",
              RelicYaml("store", "import:\n  relics: [base-relic]\n"));
    WriteFile(m / "agents/helper/agent.md",
              AgentMd("helper", "import:\n  tools: [wrapper]\n  relics: [store]\n"));
    WriteFile(m / "tools/unrelated/tool.yml", ToolYaml("unrelated"));
  });
  ASSERT_DAEMON(d);
  Reply r = Get(d, "/registry/dependencies/agent/helper");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["root"], "Agent/helper");
  EXPECT_EQ(r.json["resolved"], true);
  std::vector<std::string> order;
  for (const Json& e : r.json["order"]) {
    order.push_back(e["kind"].get<std::string>() + "/" + e["name"].get<std::string>());
  }
  ASSERT_EQ(order.size(), 4u) << r.body;
  auto pos = [&](const std::string& key) {
    return std::find(order.begin(), order.end(), key) - order.begin();
  };
  EXPECT_LT(pos("Tool/base"), pos("Tool/wrapper")) << r.body;
  EXPECT_LT(pos("Relic/base-relic"), pos("Relic/store")) << r.body;
  EXPECT_EQ(std::count(order.begin(), order.end(), "Tool/unrelated"), 0);
  EXPECT_EQ(std::count(order.begin(), order.end(), "Agent/helper"), 0);  // not itself
  // Direct dependencies only in "dependencies".
  EXPECT_EQ(Strings(r.json["dependencies"], "target"),
            (std::vector<std::string>{"Tool/wrapper", "Relic/store"}));

  Reply leaf = Get(d, "/registry/dependencies/tool/base");
  ASSERT_EQ(leaf.status, 200);
  EXPECT_TRUE(leaf.json["order"].empty());

  Reply missing = Get(d, "/registry/dependencies/tool/nope");
  EXPECT_EQ(missing.status, 404);
}

TEST(RegistryApi, ValidateDependencies) {
  Daemon d({}, [](const fs::path& m) {
    WriteFile(m / "agents/helper/agent.md",
              AgentMd("helper", "import:\n  tools: [calculator, clock]\n"));
    WriteFile(m / "tools/clock/tool.yml", ToolYaml("clock"));
  });
  ASSERT_DAEMON(d);
  for (const char* method : {"GET", "POST"}) {
    Reply r = std::string(method) == "GET"
                  ? Get(d, "/registry/validate-dependencies/agent/helper")
                  : Post(d, "/registry/validate-dependencies/agent/helper", "{}");
    ASSERT_EQ(r.status, 200) << method << ": " << r.body;
    EXPECT_EQ(r.json["valid"], false);
    EXPECT_EQ(r.json["dependencies_satisfied"], false);
    ASSERT_EQ(r.json["missing_dependencies"].size(), 1u) << r.body;
    const Json& miss = r.json["missing_dependencies"][0];
    EXPECT_EQ(miss["reference"], "calculator");
    EXPECT_EQ(miss["kind"], "Tool");
    EXPECT_EQ(miss["field"], "import.tools[0]");
    EXPECT_EQ(miss["resolved"], false);
    EXPECT_THAT(miss.value("error", ""), HasSubstr("no Tool named 'calculator'"));
    ASSERT_EQ(r.json["errors"].size(), 1u);
    EXPECT_THAT(r.json["errors"][0].get<std::string>(), HasSubstr("import.tools[0]"));
  }

  // Add the missing tool: valid.
  ASSERT_EQ(Post(d, "/registry/manifests", ToolYaml("calculator"), "application/yaml").status, 201);
  Reply ok = Get(d, "/registry/validate-dependencies/agent/helper");
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.json["valid"], true) << ok.body;
  EXPECT_TRUE(ok.json["missing_dependencies"].empty());
  EXPECT_TRUE(ok.json["errors"].empty());
  EXPECT_TRUE(ok.json["transitive_problems"].empty());

  Reply absent = Get(d, "/registry/validate-dependencies/agent/nobody");
  EXPECT_EQ(absent.status, 404);
}

TEST(RegistryApi, ValidateDependenciesSeesTransitiveProblems) {
  Daemon d({}, [](const fs::path& m) {
    WriteFile(m / "agents/helper/agent.md", AgentMd("helper", "import:\n  tools: [wrapper]\n"));
    WriteFile(m / "tools/wrapper/tool.yml",
              ToolYaml("wrapper", "wraps", "import:\n  tools: [ghost]\n"));
  });
  ASSERT_DAEMON(d);
  Reply r = Get(d, "/registry/validate-dependencies/agent/helper");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["valid"], false);
  EXPECT_TRUE(r.json["missing_dependencies"].empty());
  ASSERT_EQ(r.json["transitive_problems"].size(), 1u) << r.body;
  EXPECT_THAT(r.json["transitive_problems"][0].get<std::string>(),
              HasSubstr("Tool/wrapper: import.tools[0]"));
}

TEST(RegistryApi, GraphJsonAndDot) {
  Daemon d({}, [](const fs::path& m) {
    WriteFile(m / "tools/calculator/tool.yml", ToolYaml("calculator"));
    WriteFile(m / "agents/helper/agent.md",
              AgentMd("helper", "import:\n  tools: [calculator, ghost]\n"));
  });
  ASSERT_DAEMON(d);
  Reply g = Get(d, "/registry/graph");
  ASSERT_EQ(g.status, 200) << g.body;
  EXPECT_EQ(Strings(g.json["nodes"], "id"),
            (std::vector<std::string>{"Tool/calculator", "Agent/helper"}));
  EXPECT_EQ(FindBy(g.json["nodes"], "id", "Agent/helper")["resolved"], false);
  EXPECT_EQ(FindBy(g.json["nodes"], "id", "Tool/calculator")["resolved"], true);
  ASSERT_EQ(g.json["edges"].size(), 2u) << g.body;
  Json to_calc = FindBy(g.json["edges"], "to", "Tool/calculator");
  EXPECT_EQ(to_calc["from"], "Agent/helper");
  EXPECT_EQ(to_calc["via"], "import");
  EXPECT_EQ(to_calc["field"], "import.tools[0]");
  Json to_ghost = FindBy(g.json["edges"], "missing", "ghost");
  EXPECT_EQ(to_ghost["from"], "Agent/helper");
  EXPECT_FALSE(to_ghost.value("error", "").empty());
  EXPECT_EQ(Get(d, "/registry/graph?format=json").json, g.json);

  Reply dot = Get(d, "/registry/graph?format=dot");
  ASSERT_EQ(dot.status, 200);
  EXPECT_THAT(dot.content_type, HasSubstr("text/vnd.graphviz"));
  EXPECT_THAT(dot.body, ::testing::StartsWith("digraph cortex {"));
  EXPECT_THAT(dot.body, HasSubstr("\"Agent/helper\" [color=red];"));
  EXPECT_THAT(dot.body, HasSubstr("\"Agent/helper\" -> \"Tool/calculator\" [label=\"import\"];"));
  EXPECT_THAT(dot.body, HasSubstr("\"missing Tool/ghost\" [style=dashed, color=red];"));
  EXPECT_THAT(dot.body, HasSubstr("\"Agent/helper\" -> \"missing Tool/ghost\""));
  EXPECT_THAT(dot.body, ::testing::EndsWith("}\n"));

  Reply bad = Get(d, "/registry/graph?format=svg");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(ErrorCode(bad), "invalid_argument");
}

TEST(RegistryApi, ErrorsListsBrokenFilesConflictsAndUnresolved) {
  Daemon d({}, [](const fs::path& m) {
    WriteFile(m / "tools/calculator/tool.yml", ToolYaml("calculator", "the real one"));
    WriteFile(m / "tools/extra/calculator-copy/tool.yml", ToolYaml("calculator", "a copy"));
    WriteFile(m / "tools/broken/tool.yml", "kind: Tool\nname: broken\ndescription: [\n");
    WriteFile(m / "agents/helper/agent.md", AgentMd("helper", "import:\n  tools: [ghost]\n"));
  });
  ASSERT_DAEMON(d);
  Reply r = Get(d, "/registry/errors");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_GE(r.json["generation"].get<int>(), 1);

  ASSERT_EQ(r.json["errors"].size(), 1u) << r.body;
  const Json& err = r.json["errors"][0];
  EXPECT_EQ(err["path"], "tools/broken/tool.yml");
  EXPECT_EQ(err["serving_last_good"], false);
  ASSERT_FALSE(err["diagnostics"].empty());
  EXPECT_EQ(err["diagnostics"][0]["file"], "tools/broken/tool.yml");
  EXPECT_GT(err["diagnostics"][0]["line"].get<int>(), 0);
  EXPECT_THAT(err["diagnostics"][0].value("message", ""), HasSubstr("invalid YAML"));

  // The file nearest the root wins.
  ASSERT_EQ(r.json["conflicts"].size(), 1u) << r.body;
  const Json& c = r.json["conflicts"][0];
  EXPECT_EQ(c["key"], "Tool/calculator");
  EXPECT_EQ(c["served"], "tools/calculator/tool.yml");
  EXPECT_EQ(c["ignored"], "tools/extra/calculator-copy/tool.yml");
  EXPECT_EQ(Get(d, "/registry/manifest/tool/calculator").json["manifest"]["summary"],
            "the real one");

  ASSERT_EQ(r.json["unresolved"].size(), 1u) << r.body;
  const Json& u = r.json["unresolved"][0];
  EXPECT_EQ(u["key"], "Agent/helper");
  EXPECT_EQ(u["path"], "agents/helper/agent.md");
  ASSERT_EQ(u["problems"].size(), 1u);
  EXPECT_THAT(u["problems"][0].get<std::string>(),
              HasSubstr("import.tools[0]: no Tool named 'ghost'"));
}

TEST(RegistryApi, SchemaOfAKind) {
  Daemon d;
  ASSERT_DAEMON(d);
  Reply r = Get(d, "/registry/schema/tool");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["$schema"], "https://json-schema.org/draft/2020-12/schema");
  EXPECT_EQ(r.json["title"], "Cortex Tool manifest");
  EXPECT_EQ(r.json["type"], "object");
  EXPECT_EQ(r.json["properties"]["kind"]["const"], "Tool");
  EXPECT_TRUE(r.json["properties"].contains("implementation"));
  EXPECT_TRUE(r.json["properties"].contains("execution"));  // an alias
  std::vector<std::string> required = r.json["required"].get<std::vector<std::string>>();
  EXPECT_THAT(required, ::testing::IsSupersetOf({"kind", "name", "implementation"}));

  for (const char* kind : {"agent", "Relics", "WORKFLOW", "monument"}) {
    Reply k = Get(d, std::string("/registry/schema/") + kind);
    EXPECT_EQ(k.status, 200) << kind << ": " << k.body;
    EXPECT_TRUE(k.json.is_object() && k.json.contains("properties")) << kind;
  }
  Reply bad = Get(d, "/registry/schema/gadget");
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(ErrorCode(bad), "invalid_argument");
}

TEST(RegistryApi, StatusCounts) {
  Daemon d({}, [](const fs::path& m) {
    WriteSampleRegistry(m);
    WriteFile(m / "tools/broken.yml", "kind: Tool\nname: [\n");
    WriteFile(m / "tools/deeper/calculator/tool.yml", ToolYaml("calculator", "dup"));
    WriteFile(m / "agents/lonely/agent.md", AgentMd("lonely", "import:\n  relics: [ghost]\n"));
    WriteFile(m / "README.md", "# Not a manifest\n");
  });
  ASSERT_DAEMON(d);
  Reply r = Get(d, "/registry/status");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["total_manifests"], 5);
  EXPECT_EQ(r.json["by_kind"],
            Json::parse(R"({"Tool":2,"Agent":2,"Relic":1,"Workflow":0,"Monument":0})"));
  EXPECT_EQ(r.json["unresolved"], 1);
  EXPECT_EQ(r.json["errors"], 1);
  EXPECT_EQ(r.json["conflicts"], 1);
  EXPECT_GE(r.json["generation"].get<int>(), 1);
  EXPECT_FALSE(r.json.value("last_updated", "").empty());
  EXPECT_EQ(r.json["manifests_root"], d.manifests_dir().string());

  // Applying bumps the generation and the counts.
  int gen = r.json["generation"].get<int>();
  ASSERT_EQ(Post(d, "/registry/manifests", ToolYaml("newtool"), "application/yaml").status, 201);
  Reply after = Get(d, "/registry/status");
  EXPECT_EQ(after.json["total_manifests"], 6);
  EXPECT_EQ(after.json["by_kind"]["Tool"], 3);
  EXPECT_GT(after.json["generation"].get<int>(), gen);
}

TEST(RegistryApi, SyncPicksUpFilesWithoutWatching) {
  Daemon d({"--no-watch"});
  ASSERT_DAEMON(d);
  EXPECT_EQ(Get(d, "/registry/status").json["total_manifests"], 0);
  WriteFile(d.manifests_dir() / "tools/late/tool.yml", ToolYaml("late", "written late"));
  // Not watching: nothing changes until a sync (checked once; absence cannot be waited for).
  EXPECT_EQ(Get(d, "/registry/manifest/tool/late").status, 404);

  Reply s = Post(d, "/registry/sync", "");
  ASSERT_EQ(s.status, 200) << s.body;
  EXPECT_EQ(s.json["status"], "synced");
  EXPECT_EQ(s.json["total_manifests"], 1);
  EXPECT_EQ(s.json["errors"], 0);
  EXPECT_EQ(s.json["conflicts"], 0);
  Reply got = Get(d, "/registry/manifest/tool/late");
  ASSERT_EQ(got.status, 200) << got.body;
  EXPECT_EQ(got.json["manifest"]["summary"], "written late");

  // Edits and removals too.
  WriteFile(d.manifests_dir() / "tools/late/tool.yml", ToolYaml("late", "edited"));
  WriteFile(d.manifests_dir() / "relics/r/relic.yml", RelicYaml("r"));
  ASSERT_EQ(Post(d, "/registry/sync", "").status, 200);
  EXPECT_EQ(Get(d, "/registry/manifest/tool/late").json["manifest"]["summary"], "edited");
  fs::remove(d.manifests_dir() / "tools/late/tool.yml");
  Reply s2 = Post(d, "/registry/sync", "");
  EXPECT_EQ(s2.json["total_manifests"], 1) << s2.body;
  EXPECT_GT(s2.json["generation"].get<int>(), s.json["generation"].get<int>());
  EXPECT_EQ(Get(d, "/registry/manifest/tool/late").status, 404);
}

// ---- Imports ------------------------------------------------------------------------------

TEST(RegistryApi, ImportsResolveEveryWayTheyCanBeWritten) {
  Daemon d({}, [](const fs::path& m) {
    WriteFile(m / "tools/calculator/tool.yml", ToolYaml("calculator"));
    WriteFile(m / "tools/clock/tool.yml", ToolYaml("clock"));
    WriteFile(m / "agents/team/helper/local-tool.yml", ToolYaml("local"));
    WriteFile(m / "agents/team/sibling/tool.yml", ToolYaml("sibling"));
    WriteFile(m / "agents/team/helper/agent.md",
              AgentMd("helper",
                      "import:\n"
                      "  tools:\n"
                      "    - calculator\n"               // bare name
                      "    - ./local-tool.yml\n"         // ./relative
                      "    - ../sibling/tool.yml\n"      // ../relative
                      "    - tools/clock/tool.yml\n"     // root-relative
                      "    - tools/calculator\n"         // a folder: its tool.yml
                      "    - ../../../tools/clock\n"));  // ../ to a folder
  });
  ASSERT_DAEMON(d);
  Reply r = Get(d, "/registry/manifest/agent/helper");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["resolved"], true) << r.body;
  EXPECT_TRUE(r.json["problems"].empty()) << r.body;
  const Json& deps = r.json["dependencies"];
  ASSERT_EQ(deps.size(), 6u) << r.body;
  EXPECT_EQ(Strings(deps, "target"),
            (std::vector<std::string>{"Tool/calculator", "Tool/local", "Tool/sibling", "Tool/clock",
                                      "Tool/calculator", "Tool/clock"}));
  for (const Json& dep : deps) {
    EXPECT_EQ(dep["resolved"], true) << dep.dump();
    EXPECT_EQ(dep["via"], "import");
    EXPECT_EQ(dep["kind"], "Tool");
  }
  EXPECT_EQ(deps[1]["reference"], "./local-tool.yml");
  EXPECT_EQ(deps[1]["field"], "import.tools[1]");
}

TEST(RegistryApi, ImportCycleReportedOnBothEntries) {
  Daemon d({}, [](const fs::path& m) {
    WriteFile(m / "relics/a/relic.yml", RelicYaml("alpha", "import:\n  relics: [../b]\n"));
    WriteFile(m / "relics/b/relic.yml", RelicYaml("beta", "import:\n  relics: [alpha]\n"));
    WriteFile(m / "relics/c/relic.yml", RelicYaml("gamma", "import:\n  relics: [alpha]\n"));
  });
  ASSERT_DAEMON(d);
  const std::string cycle = "import cycle: Relic/alpha -> Relic/beta -> Relic/alpha";
  for (const char* name : {"alpha", "beta"}) {
    Reply r = Get(d, std::string("/registry/manifest/relic/") + name);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.json["resolved"], false) << name;
    ASSERT_EQ(r.json["problems"].size(), 1u) << r.body;
    EXPECT_EQ(r.json["problems"][0], cycle) << name;
  }
  // gamma uses the cycle but is not in it.
  Reply gamma = Get(d, "/registry/manifest/relic/gamma");
  EXPECT_EQ(gamma.json["resolved"], true) << gamma.body;
  Reply errors = Get(d, "/registry/errors");
  EXPECT_EQ(Strings(errors.json["unresolved"], "key"),
            (std::vector<std::string>{"Relic/alpha", "Relic/beta"}));
  // The dependency order still terminates.
  Reply order = Get(d, "/registry/dependencies/relic/alpha");
  ASSERT_EQ(order.status, 200) << order.body;
  EXPECT_EQ(Strings(order.json["order"], "name"), (std::vector<std::string>{"beta"}));
}

TEST(RegistryApi, MissingImportsAreListedUnresolvedWithTheReason) {
  Daemon d({}, [](const fs::path& m) {
    WriteFile(m / "tools/calculator/tool.yml", ToolYaml("calculator"));
    WriteFile(m / "relics/store/relic.yml", RelicYaml("store"));
    WriteFile(m / "agents/helper/agent.md",
              AgentMd("helper",
                      "import:\n"
                      "  tools: [calculater, ./nowhere/tool.yml, ../../relics/store]\n"));
  });
  ASSERT_DAEMON(d);
  Reply r = Get(d, "/registry/manifest/agent/helper");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["resolved"], false);
  const Json& deps = r.json["dependencies"];
  ASSERT_EQ(deps.size(), 3u) << r.body;
  for (const Json& dep : deps) {
    EXPECT_EQ(dep["resolved"], false) << dep.dump();
    EXPECT_FALSE(dep.contains("target")) << dep.dump();
  }
  EXPECT_THAT(deps[0].value("error", ""),
              HasSubstr("no Tool named 'calculater' in the registry (did you mean 'calculator'?)"));
  EXPECT_THAT(deps[1].value("error", ""), HasSubstr("file ./nowhere/tool.yml not found"));
  EXPECT_THAT(deps[2].value("error", ""), HasSubstr("no Tool manifest at"));
  EXPECT_EQ(r.json["problems"].size(), 3u);

  Reply listed = Get(d, "/registry/manifests?kind=agent");
  Json helper = FindBy(listed.json["manifests"], "name", "helper");
  EXPECT_EQ(helper["resolved"], false);
  EXPECT_EQ(helper["problems"].size(), 3u) << helper.dump();
  Reply errors = Get(d, "/registry/errors");
  EXPECT_EQ(Strings(errors.json["unresolved"], "key"), (std::vector<std::string>{"Agent/helper"}));
}

// ---- Robustness ---------------------------------------------------------------------------

TEST(RegistryApi, DeepNestingIsAnErrorEntryAndTheServerStaysUp) {
  const std::string deep(10000, '[');
  Daemon d({}, [&](const fs::path& m) {
    WriteFile(m / "tools/deep/tool.yml", deep);
    WriteFile(m / "tools/deep-map/tool.yml", [] {
      std::string s;
      for (int i = 0; i < 5000; ++i) s += std::string(static_cast<size_t>(i), ' ') + "a:\n";
      return s;
    }());
    WriteFile(m / "tools/ok/tool.yml", ToolYaml("ok"));
  });
  ASSERT_DAEMON(d);
  Reply errors = Get(d, "/registry/errors");
  ASSERT_EQ(errors.status, 200) << errors.body;
  Json entry = FindBy(errors.json["errors"], "path", "tools/deep/tool.yml");
  ASSERT_FALSE(entry.is_null()) << errors.body;
  EXPECT_THAT(entry["diagnostics"][0].value("message", ""), HasSubstr("nesting deeper than"));
  EXPECT_FALSE(FindBy(errors.json["errors"], "path", "tools/deep-map/tool.yml").is_null())
      << errors.body;

  Reply post = Post(d, "/registry/manifests", deep, "application/yaml");
  EXPECT_EQ(post.status, 400) << post.body;
  Reply post_json =
      Post(d, "/registry/manifests", std::string(10000, '[') + std::string(10000, ']'));
  EXPECT_EQ(post_json.status, 400) << post_json.body;

  EXPECT_EQ(Get(d, "/healthz").status, 200);
  EXPECT_EQ(Get(d, "/registry/manifest/tool/ok").status, 200);
}

TEST(RegistryApi, ConcurrentGetsAllSucceed) {
  Daemon d({}, WriteSampleRegistry);
  ASSERT_DAEMON(d);
  const std::vector<std::string> paths = {"/registry/manifests",
                                          "/registry/manifest/tool/calculator",
                                          "/registry/status",
                                          "/registry/graph",
                                          "/registry/dependencies/agent/helper",
                                          "/registry/errors",
                                          "/healthz",
                                          "/registry/manifests?kind=agent"};
  constexpr int kThreads = 8, kPerThread = 100;
  std::atomic<int> ok{0};
  std::mutex mu;
  std::vector<std::string> failures;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      http::Client c(d.url());  // one client (one connection) per thread
      for (int i = 0; i < kPerThread; ++i) {
        const std::string& p = paths[static_cast<size_t>(t + i) % paths.size()];
        auto r = c.Get(p);
        if (r.ok() && r->status == 200) {
          ++ok;
        } else {
          std::lock_guard l(mu);
          failures.push_back(p + ": " +
                             (r.ok() ? std::to_string(r->status) : r.status().ToString()));
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kPerThread);
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures[0];
}

TEST(RegistryApi, ConcurrentPostsAllLand) {
  Daemon d;
  ASSERT_DAEMON(d);
  constexpr int kThreads = 8, kPerThread = 10;
  std::atomic<int> created{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      http::Client c(d.url());
      for (int i = 0; i < kPerThread; ++i) {
        std::string name = "t" + std::to_string(t) + "-" + std::to_string(i);
        auto r = c.Post("/registry/manifests", ToolYaml(name), "application/yaml");
        if (r.ok() && r->status == 201) ++created;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(created.load(), kThreads * kPerThread);
  Reply status = Get(d, "/registry/status");
  EXPECT_EQ(status.json["total_manifests"], kThreads * kPerThread) << status.body;
  EXPECT_EQ(status.json["errors"], 0);
  // Every one on disk, and no temp file left.
  size_t files = 0;
  for (const auto& e : fs::recursive_directory_iterator(d.manifests_dir())) {
    if (e.is_regular_file()) {
      ++files;
      EXPECT_EQ(e.path().filename(), "tool.yml") << e.path();
    }
  }
  EXPECT_EQ(files, static_cast<size_t>(kThreads * kPerThread));
}

TEST(RegistryApi, ConcurrentSchemaRequestsAgree) {
  Daemon d;
  ASSERT_DAEMON(d);
  const std::vector<std::string> kinds = {"tool", "agent", "relic", "workflow", "monument"};
  std::vector<std::string> expected;
  for (const auto& k : kinds) {
    Reply r = Get(d, "/registry/schema/" + k);
    ASSERT_EQ(r.status, 200) << k << ": " << r.body;
    expected.push_back(r.body);
  }
  constexpr int kThreads = 8, kPerThread = 40;
  std::mutex mu;
  std::vector<std::string> diffs;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      http::Client c(d.url());
      for (int i = 0; i < kPerThread; ++i) {
        size_t k = static_cast<size_t>(t + i) % kinds.size();
        auto r = c.Get("/registry/schema/" + kinds[k]);
        if (!r.ok() || r->status != 200 || r->body != expected[k]) {
          std::lock_guard l(mu);
          diffs.push_back(kinds[k] + ": " +
                          (r.ok()
                               ? std::to_string(r->status) + " " + std::to_string(r->body.size()) +
                                     " bytes vs " + std::to_string(expected[k].size())
                               : r.status().ToString()));
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  // Regression: SchemaWriter::SchemaOf's recursion guard was one static set shared by all
  // threads, so a concurrent build saw a type as recursive and wrote {"type": "object"} for it.
  EXPECT_TRUE(diffs.empty()) << diffs.size() << " of " << kThreads * kPerThread
                             << " concurrent answers differ from the sequential one; first: "
                             << diffs[0];
  EXPECT_EQ(Get(d, "/healthz").status, 200);
}

// ---- Lifecycle ----------------------------------------------------------------------------

TEST(RegistryApi, GracefulStopWithAnOpenEventStream) {
  Daemon d({}, WriteSampleRegistry);
  ASSERT_DAEMON(d);
  std::atomic<bool> got_hello{false}, stream_ended{false};
  Status stream_status;
  std::thread t([&] {
    http::Client c(d.url());
    stream_status = c.Stream("/registry/events", [&](const http::SseEvent& ev) {
      if (ev.event == "hello") got_hello = true;
      return true;
    });
    stream_ended = true;
  });
  ASSERT_TRUE(WaitFor([&] { return got_hello.load(); }))
      << "no hello event";  // (the thread is joined below either way)
  auto t0 = std::chrono::steady_clock::now();
  int rc = d.Stop();
  auto elapsed = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(rc, 0) << d.log();
  EXPECT_LT(elapsed, std::chrono::seconds(3))
      << std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() << " ms";
  EXPECT_TRUE(WaitFor([&] { return stream_ended.load(); }, std::chrono::seconds(5)));
  t.join();
  EXPECT_FALSE(fs::exists(d.data_dir() / "serve.json"));
}

TEST(RegistryApi, RegistryServiceOnItsOwnPort) {
  int port = FreePort();
  ASSERT_GT(port, 0);
  const std::string addr = "127.0.0.1:" + std::to_string(port);
  Daemon d({"--registry-listen", addr}, WriteSampleRegistry);
  ASSERT_DAEMON(d);
  http::Client c("http://" + addr);
  auto status = c.Get("/registry/status");
  ASSERT_TRUE(status.ok()) << status.status().ToString() << "\n" << d.log();
  EXPECT_EQ(status->status, 200);
  Json j = Json::parse(status->body, nullptr, false);
  EXPECT_EQ(j["total_manifests"], 4) << status->body;
  EXPECT_EQ(j, Get(d, "/registry/status").json);  // one registry behind both ports

  auto health = c.Get("/health");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(Json::parse(health->body, nullptr, false).value("service", ""), "manifest-ingestion");

  // A change through one port is seen through the other.
  auto post = c.Post("/registry/manifests", ToolYaml("via-service-port"), "application/yaml");
  ASSERT_TRUE(post.ok());
  EXPECT_EQ(post->status, 201) << post->body;
  EXPECT_EQ(Get(d, "/registry/manifest/tool/via-service-port").status, 200);
}

TEST(RegistryApi, RegistryListenOnABusyPortFailsToStart) {
  // Hold a port so the registry service cannot bind it.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  Daemon d({"--registry-listen", "127.0.0.1:" + std::to_string(port)});
  ::close(fd);
  EXPECT_FALSE(d.ok());
  EXPECT_EQ(d.Stop(), 1) << d.log();
  EXPECT_THAT(d.log(), HasSubstr(std::to_string(port)));
}

}  // namespace
}  // namespace cortex::testing
