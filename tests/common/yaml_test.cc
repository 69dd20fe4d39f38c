#include "common/yaml.h"

#include <gtest/gtest.h>

namespace cortex::yaml {
namespace {

TEST(YamlTest, ScalarsAreTypedByTheCoreSchema) {
  auto s = Parse("a: 1\nb: 1.0\nc: true\nd: ~\ne: '1'\nf: hello\ng: -0x1F\nh:\ni: .inf\n");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  const Node* root = s->documents().at(0);
  ASSERT_TRUE(root->IsMapping());
  EXPECT_EQ(root->Find("a")->AsInt(), 1);
  EXPECT_EQ(root->Find("b")->scalar(), "1.0");
  EXPECT_EQ(root->Find("b")->scalar_kind(), ScalarKind::kFloat);
  EXPECT_EQ(root->Find("c")->AsBool(), true);
  EXPECT_TRUE(root->Find("d")->IsNull());
  EXPECT_EQ(root->Find("e")->scalar_kind(), ScalarKind::kString);
  EXPECT_FALSE(root->Find("e")->AsInt().has_value());
  EXPECT_EQ(root->Find("f")->TypeName(), "string");
  EXPECT_EQ(root->Find("g")->scalar_kind(), ScalarKind::kString);  // sign + 0x is not core int
  EXPECT_TRUE(root->Find("h")->IsNull());
  EXPECT_EQ(root->Find("i")->scalar_kind(), ScalarKind::kFloat);
  EXPECT_EQ(ResolvePlainScalar("0x1F"), ScalarKind::kInt);
  EXPECT_EQ(ResolvePlainScalar("1e3"), ScalarKind::kFloat);
  EXPECT_EQ(ResolvePlainScalar("1.2.3"), ScalarKind::kString);
  EXPECT_EQ(ResolvePlainScalar("yes"), ScalarKind::kString);
}

TEST(YamlTest, MarksAreOneBasedAndHonourTheOffset) {
  ParseOptions opt;
  opt.line_offset = 1;
  auto s = Parse("kind: Tool\nname:\n  - x\n", opt);
  ASSERT_TRUE(s.ok());
  const Node* root = s->documents()[0];
  EXPECT_EQ(root->entries()[1].key->mark().line, 3);
  EXPECT_EQ(root->entries()[1].key->mark().column, 1);
  EXPECT_EQ(root->Find("name")->items()[0]->mark().column, 5);
}

TEST(YamlTest, MultipleDocuments) {
  auto s = Parse("a: 1\n---\nkind: Tool\n---\n");
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->documents().size(), 3u);
  EXPECT_TRUE(s->documents()[2]->IsNull());  // an empty document is a null node
  EXPECT_TRUE(Parse("")->documents().empty());
}

TEST(YamlTest, AliasesAndMergeKeys) {
  auto s = Parse("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\nlist: [*b, *b]\n");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  nlohmann::json j = ToJson(*s->documents()[0]);
  EXPECT_EQ(j["use"], nlohmann::json({{"x", 1}, {"y", 3}}));
  EXPECT_EQ(j["list"][1]["y"], 2);
}

TEST(YamlTest, Errors) {
  auto dup = Parse("a: 1\nb: 2\na: 3\n");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().message(), "3:1: duplicate key 'a' (first defined at line 1)");

  auto bad = Parse("a: [1, 2\nb: 3\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(":"), std::string::npos);

  auto unknown = Parse("a: *nope\n");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("unknown anchor"), std::string::npos);

  std::string deep(200, '[');
  auto d = Parse(deep);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("nesting deeper than 64"), std::string::npos);
}

TEST(YamlTest, BillionLaughsIsRefused) {
  std::string doc = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  char prev = 'a';
  for (char c = 'b'; c <= 'j'; ++c) {
    doc += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) doc += std::string(i ? ", *" : "*") + prev;
    doc += "]\n";
    prev = c;
  }
  auto s = Parse(doc);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("too large"), std::string::npos);
}

}  // namespace
}  // namespace cortex::yaml
