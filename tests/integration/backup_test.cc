// cortex backup / cortex restore against the real server: a backup taken while the server runs
// (and keeps taking calls), restored into fresh folders, serves every execution, workflow run,
// deployment and manifest it had; a restore never replaces a state by accident; hostile or
// damaged archives (a "../" name, a link, a truncated file, not a tar at all) are refused with
// a clear error and write nothing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "cli/cli_process.h"
#include "integration/api_reply.h"
#include "integration/daemon.h"
#include "integration/deploy_helpers.h"
#include "integration/fixtures.h"

namespace cortex::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

void WriteManifests(const fs::path& m, const std::string& marker) {
  CopyExampleTools(m, {"calculator", "shell_echo"});
  WriteTwiceWorkflow(m);
  WriteRelicManifest(m, "sleeper",
                     "deployment:\n  type: process\n  command: [\"sh\", \"-c\", \"sleep 300\", \"" +
                         marker + "\"]\n");
}

// python3's tarfile writes the hostile archives (names and types our own writer refuses).
void PythonTar(const fs::path& out, const std::string& body) {
  CliResult r = RunCli({"/usr/bin/python3", "-c",
                        "import io, sys, tarfile\n"
                        "t = tarfile.open(sys.argv[1], 'w', format=tarfile.USTAR_FORMAT)\n"
                        "def add(name, data=b'', kind=tarfile.REGTYPE, link=''):\n"
                        "    i = tarfile.TarInfo(name); i.size = len(data); i.type = kind\n"
                        "    i.linkname = link; t.addfile(i, io.BytesIO(data))\n" +
                            body + "\nt.close()\n",
                        out.string()});
  ASSERT_EQ(r.exit_code, 0) << r;
}

TEST(Backup, ARestoredServerHasEverythingTheBackedUpOneHad) {
  const std::string marker = "cortex-backup-test-" + std::to_string(::getpid());
  KillAtEnd cleanup(marker);
  Daemon a({}, [&](const fs::path& m) { WriteManifests(m, marker); });
  ASSERT_DAEMON(a);
  // A manifest posted through the API: its restriction must survive the restore.
  Reply posted = Post(a.client(), "/registry/manifests",
                      json{{"content",
                            "kind: Workflow\nname: posted\ndescription: Posted.\n"
                            "trigger: {type: manual}\nsteps:\n"
                            "  - {name: a, type: tool, target: shell_echo, "
                            "parameters: {message: hi}}\n"}}
                          .dump());
  ASSERT_EQ(posted.status / 100, 2) << posted.body;
  Reply tool =
      Post(a.client(), "/execute/tool",
           R"({"name": "calculator", "parameters": {"operation": "add", "a": 2, "b": 3}})");
  ASSERT_EQ(tool.status, 200) << tool.body;
  const std::string execution = tool.json.value("execution_id", tool.json.value("id", ""));
  ASSERT_FALSE(execution.empty()) << tool.body;
  Reply wf = Post(a.client(), "/execute/workflow", R"({"name": "twice", "wait": true})");
  ASSERT_EQ(wf.status / 100, 2) << wf.body;
  const std::string run = wf.json.value("run_id", "");
  ASSERT_FALSE(run.empty()) << wf.body;
  Reply deployed = Deploy(a.client(), "sleeper");
  ASSERT_EQ(deployed.status / 100, 2) << deployed.body;
  ASSERT_EQ(Post(a.client(), "/relics/sleeper/stop", "{}").status / 100, 2);

  // The backup, while the server keeps running tools.
  TempDir out;
  const fs::path archive = out.path() / "cortex.tar";
  std::atomic<bool> stop{false};
  std::atomic<int> calls{0};
  std::thread busy([&] {
    http::Client c(a.url());
    while (!stop) {
      auto r =
          c.Post("/execute/tool",
                 R"({"name": "calculator", "parameters": {"operation": "add", "a": 1, "b": 1}})",
                 "application/json");
      if (r.ok() && r->status == 200) ++calls;
    }
  });
  CliResult backup = RunCli({"backup", archive.string(), "--data-dir", a.data_dir().string(),
                             "--manifests", a.manifests_dir().string()});
  stop = true;
  busy.join();
  ASSERT_EQ(backup.exit_code, 0) << backup;
  EXPECT_THAT(backup.out, HasSubstr("backed up"));
  EXPECT_GT(calls.load(), 0);
  CliResult again = RunCli({"backup", archive.string(), "--data-dir", a.data_dir().string(),
                            "--manifests", a.manifests_dir().string()});
  EXPECT_NE(again.exit_code, 0) << "an existing archive is never overwritten";
  EXPECT_THAT(again.err, HasSubstr("already exists"));
  // An archive written inside the manifests folder does not take in its own working folder.
  const fs::path inside = a.manifests_dir() / "self.tar";
  CliResult self = RunCli({"backup", inside.string(), "--data-dir", a.data_dir().string(),
                           "--manifests", a.manifests_dir().string()});
  ASSERT_EQ(self.exit_code, 0) << self;
  CliResult names =
      RunCli({"/usr/bin/python3", "-c",
              "import sys, tarfile\nprint('\\n'.join(tarfile.open(sys.argv[1]).getnames()))",
              inside.string()});
  ASSERT_EQ(names.exit_code, 0) << names;
  EXPECT_THAT(names.out, HasSubstr("manifests/"));
  EXPECT_THAT(names.out, ::testing::Not(HasSubstr(".cortex-backup-"))) << names.out;
  fs::remove(inside);
  // Restoring onto a running server's data dir is refused.
  CliResult onto_live = RunCli({"restore", archive.string(), "--data-dir", a.data_dir().string(),
                                "--manifests", a.manifests_dir().string(), "--force"});
  EXPECT_NE(onto_live.exit_code, 0) << onto_live;
  EXPECT_THAT(onto_live.err, HasSubstr("stop it first")) << onto_live;
  ASSERT_EQ(a.Stop(), 0) << a.log();

  // Restored into the folders of a new server, before it starts.
  Daemon b({}, [&](const fs::path& m) {
    CliResult r = RunCli({"restore", archive.string(), "--data-dir",
                          (m.parent_path() / "data").string(), "--manifests", m.string()});
    EXPECT_EQ(r.exit_code, 0) << r;
    CliResult twice = RunCli({"restore", archive.string(), "--data-dir",
                              (m.parent_path() / "data").string(), "--manifests", m.string()});
    EXPECT_NE(twice.exit_code, 0) << "a state is never replaced without --force";
    EXPECT_THAT(twice.err, HasSubstr("--force"));
  });
  ASSERT_DAEMON(b);
  Reply ex = Get(b.client(), "/executions/" + execution);
  EXPECT_EQ(ex.status, 200) << ex.body;
  EXPECT_EQ(ex.json.value("status", ""), "succeeded") << ex.body;
  Reply wr = Get(b.client(), "/workflows/" + run);
  EXPECT_EQ(wr.status, 200) << wr.body;
  EXPECT_EQ(wr.json.value("status", ""), "succeeded") << wr.body;
  // The restored tools run (their files keep modes the sandbox's user can read and execute).
  Reply again_tool =
      Post(b.client(), "/execute/tool",
           R"({"name": "calculator", "parameters": {"operation": "add", "a": 4, "b": 5}})");
  EXPECT_EQ(again_tool.status, 200) << again_tool.body;
  EXPECT_EQ(again_tool.json.value("status", ""), "succeeded") << again_tool.body;
  Reply relics = Get(b.client(), "/relics");
  EXPECT_THAT(relics.body, HasSubstr("\"sleeper\"")) << relics.body;
  Reply manifests = Get(b.client(), "/registry/manifests");
  for (const char* name : {"calculator", "shell_echo", "twice", "posted", "sleeper"}) {
    EXPECT_THAT(manifests.body, HasSubstr(std::string("\"") + name + "\"")) << name;
  }
  std::string applied = ReadFile(b.data_dir() / "api-manifests.txt");
  EXPECT_THAT(applied, HasSubstr(fs::weakly_canonical(b.manifests_dir()).string() + "/"))
      << "posted manifests stay marked, under the new folder: " << applied;
  EXPECT_THAT(applied, HasSubstr("posted"));
}

TEST(Backup, HostileOrDamagedArchivesAreRefusedAndWriteNothing) {
  TempDir dir;
  const fs::path target = dir.path() / "target";
  struct Case {
    std::string name, body, expect;
  };
  for (const Case& c : {
           Case{"dotdot", "add('state/cortex.db', b'x'); add('manifests/../../evil', b'x')",
                "'..' part"},
           Case{"absolute", "add('/tmp/evil', b'x')", "absolute"},
           Case{"link", "add('manifests/l', kind=tarfile.SYMTYPE, link='/etc/passwd')",
                "only files and folders"},
           Case{"stray", "add('elsewhere/x', b'x')", "unexpected entry"},
           Case{"empty", "pass", "not a Cortex backup"},
           Case{"notadb",
                "add('state/cortex.db', b'not sqlite'); "
                "add('cortex-backup.json', b'{\"format\": 1}')",
                "its database"},
           Case{"future",
                "add('state/cortex.db', b''); "
                "add('cortex-backup.json', b'{\"format\": 99}')",
                "backup format 99"},
       }) {
    SCOPED_TRACE(c.name);
    fs::path archive = dir.path() / (c.name + ".tar");
    PythonTar(archive, c.body);
    CliResult r = RunCli({"restore", archive.string(), "--data-dir", (target / "data").string(),
                          "--manifests", (target / "manifests").string()});
    EXPECT_EQ(r.exit_code, 2) << r;
    EXPECT_THAT(r.err, HasSubstr(c.expect)) << r;
    EXPECT_FALSE(fs::exists(target / "data/cortex.db"));
    EXPECT_FALSE(fs::exists(dir.path() / "evil"));
    EXPECT_FALSE(fs::exists(target / "evil"));
    EXPECT_FALSE(fs::exists("/tmp/evil"));
  }
  // Not a tar at all, and a good archive cut short.
  WriteFile(dir.path() / "junk.tar", std::string(2000, 'j'));
  CliResult junk =
      RunCli({"restore", (dir.path() / "junk.tar").string(), "--data-dir",
              (target / "data").string(), "--manifests", (target / "manifests").string()});
  EXPECT_EQ(junk.exit_code, 2) << junk;
  EXPECT_THAT(junk.err, HasSubstr("checksum")) << junk;
  PythonTar(dir.path() / "whole.tar", "add('state/cortex.db', b'y' * 100000)");
  std::string whole = ReadFile(dir.path() / "whole.tar");
  WriteFile(dir.path() / "cut.tar", whole.substr(0, 50000));
  CliResult cut =
      RunCli({"restore", (dir.path() / "cut.tar").string(), "--data-dir",
              (target / "data").string(), "--manifests", (target / "manifests").string()});
  EXPECT_EQ(cut.exit_code, 2) << cut;
  EXPECT_THAT(cut.err, HasSubstr("truncated")) << cut;
  EXPECT_FALSE(fs::exists(target / "data/cortex.db"));
  // Nothing staged is left behind.
  for (const auto& e : fs::directory_iterator(target)) {
    EXPECT_THAT(e.path().filename().string(), ::testing::Not(HasSubstr(".cortex-restore-")));
  }
}

}  // namespace
}  // namespace cortex::testing
