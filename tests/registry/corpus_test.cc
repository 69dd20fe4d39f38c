// The original project's corpus (../shared/reference/corpus): every file must load, or be
// rejected with a precise message, exactly as pinned in tests/data/corpus_expected.txt.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "registry/registry.h"

namespace cortex::registry {
namespace {

namespace fs = std::filesystem;

fs::path CorpusDir() { return fs::path(CORTEX_SOURCE_DIR) / "../shared/reference/corpus"; }

// One line per file: "<path> | <outcome>". Outcomes:
//   loaded <Kind/name> resolved|unresolved (<n> problems)
//   conflict <Kind/name> (served by <path>)
//   error <first diagnostic>
//   ignored (not a manifest file name) / skipped (Markdown without front matter)
std::string Describe(const Snapshot& snap, const fs::path& root) {
  std::map<std::string, std::string> lines;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    std::string rel = fs::relative(entry.path(), root).string();
    lines[rel] = "ignored (not a manifest file name)";
  }
  std::map<std::string, std::string> served_by;
  for (const auto& e : snap.entries()) served_by[e->key] = e->file->rel_path;
  for (const auto& [path, rec] : snap.files()) {
    std::string out;
    if (rec->not_a_manifest) {
      out = "skipped (Markdown without front matter)";
    } else if (!rec->manifest) {
      out = "error " + rec->diagnostics.at(0).ToString();
    } else {
      std::string key = EntryKey(rec->manifest->kind(), rec->manifest->name());
      const Entry* e = snap.FindKey(key);
      if (e->file != rec) {
        out = "conflict " + key + " (served by " + served_by[key] + ")";
      } else {
        out = "loaded " + key +
              (e->resolved() ? " resolved"
                             : " unresolved (" + std::to_string(e->problems.size()) + " problems)");
      }
    }
    lines[rec->rel_path] = out;
  }
  std::string text;
  for (const auto& [p, o] : lines) text += p + " | " + o + "\n";
  return text;
}

TEST(CorpusTest, EveryFileHasItsPinnedOutcome) {
  ASSERT_TRUE(fs::is_directory(CorpusDir())) << "the reference corpus is missing: " << CorpusDir();
  RegistryOptions o;
  o.root = CorpusDir().string();
  Registry reg(o);
  ASSERT_TRUE(reg.LoadAll().ok());
  std::string got = Describe(*reg.snapshot(), fs::weakly_canonical(CorpusDir()));
  fs::path expected_path = fs::path(CORTEX_SOURCE_DIR) / "tests/data/corpus_expected.txt";
  if (std::getenv("CORTEX_UPDATE_EXPECTED")) std::ofstream(expected_path) << got;
  std::ifstream in(expected_path);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(got, ss.str());
}

TEST(CorpusTest, ProblemsNameTheirCause) {
  RegistryOptions o;
  o.root = CorpusDir().string();
  Registry reg(o);
  ASSERT_TRUE(reg.LoadAll().ok());
  auto snap = reg.snapshot();
  const Entry* journaler = snap->Find(Kind::kAgent, "journaler");
  ASSERT_NE(journaler, nullptr);
  std::string all;
  for (const auto& p : journaler->problems) all += p + "\n";
  EXPECT_NE(all.find("import.monuments[0]: no Monument named 'CyberSentinel-Monument'"),
            std::string::npos);
  EXPECT_NE(all.find("persona.user: file ./system-prompts/journaler-user.md not found"),
            std::string::npos);
  EXPECT_NE(all.find("legacy 'PraetorianRelics'"), std::string::npos);
  const Entry* research = snap->Find(Kind::kAgent, "research_orchestrator");
  ASSERT_NE(research, nullptr);
  ASSERT_FALSE(research->problems.empty());
  EXPECT_NE(research->problems[0].find("import cycle: "), std::string::npos);
  // The research_cache relic imports cache_cleanup, whose step targets the relic: that is use,
  // not an import cycle.
  const Entry* cache = snap->Find(Kind::kRelic, "research_cache");
  ASSERT_NE(cache, nullptr);
  EXPECT_TRUE(cache->resolved());
}

}  // namespace
}  // namespace cortex::registry
