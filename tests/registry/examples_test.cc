// The shipped examples (examples/manifests) load cleanly under --strict, every dependency
// resolves, and every example tool's first example runs and succeeds.
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "registry/registry.h"

extern char** environ;

namespace cortex::registry {
namespace {

namespace fs = std::filesystem;

struct ToolRun {
  int exit_code = -1;
  std::string out;
};

// Runs argv in `cwd` with the JSON parameters as argv[1], capturing stdout. No shell.
ToolRun RunTool(const std::vector<std::string>& argv, const fs::path& cwd) {
  int fds[2];
  if (::pipe(fds) != 0) return {};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_addclose(&fa, fds[1]);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  fs::path old = fs::current_path();
  fs::current_path(cwd);  // the tool's folder is its working directory
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  fs::current_path(old);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  ToolRun r;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) r.out.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  if (rc != 0) return r;
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

fs::path ExamplesDir() { return fs::path(CORTEX_SOURCE_DIR) / "examples/manifests"; }

TEST(ExamplesTest, LoadStrictlyWithEverythingResolved) {
  RegistryOptions o;
  o.root = ExamplesDir().string();
  o.parser.strict = true;
  Registry reg(o);
  ASSERT_TRUE(reg.LoadAll().ok());
  auto snap = reg.snapshot();
  for (const auto& [path, rec] : snap->files()) {
    for (const auto& d : rec->diagnostics) ADD_FAILURE() << d.ToString();
  }
  EXPECT_TRUE(snap->conflicts().empty());
  for (const auto& e : snap->entries()) {
    EXPECT_TRUE(e->resolved()) << e->key << ": " << (e->problems.empty() ? "" : e->problems[0]);
  }
  EXPECT_GE(snap->List(Kind::kTool).size(), 4u);
  EXPECT_EQ(snap->List(Kind::kAgent).size(), 1u);
  EXPECT_EQ(snap->List(Kind::kRelic).size(), 2u);     // kv_store (process), static_site (compose)
  EXPECT_EQ(snap->List(Kind::kMonument).size(), 2u);  // demo_stack, web_stack
}

TEST(ExamplesTest, ToolsRunTheirFirstExample) {
  RegistryOptions o;
  o.root = ExamplesDir().string();
  Registry reg(o);
  ASSERT_TRUE(reg.LoadAll().ok());
  int ran = 0;
  for (const Entry* e : reg.snapshot()->List(Kind::kTool)) {
    const ToolSpec* tool = e->manifest().As<ToolSpec>();
    Json input = Json::object();
    Json expected;
    if (tool->examples.is_array() && !tool->examples.empty()) {
      input = tool->examples[0].value("input", Json::object());
      expected = tool->examples[0].value("expected_output", Json());
    }
    fs::path dir = fs::path(e->file->path).parent_path();
    ToolRun r =
        RunTool({tool->implementation.runtime, tool->implementation.entrypoint, input.dump()}, dir);
    Json out = Json::parse(r.out, nullptr, false);
    ASSERT_FALSE(out.is_discarded()) << e->key << " printed no JSON: " << r.out;
    bool should_fail = e->name() == "always_fails";
    EXPECT_EQ(r.exit_code == 0, !should_fail) << e->key;
    EXPECT_EQ(out.value("success", false), !should_fail) << e->key << ": " << r.out;
    if (!expected.is_null()) {
      EXPECT_EQ(out, expected) << e->key;
    }
    ++ran;
  }
  EXPECT_GE(ran, 4);
}

}  // namespace
}  // namespace cortex::registry
