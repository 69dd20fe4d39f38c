// The CLI's HTTP verbs, end to end: the real `cortex` binary runs as a subprocess against a real
// `cortex serve` (tests/integration/daemon.h). Also unit tests of the printing pieces (YAML
// emitter, tables) and of the error formatting.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <regex>

#include "cli/cli_process.h"
#include "cli/client.h"
#include "cli/output.h"
#include "common/yaml.h"
#include "integration/daemon.h"

namespace cortex::cli {
namespace {

namespace fs = std::filesystem;
using testing::Daemon;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::ReadFile;
using testing::TempDir;
using testing::WaitFor;
using testing::WriteFile;

// --- Running the binary ---------------------------------------------------------------------

using testing::CliProcess;
using testing::CliResult;
using testing::RunCli;

// A TCP port that refuses connections for as long as this object lives: bound, never listening.
class ClosedPort {
 public:
  ClosedPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~ClosedPort() { ::close(fd_); }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// --- Manifests ------------------------------------------------------------------------------

constexpr char kCalcTool[] = R"(kind: Tool
name: calc
version: "1.2"
summary: Adds and subtracts numbers, a summary long enough to be cut in the table view
description: A calculator.
implementation:
  type: python
  entrypoint: calc.py
parameters:
  - name: a
    type: number
)";

constexpr char kMathTool[] = R"(kind: Tool
name: math
description: Low-level math.
implementation:
  entrypoint: math.sh
)";

constexpr char kSubAgent[] = R"(---
kind: Agent
name: sub
summary: Uses math
import:
  tools: [math]
---
# You do math
)";

constexpr char kHelperAgent[] = R"(---
kind: Agent
name: helper
summary: Helps
import:
  tools: [calc]
  agents: [sub]
---
# You help

Be brief.
)";

constexpr char kNewTool[] = R"(kind: Tool
name: newtool
description: Made by apply.
implementation:
  entrypoint: /bin/true
)";

// Line 6 has a wrong type; line 1 misses the description; line 5 is an unknown field.
constexpr char kInvalidTool[] = R"(kind: Tool
name: broken
implementation:
  entrypoint: /bin/true
  bogus: 1
parameters: 5
)";

// calc, math, Agent/sub (imports math), Agent/helper (imports calc and sub).
void WriteStandardManifests(const fs::path& m) {
  WriteFile(m / "tools/calc/tool.yml", kCalcTool);
  WriteFile(m / "tools/calc/calc.py", "print(1)\n");
  WriteFile(m / "tools/math/tool.yml", kMathTool);
  WriteFile(m / "tools/math/math.sh", "echo 1\n");
  WriteFile(m / "agents/sub/agent.md", kSubAgent);
  WriteFile(m / "agents/helper/agent.md", kHelperAgent);
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = std::make_unique<Daemon>(std::vector<std::string>{}, WriteStandardManifests);
    ASSERT_TRUE(daemon_->ok()) << daemon_->log();
  }

  // Runs `cortex --server URL args...`.
  CliResult Cli(std::vector<std::string> args, const std::string& stdin_text = "") {
    args.insert(args.begin(), {"--server", daemon_->url()});
    return RunCli(std::move(args), stdin_text);
  }

  // A file outside the manifests folder, as a user would apply it.
  std::string UserFile(const std::string& name, const std::string& text) {
    fs::path p = user_dir_.path() / name;
    WriteFile(p, text);
    return p.string();
  }

  std::unique_ptr<Daemon> daemon_;
  TempDir user_dir_;
};

Json ParseJson(const std::string& text) { return Json::parse(text, nullptr, false); }

// --- get ------------------------------------------------------------------------------------

TEST_F(CliTest, GetListsAKindAsATable) {
  CliResult r = Cli({"get", "tools"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("KIND   NAME   VERSION   STATE      RESOLVED   PATH"));
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex(R"(\nTool +calc +1\.2 +unstable +yes +tools/calc/tool\.yml +Adds and)")))
      << r;
  EXPECT_THAT(r.out, HasSubstr("..."));  // the long summary is cut
  EXPECT_THAT(r.out, Not(HasSubstr("table view")));
  EXPECT_THAT(r.out, HasSubstr("math"));
  EXPECT_THAT(r.out, Not(HasSubstr("Agent")));
}

TEST_F(CliTest, GetAcceptsAnySpellingOfAKindAndAll) {
  for (const char* kind : {"tool", "Tool", "TOOLS"}) {
    CliResult r = Cli({"get", kind});
    EXPECT_EQ(r.exit_code, 0) << r;
    EXPECT_THAT(r.out, HasSubstr("calc")) << kind;
  }
  CliResult all = Cli({"get", "all"});
  ASSERT_EQ(all.exit_code, 0) << all;
  for (const char* name : {"calc", "math", "sub", "helper"}) EXPECT_THAT(all.out, HasSubstr(name));

  CliResult bad = Cli({"get", "widgets"});
  EXPECT_EQ(bad.exit_code, 1) << bad;
  EXPECT_THAT(bad.err, HasSubstr("error: unknown kind 'widgets'"));
}

TEST_F(CliTest, GetListAsJsonIsTheApiAnswer) {
  CliResult r = Cli({"get", "all", "-o", "json"});
  ASSERT_EQ(r.exit_code, 0) << r;
  Json j = ParseJson(r.out);
  ASSERT_TRUE(j.is_object()) << r;
  EXPECT_EQ(j["count"], 4);
  EXPECT_EQ(j["manifests"].size(), 4u);
  EXPECT_THAT(r.out, HasSubstr("\n  \"count\": 4"));  // pretty, two spaces
}

TEST_F(CliTest, GetListAsYaml) {
  CliResult r = Cli({"get", "agents", "-o", "yaml"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("count: 2\n"));
  EXPECT_THAT(r.out, HasSubstr("manifests:\n  - kind: Agent\n"));
  auto doc = yaml::Parse(r.out);
  ASSERT_TRUE(doc.ok()) << doc.status().message();
  Json j = yaml::ToJson(*doc->documents()[0]);
  EXPECT_EQ(j["manifests"][0]["name"], "helper");
  EXPECT_EQ(j["manifests"][0]["version"], "1.0");  // quoted, so still a string
}

// `get NAME` prints a YAML manifest as its author wrote it, so that get, edit, apply changes only
// what was edited: the server's file keeps its comments and layout. --normalized prints the
// parsed form (defaults filled in), which apply takes back too.
TEST_F(CliTest, GetOnePrintsTheFileThatApplyTakesBackWithItsComments) {
  const std::string commented = R"(# Hand-written: keep this comment.
kind: Tool
name: notes
description: Takes notes.   # trailing comment
implementation: {type: python, entrypoint: notes.py}
parameters:
  - {name: text, type: string}
)";
  WriteFile(daemon_->manifests_dir() / "tools/notes/tool.yml", commented);
  WriteFile(daemon_->manifests_dir() / "tools/notes/notes.py", "print(1)\n");
  ASSERT_EQ(Cli({"sync"}).exit_code, 0);
  CliResult r = Cli({"get", "tool", "notes"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, commented);
  EXPECT_EQ(Cli({"get", "tool", "notes", "-o", "yaml"}).out, commented);

  std::string edited = r.out;
  edited.replace(edited.find("Takes notes."), 12, "Takes notes, and keeps them.");
  CliResult applied = Cli({"apply", "-f", UserFile("notes.yml", edited)});
  EXPECT_EQ(applied.exit_code, 0) << applied;
  EXPECT_THAT(applied.out, HasSubstr("configured Tool/notes (tools/notes/tool.yml)"));
  EXPECT_EQ(ReadFile(daemon_->manifests_dir() / "tools/notes/tool.yml"), edited);

  CliResult normalized = Cli({"get", "tool", "calc", "--normalized"});
  ASSERT_EQ(normalized.exit_code, 0) << normalized;
  EXPECT_THAT(normalized.out, HasSubstr("kind: Tool\n"));
  EXPECT_THAT(normalized.out, HasSubstr("version: \"1.2\"\n"));
  EXPECT_THAT(normalized.out, HasSubstr("parameters:\n  - name: a\n    type: number\n"));
  EXPECT_NE(normalized.out, kCalcTool);  // defaults filled in
  CliResult back = Cli({"apply", "-f", UserFile("calc.yml", normalized.out)});
  EXPECT_EQ(back.exit_code, 0) << back;
  EXPECT_EQ(Cli({"get", "tool", "calc", "--normalized"}).out, normalized.out);
  EXPECT_EQ(Cli({"get", "tools", "--normalized"}).exit_code, 2);
}

TEST_F(CliTest, GetOneAsJsonAndAsTable) {
  CliResult json = Cli({"get", "agent", "helper", "-o", "json"});
  ASSERT_EQ(json.exit_code, 0) << json;
  Json j = ParseJson(json.out);
  EXPECT_EQ(j["path"], "agents/helper/agent.md");
  EXPECT_EQ(j["manifest"]["name"], "helper");
  EXPECT_EQ(j["dependencies"].size(), 2u);

  CliResult table = Cli({"get", "agent", "helper", "-o", "table"});
  ASSERT_EQ(table.exit_code, 0) << table;
  EXPECT_TRUE(std::regex_search(
      table.out,
      std::regex(R"(\nAgent +helper +1\.0 +unstable +yes +agents/helper/agent\.md +Helps\n$)")))
      << table;
}

TEST_F(CliTest, GetRawPrintsTheStoredFile) {
  CliResult r = Cli({"get", "agent", "helper", "--raw"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, kHelperAgent);
}

TEST_F(CliTest, GetUsageErrors) {
  CliResult r = Cli({"get", "all", "calc"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("give a kind"));
  CliResult bad_output = Cli({"get", "tools", "-o", "xml"});
  EXPECT_NE(bad_output.exit_code, 0) << bad_output;
}

TEST_F(CliTest, GetAsNamesAndWithoutHeadersForScripts) {
  CliResult names = Cli({"get", "all", "-o", "name"});
  ASSERT_EQ(names.exit_code, 0) << names;
  EXPECT_EQ(names.out, "Tool/calc\nTool/math\nAgent/helper\nAgent/sub\n") << names;

  CliResult bare = Cli({"get", "tools", "--no-headers"});
  ASSERT_EQ(bare.exit_code, 0) << bare;
  EXPECT_THAT(bare.out, Not(HasSubstr("KIND")));
  EXPECT_TRUE(std::regex_search(bare.out, std::regex(R"(^Tool +calc +1\.2)"))) << bare;

  // What -o name prints names a manifest again, in get, describe and delete.
  CliResult one = Cli({"get", "Tool/calc", "-o", "name"});
  EXPECT_EQ(one.out, "Tool/calc\n") << one;
  EXPECT_EQ(Cli({"get", "Tool/calc"}).out, Cli({"get", "tool", "calc"}).out);
  CliResult described = Cli({"describe", "Agent/helper"});
  ASSERT_EQ(described.exit_code, 0) << described;
  EXPECT_THAT(described.out, HasSubstr("helper"));

  CliResult no_name = Cli({"describe", "agent"});
  EXPECT_EQ(no_name.exit_code, 2) << no_name;
  EXPECT_THAT(no_name.err, HasSubstr("KIND NAME or KIND/NAME"));
  CliResult empty = Cli({"get", "relics", "-o", "name"});
  EXPECT_EQ(empty.exit_code, 0) << empty;
  EXPECT_EQ(empty.out, "");
}

TEST_F(CliTest, TimeoutIsADurationInEveryVerb) {
  // Refused by the flag's check, before any call: no server is needed to see it.
  for (const char* bad : {"5 minutes", "2h", "0", "1.5"}) {
    CliResult r = Cli({"deploy", "relic", "web", "--wait", "--timeout", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r;
    EXPECT_THAT(r.err, HasSubstr("expected a duration up to 1h")) << bad;
    EXPECT_EQ(Cli({"deploy", "monument", "stack", "--timeout", bad}).exit_code, 2) << bad;
  }
}

// --- describe -------------------------------------------------------------------------------

TEST_F(CliTest, DescribeShowsEverythingAboutOneManifest) {
  CliResult r = Cli({"describe", "agent", "helper"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("Name:      Agent/helper\n"));
  EXPECT_THAT(r.out, HasSubstr("Path:      agents/helper/agent.md\n"));
  EXPECT_THAT(r.out, HasSubstr("Resolved:  yes\n"));
  EXPECT_TRUE(
      std::regex_search(r.out, std::regex(R"(import +import\.tools\[0\] +calc +-> Tool/calc)")))
      << r;
  EXPECT_TRUE(
      std::regex_search(r.out, std::regex(R"(import +import\.agents\[0\] +sub +-> Agent/sub)")))
      << r;
  EXPECT_THAT(r.out, HasSubstr("Manifest:\n  kind: Agent\n"));
  EXPECT_THAT(r.out, HasSubstr("  iteration_cap: 5\n"));
  EXPECT_THAT(r.out, HasSubstr("Persona (the Markdown body: the agent's system prompt):\n"
                               "  # You help\n\n  Be brief.\n"));
  EXPECT_THAT(r.out, Not(HasSubstr("persona: {}"))) << r;
}

TEST_F(CliTest, DescribeShowsProblemsAndWarnings) {
  CliResult applied = Cli({"apply", "-f", UserFile("lonely.yml", R"(kind: Agent
name: lonely
persona:
  agent: persona.md
import:
  tools: [calk]
colour: blue
)")});
  ASSERT_EQ(applied.exit_code, 0) << applied;
  EXPECT_THAT(applied.err, HasSubstr("lonely.yml:7:1: warning:"));
  EXPECT_THAT(applied.err, HasSubstr("Agent/lonely is unresolved"));

  CliResult r = Cli({"describe", "agents", "lonely"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("Resolved:  no\n  - "));
  EXPECT_THAT(r.out, HasSubstr("did you mean 'calc'?"));
  EXPECT_THAT(r.out, HasSubstr("Warnings:\n  agents/lonely/agent.yml:7:1: warning:"));
  EXPECT_THAT(r.out, HasSubstr("error: no Tool named 'calk'"));
  EXPECT_THAT(r.out, HasSubstr("Persona:   from persona.md\n"));
}

TEST_F(CliTest, DescribeUnknownManifest) {
  CliResult r = Cli({"describe", "tool", "calk"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.err, HasSubstr("error: no Tool named 'calk' (did you mean 'calc'?)"));
}

// --- apply ----------------------------------------------------------------------------------

TEST_F(CliTest, ApplyCreatesThenConfigures) {
  std::string file = UserFile("newtool.yml", kNewTool);
  CliResult first = Cli({"apply", "-f", file});
  ASSERT_EQ(first.exit_code, 0) << first;
  EXPECT_EQ(first.out, "created Tool/newtool (tools/newtool/tool.yml)\n");
  EXPECT_EQ(ReadFile(daemon_->manifests_dir() / "tools/newtool/tool.yml"), kNewTool);

  CliResult second = Cli({"apply", "-f", file});
  ASSERT_EQ(second.exit_code, 0) << second;
  EXPECT_EQ(second.out, "configured Tool/newtool (tools/newtool/tool.yml)\n");

  EXPECT_EQ(Cli({"get", "tool", "newtool"}).exit_code, 0);
}

TEST_F(CliTest, ApplyInvalidPrintsFileLineColumnAndChangesNothing) {
  std::string file = UserFile("broken.yml", kInvalidTool);
  CliResult r = Cli({"apply", "-f", file});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.err, HasSubstr("error: the manifest is invalid: line "));
  EXPECT_THAT(r.err, HasSubstr("; nothing was written\n"));
  EXPECT_THAT(r.err, HasSubstr(file + ":1:1: error: missing required field 'description'"));
  EXPECT_THAT(r.err, HasSubstr(file + ":6:13: error: parameters:"));
  EXPECT_THAT(r.err, HasSubstr(file + ":5:3: warning: implementation.bogus: unknown field"));
  EXPECT_THAT(r.err, Not(HasSubstr("<request>")));
  EXPECT_EQ(r.out, "");

  EXPECT_FALSE(fs::exists(daemon_->manifests_dir() / "tools/broken"));
  CliResult get = Cli({"get", "tool", "broken"});
  EXPECT_EQ(get.exit_code, 1) << get;
  Json list = ParseJson(Cli({"get", "all", "-o", "json"}).out);
  EXPECT_EQ(list["count"], 4);
}

TEST_F(CliTest, ApplyReadsStdinAndMarkdown) {
  CliResult r = Cli({"apply", "-f", "-"}, kNewTool);
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "created Tool/newtool (tools/newtool/tool.yml)\n");

  CliResult bad = Cli({"apply", "-f", "-"}, kInvalidTool);
  EXPECT_EQ(bad.exit_code, 1) << bad;
  EXPECT_THAT(bad.err, HasSubstr("<stdin>:6:13: error:"));

  std::string md = UserFile("scribe.md", R"(---
kind: Agent
name: scribe
---
# You write things down
)");
  CliResult agent = Cli({"apply", "-f", md});
  ASSERT_EQ(agent.exit_code, 0) << agent;
  EXPECT_EQ(agent.out, "created Agent/scribe (agents/scribe/agent.md)\n");
  EXPECT_THAT(Cli({"describe", "agent", "scribe"}).out,
              HasSubstr("system prompt):\n  # You write things down"));
}

TEST_F(CliTest, ApplyManyFilesKeepsGoingPastAnInvalidOne) {
  std::string good = UserFile("dir/a.yml", kNewTool);
  std::string bad = UserFile("dir/b.yml", kInvalidTool);
  UserFile("dir/notes.txt", "not a manifest");
  CliResult r = Cli({"apply", "-f", (user_dir_.path() / "dir").string(), "-f", good});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_EQ(r.out,
            "created Tool/newtool (tools/newtool/tool.yml)\n"
            "configured Tool/newtool (tools/newtool/tool.yml)\n");
  EXPECT_THAT(r.err, HasSubstr(bad + ":6:13: error:"));
}

// --- delete ---------------------------------------------------------------------------------

TEST_F(CliTest, DeleteThenGetFails) {
  CliResult r = Cli({"delete", "tool", "math"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, "deleted Tool/math\n");
  EXPECT_FALSE(fs::exists(daemon_->manifests_dir() / "tools/math/tool.yml"));

  CliResult get = Cli({"get", "tool", "math"});
  EXPECT_EQ(get.exit_code, 1) << get;
  EXPECT_THAT(get.err, HasSubstr("error: no Tool named 'math'"));

  CliResult again = Cli({"delete", "tool", "math"});
  EXPECT_EQ(again.exit_code, 1) << again;
  EXPECT_THAT(again.err, HasSubstr("error: no Tool named 'math'"));
}

// --- deps, graph ----------------------------------------------------------------------------

TEST_F(CliTest, DepsListsTheLoadOrder) {
  CliResult r = Cli({"deps", "agent", "helper"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("Agent/helper\n"));
  size_t math = r.out.find("math"), sub = r.out.find("sub"), calc = r.out.find("calc");
  ASSERT_NE(math, std::string::npos) << r;
  ASSERT_NE(sub, std::string::npos) << r;
  ASSERT_NE(calc, std::string::npos) << r;
  EXPECT_LT(math, sub) << r;  // math before the agent that imports it
  EXPECT_THAT(r.out, HasSubstr("Direct dependencies:\n"));

  Json j = ParseJson(Cli({"deps", "agent", "helper", "-o", "json"}).out);
  ASSERT_EQ(j["order"].size(), 3u) << j;
  std::vector<std::string> order;
  for (const Json& d : j["order"])
    order.push_back(d["kind"].get<std::string>() + "/" + d["name"].get<std::string>());
  auto pos = [&](const std::string& k) {
    return std::find(order.begin(), order.end(), k) - order.begin();
  };
  EXPECT_LT(pos("Tool/math"), pos("Agent/sub"));

  CliResult none = Cli({"deps", "tool", "calc"});
  EXPECT_EQ(none.exit_code, 0) << none;
  EXPECT_THAT(none.out, HasSubstr("Dependency order: none\n"));
}

TEST_F(CliTest, GraphAsDotAndJson) {
  CliResult dot = Cli({"graph"});
  ASSERT_EQ(dot.exit_code, 0) << dot;
  EXPECT_THAT(dot.out, HasSubstr("digraph"));
  EXPECT_THAT(dot.out, HasSubstr("\"Agent/helper\" -> \"Tool/calc\""));
  EXPECT_THAT(dot.out, HasSubstr("\"Agent/sub\" -> \"Tool/math\""));

  CliResult json = Cli({"graph", "-o", "json"});
  ASSERT_EQ(json.exit_code, 0) << json;
  Json j = ParseJson(json.out);
  EXPECT_EQ(j["nodes"].size(), 4u);
  EXPECT_EQ(j["edges"].size(), 3u);
}

// --- status, sync, errors -------------------------------------------------------------------

TEST_F(CliTest, StatusAndSync) {
  CliResult r = Cli({"status"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("Server:      " + daemon_->url() + " (healthy, cortex "));
  EXPECT_THAT(r.out, HasSubstr("Manifests:   4 (Tool 2, Agent 2)\n"));
  EXPECT_THAT(r.out, HasSubstr("Errors:      0 file(s)\n"));

  Json j = ParseJson(Cli({"status", "-o", "json"}).out);
  EXPECT_EQ(j["health"]["status"], "healthy");
  EXPECT_EQ(j["registry"]["total_manifests"], 4);

  // A file written behind the server's back is picked up by sync (or by the watcher first).
  WriteFile(daemon_->manifests_dir() / "tools/newtool/tool.yml", kNewTool);
  CliResult sync = Cli({"sync"});
  ASSERT_EQ(sync.exit_code, 0) << sync;
  EXPECT_TRUE(std::regex_search(
      sync.out,
      std::regex(
          R"(^synced: generation \d+, 5 manifests, 0 file\(s\) with errors, 0 conflict\(s\)\n$)")))
      << sync;
}

TEST_F(CliTest, ErrorsIsCleanAndExitsZero) {
  CliResult r = Cli({"errors"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("no errors, conflicts or unresolved manifests"));
}

TEST(CliErrorsTest, ErrorsListsFilesConflictsAndUnresolvedAndExitsOne) {
  Daemon d({}, [](const fs::path& m) {
    WriteStandardManifests(m);
    WriteFile(m / "tools/broken/tool.yml", kInvalidTool);
    // Its error comes from a misspelt field: the warning that says so is listed with it.
    WriteFile(m / "tools/typo/tool.yml",
              "kind: Tool\nname: typo\ndescriptoin: d\n"
              "implementation: {runtime: bash, entrypoint: ./run.sh}\n");
    WriteFile(m / "tools/dup1/tool.yml", kNewTool);
    WriteFile(m / "tools/dup2/tool.yml", kNewTool);
    WriteFile(m / "agents/lost/agent.md",
              "---\nkind: Agent\nname: lost\nimport:\n  tools: [nothere]\n---\nHi\n");
  });
  ASSERT_TRUE(d.ok()) << d.log();
  CliResult r = RunCli({"--server", d.url(), "errors"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.out, HasSubstr("Files with errors (2):\n  tools/broken/tool.yml  (not served)\n"));
  EXPECT_THAT(r.out, HasSubstr("tools/typo/tool.yml:3:1: warning: descriptoin: unknown field "
                               "'descriptoin' (did you mean 'description'?)"))
      << r;
  EXPECT_THAT(r.out, HasSubstr("    tools/broken/tool.yml:6:13: error: parameters:"));
  EXPECT_THAT(r.out, HasSubstr("Conflicts (1):\n  Tool/newtool is declared by tools/dup1/tool.yml "
                               "(served) and tools/dup2/tool.yml (ignored)\n"));
  EXPECT_THAT(r.out, HasSubstr("Unresolved manifests (1):\n  Agent/lost  (agents/lost/agent.md)\n  "
                               "  - import.tools[0]: no Tool named 'nothere'"));

  CliResult json = RunCli({"--server", d.url(), "errors", "-o", "json"});
  EXPECT_EQ(json.exit_code, 1) << json;
  EXPECT_EQ(ParseJson(json.out)["conflicts"].size(), 1u);

  CliResult status = RunCli({"--server", d.url(), "status"});
  EXPECT_EQ(status.exit_code, 0) << status;
  EXPECT_THAT(status.out, HasSubstr("run `cortex errors` for details"));
}

TEST_F(CliTest, ErrorsShowsALastGoodVersionServed) {
  WriteFile(daemon_->manifests_dir() / "tools/math/tool.yml",
            "kind: Tool\nname: math\nimplementation: [\n");
  ASSERT_TRUE(WaitFor([&] {
    Json j = daemon_->GetJson("/registry/errors");
    return j.is_object() && j["errors"].size() == 1;
  })) << "the watcher did not see the broken file";
  CliResult r = Cli({"errors"});
  EXPECT_EQ(r.exit_code, 1) << r;
  EXPECT_THAT(r.out, HasSubstr("tools/math/tool.yml  (the last good version is served)"));
  CliResult describe = Cli({"describe", "tool", "math"});
  EXPECT_THAT(describe.out, HasSubstr("Stale:     yes"));
}

// --- events ---------------------------------------------------------------------------------

TEST_F(CliTest, EventsPrintsAnAddedLineAfterAnApply) {
  CliProcess events({"--server", daemon_->url(), "events"});
  ASSERT_TRUE(WaitFor([&] {
    return events.err().find("watching registry events") != std::string::npos;
  })) << events.err();
  CliResult applied = Cli({"apply", "-f", UserFile("newtool.yml", kNewTool)});
  ASSERT_EQ(applied.exit_code, 0) << applied;
  std::regex added(R"((^|\n)\d+ added Tool/newtool tools/newtool/tool\.yml -\n)");
  EXPECT_TRUE(WaitFor([&] { return std::regex_search(events.out(), added); })) << events.out();

  CliResult deleted = Cli({"delete", "tool", "newtool"});
  ASSERT_EQ(deleted.exit_code, 0) << deleted;
  EXPECT_TRUE(WaitFor([&] {
    return events.out().find(" removed Tool/newtool ") != std::string::npos;
  })) << events.out();

  events.Signal(SIGINT);
  EXPECT_EQ(events.Wait(), -1);  // ended by the signal
}

TEST_F(CliTest, EventsAsJsonLines) {
  CliProcess events({"--server", daemon_->url(), "events", "-o", "json"});
  ASSERT_TRUE(
      WaitFor([&] { return events.err().find("watching registry events") != std::string::npos; }));
  ASSERT_EQ(Cli({"apply", "-f", "-"}, kNewTool).exit_code, 0);
  ASSERT_TRUE(WaitFor([&] { return events.out().find('\n') != std::string::npos; }));
  std::string first = events.out().substr(0, events.out().find('\n'));
  Json j = ParseJson(first);
  EXPECT_EQ(j["type"], "added") << first;
  EXPECT_EQ(j["key"], "Tool/newtool") << first;
}

// --- where the server is --------------------------------------------------------------------

TEST(CliUnreachableTest, EveryVerbExitsThreeWithAHint) {
  ClosedPort port;
  std::vector<std::vector<std::string>> verbs = {{"get", "tools"},
                                                 {"get", "tool", "x"},
                                                 {"describe", "tool", "x"},
                                                 {"graph"},
                                                 {"apply", "-f", "-"},
                                                 {"delete", "tool", "x"},
                                                 {"status"},
                                                 {"sync"},
                                                 {"errors"},
                                                 {"events"},
                                                 {"deps", "tool", "x"}};
  for (auto args : verbs) {
    std::string verb = args[0];
    args.insert(args.begin(), {"--server", port.url()});
    CliResult r = RunCli(args, kNewTool);
    EXPECT_EQ(r.exit_code, 3) << verb << "\n" << r;
    EXPECT_THAT(r.err, HasSubstr("error: cannot reach the Cortex server at " + port.url() +
                                 " (is `cortex serve` running?)"))
        << verb;
  }
}

TEST(CliServerTest, ServerFromTheEnvironmentOrAfterTheVerb) {
  Daemon d({}, WriteStandardManifests);
  ASSERT_TRUE(d.ok()) << d.log();
  CliResult env = RunCli({"get", "tools"}, "", {"CORTEX_SERVER=" + d.url()});
  EXPECT_EQ(env.exit_code, 0) << env;
  EXPECT_THAT(env.out, HasSubstr("calc"));
  CliResult after = RunCli({"get", "tools", "--server", d.url()});
  EXPECT_EQ(after.exit_code, 0) << after;
  EXPECT_THAT(after.out, HasSubstr("calc"));
  CliResult bad = RunCli({"--server", "ftp://x", "status"});
  EXPECT_EQ(bad.exit_code, 2) << bad;
  EXPECT_THAT(bad.err, HasSubstr("error: --server:"));
}

// --- Printing (unit) ------------------------------------------------------------------------

// Parses YAML back with the project's reader (libyaml, core schema).
Json FromYaml(const std::string& text) {
  auto stream = yaml::Parse(text);
  if (!stream.ok()) return Json("PARSE ERROR: " + stream.status().message() + "\n" + text);
  if (stream->documents().empty()) return Json("NO DOCUMENT");
  return yaml::ToJson(*stream->documents()[0]);
}

TEST(YamlTest, BlockStyle) {
  Json j = Json::parse(R"({
    "kind": "Tool", "version": "1.0", "count": 3, "ratio": 0.5, "on": true, "none": null,
    "empty_map": {}, "empty_list": [],
    "list": ["a", 1, {"name": "x", "type": "string"}, ["p", "q"]],
    "nested": {"deep": {"k": "v"}},
    "text": "line 1\nline 2\n"
  })");
  EXPECT_EQ(ToYaml(j),
            "kind: Tool\n"
            "version: \"1.0\"\n"
            "count: 3\n"
            "ratio: 0.5\n"
            "\"on\": true\n"
            "none: null\n"
            "empty_map: {}\n"
            "empty_list: []\n"
            "list:\n"
            "  - a\n"
            "  - 1\n"
            "  - name: x\n"
            "    type: string\n"
            "  - - p\n"
            "    - q\n"
            "nested:\n"
            "  deep:\n"
            "    k: v\n"
            "text: |\n"
            "  line 1\n"
            "  line 2\n");
  EXPECT_EQ(FromYaml(ToYaml(j)), j);
}

TEST(YamlTest, QuotesOnlyWhenNeeded) {
  EXPECT_EQ(YamlScalar("plain text"), "plain text");
  EXPECT_EQ(YamlScalar("a-b_c.d/e"), "a-b_c.d/e");
  EXPECT_EQ(YamlScalar("-x"), "-x");
  EXPECT_EQ(YamlScalar("3 apples"), "3 apples");
  EXPECT_EQ(YamlScalar("http://x:8080/p"), "http://x:8080/p");
  EXPECT_EQ(YamlScalar(""), "\"\"");
  EXPECT_EQ(YamlScalar(" lead"), "\" lead\"");
  EXPECT_EQ(YamlScalar("trail "), "\"trail \"");
  EXPECT_EQ(YamlScalar("yes"), "\"yes\"");
  EXPECT_EQ(YamlScalar("Null"), "\"Null\"");
  EXPECT_EQ(YamlScalar("~"), "\"~\"");
  EXPECT_EQ(YamlScalar("12"), "\"12\"");
  EXPECT_EQ(YamlScalar("1.0"), "\"1.0\"");
  EXPECT_EQ(YamlScalar("0x1F"), "\"0x1F\"");
  EXPECT_EQ(YamlScalar("2024-01-02"), "\"2024-01-02\"");
  EXPECT_EQ(YamlScalar("a: b"), "\"a: b\"");
  EXPECT_EQ(YamlScalar("a #b"), "\"a #b\"");
  EXPECT_EQ(YamlScalar("- x"), "\"- x\"");
  EXPECT_EQ(YamlScalar("say \"hi\""), "say \"hi\"");
  EXPECT_EQ(YamlScalar("\"hi\""), "\"\\\"hi\\\"\"");
  for (char c : std::string(":#{}[],&*!|>'\"%@`")) {
    std::string s = std::string(1, c) + "x";
    EXPECT_EQ(YamlScalar(s).front(), '"') << s;
  }
  EXPECT_EQ(YamlScalar("tab\there"), "\"tab\\there\"");
  EXPECT_EQ(YamlScalar("bell\x07"), "\"bell\\x07\"");
}

TEST(YamlTest, MultiLineStringsAreLiteralBlocks) {
  EXPECT_EQ(ToYaml(Json{{"a", "x\ny"}}), "a: |-\n  x\n  y\n");
  EXPECT_EQ(ToYaml(Json{{"a", "x\n\ny\n"}}), "a: |\n  x\n\n  y\n");
  EXPECT_EQ(ToYaml(Json{{"a", "x\n\n"}}), "a: |+\n  x\n\n");
  EXPECT_EQ(ToYaml(Json::array({"x\ny"})), "- |-\n  x\n  y\n");
  // Starting with a space: the indentation would be misread, so double quotes.
  EXPECT_EQ(ToYaml(Json{{"a", " x\ny"}}), "a: \" x\\ny\"\n");
}

TEST(YamlTest, TrickyStringsReadBackUnchanged) {
  std::vector<std::string> strings = {"",
                                      " ",
                                      "a ",
                                      "yes",
                                      "No",
                                      "off",
                                      "null",
                                      "~",
                                      "true",
                                      "1",
                                      "1.0",
                                      "-1",
                                      ".5",
                                      "+1",
                                      "0x1F",
                                      "0o17",
                                      "1e3",
                                      "1_000",
                                      ".inf",
                                      "-.Inf",
                                      ".NaN",
                                      "2024-01-02",
                                      "2024-01-02T10:00:00Z",
                                      "12:30",
                                      "- x",
                                      "-x",
                                      "-",
                                      "?",
                                      "? x",
                                      "---",
                                      "...",
                                      "--- x",
                                      "a: b",
                                      "a:",
                                      "a:b",
                                      "a#b",
                                      "a #b",
                                      "#x",
                                      "@x",
                                      "`x",
                                      "'q'",
                                      "\"q\"",
                                      "q'q",
                                      "%x",
                                      "!tag",
                                      "&anchor",
                                      "*alias",
                                      "|x",
                                      ">x",
                                      "{x}",
                                      "[x]",
                                      ",x",
                                      "x, y",
                                      "[a, b]",
                                      "tab\tin",
                                      "ctrl\x01",
                                      "del\x7f",
                                      "multi\nline",
                                      "multi\nline\n",
                                      "multi\n\n\n",
                                      "\nleading newline",
                                      " leading space\nline",
                                      "trailing spaces  \nx",
                                      "blank\n   \nline",
                                      "x\n\ty",
                                      "unicode é ü 中文",
                                      "a\r\nb",
                                      "back\\slash",
                                      "<<",
                                      "x\n# not a comment\n",
                                      "key: |\n  nested"};
  for (const std::string& s : strings) {
    Json value = {{"v", s}, {"list", {s, {{"k", s}}}}};
    value[s.empty() ? std::string("empty-key") : s] = s;  // as a key too
    std::string text = ToYaml(value);
    EXPECT_EQ(FromYaml(text), value) << "string: " << Json(s).dump() << "\nyaml:\n" << text;
  }
  EXPECT_EQ(FromYaml(ToYaml(Json("top\nlevel"))), Json("top\nlevel"));
  EXPECT_EQ(ToYaml(Json(nullptr)), "null\n");
  EXPECT_EQ(ToYaml(Json::object()), "{}\n");
  EXPECT_EQ(ToYaml(Json::array()), "[]\n");
}

TEST(TableTest, AlignsColumnsWithoutTrailingSpaces) {
  Table t({"KIND", "NAME", "SUMMARY"});
  t.AddRow({"Tool", "calculator", "adds"});
  t.AddRow({"Agent", "é", ""});
  t.AddRow({"Relic"});  // missing cells are empty
  EXPECT_EQ(t.ToString(),
            "KIND    NAME         SUMMARY\n"
            "Tool    calculator   adds\n"
            "Agent   é\n"
            "Relic\n");
  EXPECT_EQ(t.size(), 3u);
}

TEST(TableTest, Truncate) {
  EXPECT_EQ(Truncate("short", 10), "short");
  EXPECT_EQ(Truncate("exactly10!", 10), "exactly10!");
  EXPECT_EQ(Truncate("a longer sentence here", 10), "a longe...");
  EXPECT_EQ(Truncate("two\nlines", 20), "two lines");
  EXPECT_EQ(Truncate("ééééééé", 5), "éé...");
  EXPECT_EQ(DisplayWidth("中文"), 2u);
}

// --- Error formatting (unit) ----------------------------------------------------------------

TEST(ClientFormatTest, Diagnostics) {
  Json d = {
      {"severity", "error"}, {"file", "<request>"}, {"message", "bad"}, {"line", 3}, {"column", 7}};
  EXPECT_EQ(FormatDiagnostic(d, "my.yml"), "my.yml:3:7: error: bad");
  EXPECT_EQ(FormatDiagnostic(d), "<request>:3:7: error: bad");
  EXPECT_EQ(
      FormatDiagnostic(Json{{"file", "a.yml"}, {"message", "whole file"}, {"severity", "warning"}}),
      "a.yml: warning: whole file");
}

TEST(ClientFormatTest, ApiErrors) {
  std::string body = R"({"error":{"code":"invalid_argument",
    "message":"the manifest is invalid (1 error); nothing was written",
    "details":{"diagnostics":[{"severity":"error","file":"<request>","message":"missing 'x'","line":1,"column":1}],
               "warnings":[{"severity":"warning","file":"<request>","message":"odd","line":2,"column":3}],
               "hint":"see the docs"}}})";
  EXPECT_EQ(FormatApiError(400, body, "t.yml"),
            "error: the manifest is invalid (1 error); nothing was written\n"
            "t.yml:1:1: error: missing 'x'\n"
            "t.yml:2:3: warning: odd\n"
            "  hint: see the docs\n");
  EXPECT_EQ(FormatApiError(404, R"({"error":{"code":"not_found","message":"no Tool named 'x'"}})"),
            "error: no Tool named 'x'\n");
  EXPECT_EQ(FormatApiError(502, "<html>Bad Gateway</html>"),
            "error: HTTP 502: <html>Bad Gateway</html>\n");
  EXPECT_EQ(FormatApiError(500, ""), "error: HTTP 500\n");
  EXPECT_EQ(UnreachableMessage("http://h:1"),
            "error: cannot reach the Cortex server at http://h:1 (is `cortex serve` running?)");
}

}  // namespace
}  // namespace cortex::cli
