// The ustar writer and reader: long names round-trip (prefix + name), GNU tar reads what the
// writer makes, and names that could land outside the target are refused on both sides.
#include "common/tar.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

namespace cortex::tar {
namespace {

TEST(Tar, FilesAndFoldersRoundTripWithLongNames) {
  std::stringstream buf;
  Writer w(buf);
  const std::string deep = "manifests/" + std::string(60, 'a') + "/" + std::string(60, 'b') + "/" +
                           std::string(80, 'c') + ".yml";
  ASSERT_TRUE(w.AddDirectory("manifests").ok());
  ASSERT_TRUE(w.AddFile(deep, "kind: Tool\n", 0600).ok());
  ASSERT_TRUE(w.AddFile("empty", "").ok());
  ASSERT_TRUE(w.Finish().ok());
  std::vector<std::string> names;
  std::string content;
  Status st = Read(
      buf, Limits{},
      [&](const Entry& e) {
        names.push_back(e.name + (e.directory ? "/" : ""));
        return Status::Ok();
      },
      [&](const Entry&, std::string_view data) {
        content.append(data);
        return Status::Ok();
      });
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(names, (std::vector<std::string>{"manifests/", deep, "empty"}));
  EXPECT_EQ(content, "kind: Tool\n");
}

TEST(Tar, NamesThatCouldEscapeAreRefused) {
  for (const char* bad : {"../x", "a/../b", "/etc/passwd", "a//b", "./a", "", "a/."}) {
    EXPECT_FALSE(CheckName(bad).ok()) << bad;
    std::stringstream buf;
    Writer w(buf);
    EXPECT_FALSE(w.AddFile(bad, "x").ok()) << bad;
  }
  EXPECT_FALSE(CheckName(std::string(256, 'a')).ok());
  EXPECT_FALSE(CheckName("bad\xff").ok());
  EXPECT_TRUE(CheckName("state/cortex.db").ok());
}

TEST(Tar, LimitsAreKept) {
  std::stringstream buf;
  Writer w(buf);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(w.AddFile("f" + std::to_string(i), "12345").ok());
  ASSERT_TRUE(w.Finish().ok());
  auto read = [&](Limits l) {
    std::stringstream in(buf.str());
    return Read(
        in, l, [](const Entry&) { return Status::Ok(); },
        [](const Entry&, std::string_view) { return Status::Ok(); });
  };
  EXPECT_TRUE(read(Limits{}).ok());
  EXPECT_FALSE(read(Limits{.max_entries = 4}).ok());
  EXPECT_FALSE(read(Limits{.max_file_bytes = 4}).ok());
  EXPECT_FALSE(read(Limits{.max_total_bytes = 20}).ok());
}

}  // namespace
}  // namespace cortex::tar
