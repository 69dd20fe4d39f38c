#include "registry/registry.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace cortex::registry {
namespace {

namespace fs = std::filesystem;

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "cortex-reg-XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
    root_ = dir_ / "m";
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void Write(const std::string& rel, const std::string& text, const fs::path& base = {}) {
    fs::path p = (base.empty() ? root_ : base) / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }
  static std::string Tool(const std::string& name, const std::string& extra = "") {
    return "kind: Tool\nname: " + name +
           "\ndescription: d\nimplementation: {entrypoint: run.sh}\n" + extra;
  }
  std::unique_ptr<Registry> Load() {
    RegistryOptions o;
    o.root = root_.string();
    auto r = std::make_unique<Registry>(o);
    EXPECT_TRUE(r->LoadAll().ok());
    return r;
  }
  std::vector<std::string> Problems(const Registry& r, Kind k, const std::string& name) {
    const Entry* e = r.snapshot()->Find(k, name);
    return e ? e->problems : std::vector<std::string>{"<missing entry>"};
  }

  fs::path dir_, root_;
};

TEST_F(RegistryTest, ImportFormsResolve) {
  Write("tools/calc/tool.yml", Tool("calc"));
  Write("tools/calc/run.sh", "");
  Write("tools/echo/tool.yml", Tool("echo"));
  Write("tools/echo/run.sh", "");
  Write("agents/a/persona.md", "You help.");
  Write("agents/a/tools/local/tool.yml", Tool("local"));
  Write("agents/a/tools/local/run.sh", "");
  Write("agents/a/agent.yml",
        "kind: Agent\nname: a\npersona: {agent: ./persona.md}\nimport:\n  tools:\n"
        "    - ./tools/local/tool.yml\n"  // relative
        "    - ../../tools/echo\n"        // a folder
        "    - tools/calc/tool.yml\n"     // root-relative
        "    - calc\n");                  // a bare name
  auto r = Load();
  EXPECT_EQ(Problems(*r, Kind::kAgent, "a"), std::vector<std::string>{});
  const Entry* a = r->snapshot()->Find(Kind::kAgent, "a");
  ASSERT_EQ(a->dependencies.size(), 5u);  // 4 imports + the persona file
  EXPECT_EQ(a->dependencies[0].target, "Tool/local");
  EXPECT_EQ(a->dependencies[1].target, "Tool/echo");
  EXPECT_EQ(a->dependencies[2].target, "Tool/calc");
  EXPECT_EQ(a->dependencies[3].target, "Tool/calc");
  auto order = r->snapshot()->DependencyOrder(*a);
  ASSERT_EQ(order.size(), 3u);
}

TEST_F(RegistryTest, MissingDependenciesAreListedWithTheReason) {
  Write("agents/a/agent.yml",
        "kind: Agent\nname: a\npersona: {agent: ./p.md}\nimport: {tools: [calculater, "
        "./nope.yml]}\n");
  Write("tools/calculator/tool.yml", Tool("calculator"));
  Write("tools/calculator/run.sh", "");
  auto r = Load();
  auto problems = Problems(*r, Kind::kAgent, "a");
  ASSERT_EQ(problems.size(), 3u);
  EXPECT_EQ(problems[0],
            "import.tools[0]: no Tool named 'calculater' in the registry (did you mean "
            "'calculator'?)");
  EXPECT_NE(problems[1].find("import.tools[1]: file ./nope.yml not found"), std::string::npos);
  EXPECT_NE(problems[2].find("persona.agent: file ./p.md not found"), std::string::npos);
}

TEST_F(RegistryTest, ImportCyclesAreReportedWithTheirPath) {
  Write("a.yml",
        "kind: Workflow\nname: a\nimport: {workflows: [b]}\nsteps: [{name: s, type: internal}]\n");
  Write("b.yml",
        "kind: Workflow\nname: b\nimport: {workflows: [./a.yml]}\nsteps: [{name: s, type: "
        "internal}]\n");
  auto r = Load();
  auto pa = Problems(*r, Kind::kWorkflow, "a");
  ASSERT_EQ(pa.size(), 1u);
  EXPECT_EQ(pa[0], "import cycle: Workflow/a -> Workflow/b -> Workflow/a");
  EXPECT_EQ(Problems(*r, Kind::kWorkflow, "b"), pa);
}

TEST_F(RegistryTest, ConflictsKeepTheShallowestFileAndAreReported) {
  Write("agents/x/tools/calc/tool.yml", Tool("calc", "summary: nested\n"));
  Write("tools/calc/tool.yml", Tool("calc", "summary: top\n"));
  auto r = Load();
  auto snap = r->snapshot();
  ASSERT_EQ(snap->conflicts().size(), 1u);
  EXPECT_EQ(snap->conflicts()[0].served_path, "tools/calc/tool.yml");
  EXPECT_EQ(snap->conflicts()[0].ignored_path, "agents/x/tools/calc/tool.yml");
  EXPECT_EQ(snap->Find(Kind::kTool, "calc")->manifest().header.summary, "top");
  // When the served file goes, the other one takes over.
  fs::remove(root_ / "tools/calc/tool.yml");
  r->ApplyEvents({{FileEventType::kRemoved, (root_ / "tools/calc/tool.yml").string()}});
  EXPECT_EQ(r->snapshot()->Find(Kind::kTool, "calc")->manifest().header.summary, "nested");
  EXPECT_TRUE(r->snapshot()->conflicts().empty());
}

TEST_F(RegistryTest, ABrokenEditKeepsTheLastGoodVersion) {
  Write("t.yml", Tool("t", "summary: v1\n"));
  auto r = Load();
  auto before = r->snapshot();
  Write("t.yml", "kind: Tool\nname: t\n  broken: [\n");
  r->ApplyEvents({{FileEventType::kChanged, (root_ / "t.yml").string()}});
  auto snap = r->snapshot();
  EXPECT_GT(snap->generation(), before->generation());
  const Entry* e = snap->Find(Kind::kTool, "t");
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->file->stale);
  EXPECT_EQ(e->manifest().header.summary, "v1");
  ASSERT_EQ(snap->errors().size(), 1u);
  // The old snapshot is untouched (immutable).
  EXPECT_FALSE(before->Find(Kind::kTool, "t")->file->stale);
  Write("t.yml", Tool("t", "summary: v2\n"));
  r->ApplyEvents({{FileEventType::kChanged, (root_ / "t.yml").string()}});
  EXPECT_EQ(r->snapshot()->Find(Kind::kTool, "t")->manifest().header.summary, "v2");
  EXPECT_TRUE(r->snapshot()->errors().empty());
}

TEST_F(RegistryTest, ApplyWritesValidManifestsAndRejectsInvalidOnes) {
  auto r = Load();
  Diagnostics diags;
  auto ok = r->Apply(Tool("fresh"), FileFormat::kYaml, &diags);
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_TRUE(ok->created);
  EXPECT_EQ(ok->path, "tools/fresh/tool.yml");
  EXPECT_TRUE(fs::exists(root_ / "tools/fresh/tool.yml"));
  EXPECT_NE(r->snapshot()->Find(Kind::kTool, "fresh"), nullptr);

  auto again = r->Apply(Tool("fresh", "summary: second\n"), FileFormat::kYaml, &diags);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created);
  EXPECT_EQ(r->snapshot()->Find(Kind::kTool, "fresh")->manifest().header.summary, "second");

  auto gen = r->snapshot()->generation();
  auto bad = r->Apply("kind: Tool\nname: broken\n", FileFormat::kYaml, &diags);
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(diags.empty());
  EXPECT_FALSE(fs::exists(root_ / "tools/broken"));
  EXPECT_EQ(r->snapshot()->generation(), gen);

  ASSERT_TRUE(r->Delete(Kind::kTool, "fresh").ok());
  EXPECT_FALSE(fs::exists(root_ / "tools/fresh/tool.yml"));
  EXPECT_EQ(r->snapshot()->Find(Kind::kTool, "fresh"), nullptr);
  EXPECT_EQ(r->Delete(Kind::kTool, "fresh").code(), StatusCode::kNotFound);
}

TEST_F(RegistryTest, SubscribersSeeChangesAndResyncWhenTheyFallBehind) {
  RegistryOptions o;
  o.root = root_.string();
  o.subscriber_queue = 4;
  Registry r(o);
  ASSERT_TRUE(r.LoadAll().ok());
  auto sub = r.Subscribe();
  Write("a.yml", Tool("a"));
  r.ApplyEvents({{FileEventType::kChanged, (root_ / "a.yml").string()}});
  auto events = sub->Wait(std::chrono::milliseconds(100));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type, RegistryEvent::Type::kAdded);
  EXPECT_EQ(events[0].key, "Tool/a");
  for (int i = 0; i < 10; ++i) {
    Write("t" + std::to_string(i) + ".yml", Tool("t" + std::to_string(i)));
    r.ApplyEvents(
        {{FileEventType::kChanged, (root_ / ("t" + std::to_string(i) + ".yml")).string()}});
  }
  events = sub->Wait(std::chrono::milliseconds(100));
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events[0].type, RegistryEvent::Type::kResync);
  EXPECT_LE(events.size(), 4u);
  r.Unsubscribe(sub);
}

TEST_F(RegistryTest, ImportsOutsideTheRootAreLoaded) {
  Write("shared/tools/ext/tool.yml", Tool("ext"), dir_);
  Write("shared/tools/ext/run.sh", "", dir_);
  Write("agents/a/agent.yml",
        "kind: Agent\nname: a\npersona: {agent: ./agent.yml}\n"
        "import: {tools: [../../../shared/tools/ext/tool.yml]}\n");
  auto r = Load();
  EXPECT_EQ(Problems(*r, Kind::kAgent, "a"), std::vector<std::string>{});
  const Entry* ext = r->snapshot()->Find(Kind::kTool, "ext");
  ASSERT_NE(ext, nullptr);
  EXPECT_TRUE(ext->file->external);
  EXPECT_EQ(r->Delete(Kind::kTool, "ext").code(), StatusCode::kFailedPrecondition);
}

TEST_F(RegistryTest, SymlinkLoopsAndHiddenFilesAreHarmless) {
  Write("tools/t/tool.yml", Tool("t"));
  fs::create_directory_symlink(root_, root_ / "tools/t/loop");
  Write(".git/x.yml", Tool("hidden"));
  Write("tools/t/.swp.yml", Tool("hidden2"));
  auto r = Load();
  auto snap = r->snapshot();
  EXPECT_EQ(snap->entries().size(), 1u);
  EXPECT_TRUE(snap->conflicts().empty());
}

TEST_F(RegistryTest, FileDependenciesAreRecheckedWhenTheFileAppears) {
  Write("tools/t/tool.yml", Tool("t"));
  auto r = Load();
  ASSERT_EQ(Problems(*r, Kind::kTool, "t").size(), 1u);
  Write("tools/t/run.sh", "echo");
  r->ApplyEvents({{FileEventType::kChanged, (root_ / "tools/t/run.sh").string()}});
  EXPECT_TRUE(Problems(*r, Kind::kTool, "t").empty());
}

TEST_F(RegistryTest, ContentEditsReplaceOnlyTheirEntryAndMatchAFullRebuild) {
  Write("tools/a/tool.yml", Tool("a", "summary: one\n"));
  Write("tools/a/run.sh", "");
  Write("tools/b/tool.yml", Tool("b"));
  Write("agents/x/agent.yml",
        "kind: Agent\nname: x\npersona: {agent: ./agent.yml}\n"
        "import: {tools: [a, ../../tools/b/tool.yml, missing]}\n");
  auto r = Load();
  auto before = r->snapshot();
  const Entry* b_before = before->Find(Kind::kTool, "b");
  const Entry* x_before = before->Find(Kind::kAgent, "x");
  auto sub = r->Subscribe();

  // A content edit: the edited entry is new, the others are the very same objects.
  Write("tools/a/tool.yml", Tool("a", "summary: two\n"));
  r->ApplyEvents({{FileEventType::kChanged, (root_ / "tools/a/tool.yml").string()}});
  auto after = r->snapshot();
  EXPECT_EQ(after->generation(), before->generation() + 1);
  EXPECT_EQ(after->Find(Kind::kTool, "a")->manifest().header.summary, "two");
  EXPECT_EQ(after->Find(Kind::kTool, "b"), b_before);
  EXPECT_EQ(after->Find(Kind::kAgent, "x"), x_before);
  auto events = sub->Wait(std::chrono::milliseconds(100));
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].type, RegistryEvent::Type::kUpdated);
  EXPECT_EQ(events[0].key, "Tool/a");

  // A broken edit keeps the entry (stale) and lists the error; fixing it clears the error.
  Write("tools/b/tool.yml", "kind: Tool\nname: b\n  oops: [\n");
  r->ApplyEvents({{FileEventType::kChanged, (root_ / "tools/b/tool.yml").string()}});
  ASSERT_EQ(r->snapshot()->errors().size(), 1u);
  EXPECT_TRUE(r->snapshot()->Find(Kind::kTool, "b")->file->stale);
  events = sub->Wait(std::chrono::milliseconds(100));
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].type, RegistryEvent::Type::kError);

  // An edit of the references takes the full rebuild: the agent now resolves.
  Write("agents/x/agent.yml",
        "kind: Agent\nname: x\npersona: {agent: ./agent.yml}\n"
        "import: {tools: [a, ../../tools/b/tool.yml]}\n");
  r->ApplyEvents({{FileEventType::kChanged, (root_ / "agents/x/agent.yml").string()}});
  EXPECT_TRUE(r->snapshot()->Find(Kind::kAgent, "x")->resolved());

  // Whatever path each change took, the result equals a registry loaded from scratch.
  auto render = [](const Snapshot& snap) {
    std::string out;
    for (const auto& e : snap.entries()) {
      out += e->key + " " + ManifestToJson(e->manifest()).dump() +
             " stale=" + std::to_string(e->file->stale);
      for (const auto& p : e->problems) out += " | " + p;
      for (const auto& d : e->dependencies) out += " -> " + d.target + d.error;
      out += "\n";
    }
    for (const auto& fe : snap.errors()) out += "error " + fe.file->rel_path + "\n";
    return out;
  };
  std::string incremental = render(*r->snapshot());
  RegistryOptions o;
  o.root = root_.string();
  Registry fresh(o);
  ASSERT_TRUE(fresh.LoadAll().ok());
  // A fresh load has no last good version of the broken file: compare with b fixed first.
  Write("tools/b/tool.yml", Tool("b"));
  r->ApplyEvents({{FileEventType::kChanged, (root_ / "tools/b/tool.yml").string()}});
  ASSERT_TRUE(fresh.LoadAll().ok());
  EXPECT_EQ(render(*r->snapshot()), render(*fresh.snapshot()));
  EXPECT_NE(incremental, render(*fresh.snapshot()));  // b was stale then
  r->Unsubscribe(sub);
}

}  // namespace
}  // namespace cortex::registry
