// The CLI about itself, as a new user meets it: `cortex` alone, a mistyped verb, `version`, the
// shell completions (run by the real bash, zsh and fish) and the man page (checked by groff).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "cli/cli_process.h"
#include "cortex/version.h"

namespace cortex::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(HelpCli, CortexAlonePrintsTheHelp) {
  CliResult r = RunCli({});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_THAT(r.out, HasSubstr("Usage: cortex")) << r;
  for (const char* verb : {"serve", "get", "run", "deploy", "completion"}) {
    EXPECT_THAT(r.out, HasSubstr(verb)) << r;
  }
}

TEST(HelpCli, AMistypedVerbIsNamedWithTheClosestOne) {
  CliResult r = RunCli({"gett", "tools"});
  EXPECT_EQ(r.exit_code, 2) << r;
  EXPECT_THAT(r.err, HasSubstr("unknown command \"gett\" (did you mean \"get\"?)")) << r;
  CliResult after_flag = RunCli({"--server", "http://127.0.0.1:1", "stauts"});
  EXPECT_EQ(after_flag.exit_code, 2) << after_flag;
  EXPECT_THAT(after_flag.err, HasSubstr("did you mean \"status\"")) << after_flag;
  CliResult far = RunCli({"xyzzyplugh"});
  EXPECT_EQ(far.exit_code, 2) << far;
  EXPECT_THAT(far.err, HasSubstr("unknown command \"xyzzyplugh\"")) << far;
  EXPECT_THAT(far.err, Not(HasSubstr("did you mean"))) << far;
  CliResult hostile = RunCli({"\xff\xfe"});
  EXPECT_EQ(hostile.exit_code, 2) << hostile;
}

TEST(HelpCli, VersionPrintsTheVersion) {
  CliResult r = RunCli({"version"});
  EXPECT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.out, std::string("cortex ") + kVersion + "\n");
  CliResult j = RunCli({"version", "-o", "json"});
  EXPECT_EQ(j.out, std::string("{\"version\": \"") + kVersion + "\"}\n") << j;
}

// What the shell `shell` offers for the command line `line` (its last word being completed),
// with the script of `cortex completion <shell>` loaded.
std::string Complete(const std::string& shell, const std::string& line) {
  CliResult script = RunCli({"completion", shell});
  EXPECT_EQ(script.exit_code, 0) << script;
  TempDir dir;
  const std::string file = (dir.path() / ("cortex." + shell)).string();
  WriteFile(file, script.out);
  CliResult r;
  if (shell == "fish") {
    r = RunCli(
        {"/usr/bin/fish", "--no-config", "-c", "source " + file + "; complete -C '" + line + "'"});
  } else {
    // COMP_WORDS as bash splits the line; zsh runs the same function through bashcompinit,
    // with 0-based arrays as bashcompinit calls it (and zsh, not the function, then matches
    // the offers against the word).
    std::string body = "source " + file + (shell == "zsh" ? "; setopt ksharrays" : "") +
                       "; COMP_WORDS=(" + line + (line.back() == ' ' ? "''" : "") +
                       "); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _cortex; "
                       "printf '%s\\n' \"${COMPREPLY[@]}\"";
    r = shell == "zsh" ? RunCli({"/usr/bin/zsh", "-f", "-c", body})
                       : RunCli({"/bin/bash", "--norc", "-c", body});
  }
  EXPECT_EQ(r.exit_code, 0) << r;
  return r.out;
}

TEST(HelpCli, CompletionsOfferVerbsSubcommandsAndFlagsInEachShell) {
  for (const std::string shell : {"bash", "zsh", "fish"}) {
    SCOPED_TRACE(shell);
    std::string de = Complete(shell, "cortex de");
    EXPECT_THAT(de, AllOf(HasSubstr("describe"), HasSubstr("deploy"), HasSubstr("delete")));
    if (shell != "zsh") {
      EXPECT_THAT(de, Not(HasSubstr("get")));
    }
    EXPECT_THAT(Complete(shell, "cortex auth "), Not(HasSubstr("describe")));
    EXPECT_THAT(Complete(shell, "cortex auth cr"), HasSubstr("create-key"));
    EXPECT_THAT(Complete(shell, "cortex workflows pa"), HasSubstr("pause"));
    EXPECT_THAT(Complete(shell, "cortex get --ou"), HasSubstr("--output"));
    EXPECT_THAT(Complete(shell, "cortex auth create-key --sc"), HasSubstr("--scope"));
  }
}

TEST(HelpCli, TheManPageIsValidRoffAndNamesEveryVerb) {
  CliResult man = RunCli({"man"});
  ASSERT_EQ(man.exit_code, 0) << man;
  EXPECT_THAT(man.out, HasSubstr(".TH CORTEX 1"));
  for (const char* verb : {"serve", "get", "run workflow", "auth create\\-key", "completion"}) {
    EXPECT_THAT(man.out, HasSubstr(std::string(".SS \"cortex ") + verb)) << verb;
  }
  TempDir dir;
  WriteFile(dir.path() / "cortex.1", man.out);
  // groff reads it with every warning on: none may be printed.
  CliResult checked =
      RunCli({"/usr/bin/groff", "-man", "-Tutf8", "-ww", "-z", (dir.path() / "cortex.1").string()});
  EXPECT_EQ(checked.exit_code, 0) << checked;
  EXPECT_EQ(checked.err, "") << checked;
}

}  // namespace
}  // namespace cortex::testing
