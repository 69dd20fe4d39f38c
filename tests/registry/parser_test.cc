#include "registry/parser.h"
#include "registry/registry.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace cortex::registry {
namespace {

namespace fs = std::filesystem;

std::string Read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ParsedFile ParseText(std::string_view text, bool strict = false) {
  ParserOptions o;
  o.strict = strict;
  return ParseManifest(text, "m.yml", FileFormat::kYaml, o);
}

// Data-driven: every tests/data/parser/<case>.{yml,md} is parsed and its outcome ("OK Kind/name"
// or "SKIP", then each diagnostic) must equal <case>.expected. CORTEX_UPDATE_EXPECTED=1
// rewrites the expectations.
TEST(ParserDataTest, EveryCaseMatchesItsExpectation) {
  fs::path dir = fs::path(CORTEX_SOURCE_DIR) / "tests/data/parser";
  int cases = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    fs::path p = entry.path();
    auto format = FormatOfPath(p.string());
    if (!format) continue;
    ++cases;
    ParsedFile r = ParseManifest(Read(p), p.filename().string(), *format);
    std::string got;
    if (r.manifest) got += "OK " + EntryKey(r.manifest->kind(), r.manifest->name()) + "\n";
    if (r.not_a_manifest) got += "SKIP\n";
    for (const Diagnostic& d : r.diagnostics) got += d.ToString() + "\n";
    fs::path expected_path = p;
    expected_path.replace_extension(".expected");
    if (std::getenv("CORTEX_UPDATE_EXPECTED")) std::ofstream(expected_path) << got;
    EXPECT_EQ(got, Read(expected_path)) << "case " << p.filename();
  }
  EXPECT_GE(cases, 15);
}

TEST(ParserTest, SeedShapesAreNormalised) {
  auto r = ParseManifest(Read(fs::path(CORTEX_SOURCE_DIR) / "tests/data/parser/seed_relic.yml"),
                         "seed_relic.yml", FileFormat::kYaml);
  ASSERT_TRUE(r.manifest);
  const RelicSpec* relic = r.manifest->As<RelicSpec>();
  ASSERT_NE(relic, nullptr);
  ASSERT_TRUE(relic->deployment);
  EXPECT_EQ(relic->deployment->type, "docker-compose");
  EXPECT_EQ(relic->deployment->compose_file, "./docker-compose.yml");
  ASSERT_TRUE(relic->health_check);
  EXPECT_EQ(relic->health_check->url, "http://localhost:8004/health");
  ASSERT_EQ(relic->endpoints.size(), 2u);
  EXPECT_EQ(relic->endpoints[1].first, "write");
}

TEST(ParserTest, ParameterShorthandsAndAliases) {
  auto r = ParseManifest(Read(fs::path(CORTEX_SOURCE_DIR) / "tests/data/parser/seed_tool.yml"),
                         "seed_tool.yml", FileFormat::kYaml);
  ASSERT_TRUE(r.manifest);
  const ToolSpec* tool = r.manifest->As<ToolSpec>();
  EXPECT_EQ(tool->implementation.entrypoint, "./scripts/calculator.py");  // from `script`
  ASSERT_EQ(tool->parameters.items.size(), 3u);
  EXPECT_EQ(tool->parameters.items[0].name, "operation");
  EXPECT_EQ(tool->parameters.items[0].enum_values.size(), 2u);
  EXPECT_EQ(tool->parameters.items[2].type, "number");
  EXPECT_TRUE(tool->parameters.items[2].IsRequired());
  Json j = ManifestToJson(*r.manifest);
  EXPECT_EQ(j["implementation"]["entrypoint"], "./scripts/calculator.py");
  EXPECT_TRUE(j["parameters"].is_array());
  EXPECT_EQ(j["parameters"][0]["name"], "operation");
}

TEST(ParserTest, ArgvSplitsLikeAShellWithoutOne) {
  auto r = ParseManifest(Read(fs::path(CORTEX_SOURCE_DIR) / "tests/data/parser/process_relic.yml"),
                         "process_relic.yml", FileFormat::kYaml);
  ASSERT_TRUE(r.manifest);
  const RelicSpec* relic = r.manifest->As<RelicSpec>();
  ASSERT_TRUE(relic->deployment && relic->deployment->command);
  EXPECT_EQ(relic->deployment->command->args,
            (std::vector<std::string>{"python3", "-m", "http.server", "my port"}));
  EXPECT_DOUBLE_EQ(relic->health_check->interval->seconds, 0.5);
}

TEST(ParserTest, StrictTurnsUnknownFieldsIntoErrors) {
  std::string text =
      "kind: Tool\nname: t\ndescription: d\nimplementation: {entrypoint: x}\nfoo: 1\n";
  EXPECT_TRUE(ParseText(text).manifest);
  auto strict = ParseText(text, true);
  EXPECT_FALSE(strict.manifest);
  ASSERT_EQ(strict.diagnostics.size(), 1u);
  EXPECT_EQ(strict.diagnostics[0].ToString(), "m.yml:5:1: error: foo: unknown field 'foo'");
}

TEST(ParserTest, UnknownFieldsAreKeptNotDropped) {
  auto r = ParseText(
      "kind: Tool\nname: t\ndescription: d\nimplementation: {entrypoint: x, "
      "gpu: true}\nx-team: core\n");
  ASSERT_TRUE(r.manifest);
  EXPECT_EQ(r.manifest->unknown_fields["x-team"], "core");
  EXPECT_EQ(r.manifest->unknown_fields["implementation.gpu"], true);
}

TEST(ParserTest, SizeAndBinaryLimits) {
  ParserOptions o;
  o.max_bytes = 64;
  auto big = ParseManifest(std::string(100, 'a'), "big.yml", FileFormat::kYaml, o);
  ASSERT_EQ(big.diagnostics.size(), 1u);
  EXPECT_NE(big.diagnostics[0].message.find("over the limit of 64 bytes"), std::string::npos);
  auto bin = ParseText(std::string("kind: Tool\0\x01", 12));
  ASSERT_EQ(bin.diagnostics.size(), 1u);
  EXPECT_NE(bin.diagnostics[0].message.find("binary"), std::string::npos);
}

TEST(ParserTest, DeepNestingIsAnErrorNotACrash) {
  auto r = ParseText("kind: Tool\nname: t\nx: " + std::string(100000, '['));
  EXPECT_FALSE(r.manifest);
  ASSERT_FALSE(r.diagnostics.empty());
  EXPECT_NE(r.diagnostics[0].message.find("nesting deeper than 64"), std::string::npos);
}

TEST(ParserTest, MarkdownBodyIsKept) {
  auto r = ParseManifest(Read(fs::path(CORTEX_SOURCE_DIR) / "tests/data/parser/persona_agent.md"),
                         "p.md", FileFormat::kMarkdown);
  ASSERT_TRUE(r.manifest);
  EXPECT_EQ(r.manifest->body, "# You are a careful assistant\n\nAnswer briefly.");
  EXPECT_EQ(r.manifest->As<AgentSpec>()->iteration_cap, 3);
}

TEST(ParserTest, NotManifestFilesAreRecognisedByName) {
  EXPECT_FALSE(FormatOfPath("x/docker-compose.yml"));
  EXPECT_FALSE(FormatOfPath("x/docker-compose.override.yaml"));
  EXPECT_FALSE(FormatOfPath("autoload.yml"));
  EXPECT_FALSE(FormatOfPath("x/run.py"));
  EXPECT_EQ(FormatOfPath("x/tool.yml"), FileFormat::kYaml);
  EXPECT_EQ(FormatOfPath("x/agent.md"), FileFormat::kMarkdown);
}

TEST(SchemaTest, KindSchemasDescribeRequiredFieldsAndEnums) {
  Json tool = KindSchema(Kind::kTool);
  EXPECT_EQ(tool["properties"]["kind"]["const"], "Tool");
  auto required = tool["required"];
  EXPECT_NE(std::find(required.begin(), required.end(), "implementation"), required.end());
  EXPECT_NE(std::find(required.begin(), required.end(), "name"), required.end());
  Json wf = KindSchema(Kind::kWorkflow);
  Json step = wf["properties"]["steps"]["items"];
  EXPECT_EQ(step["properties"]["type"]["enum"][0], "tool");
  EXPECT_EQ(step["properties"]["retry_policy"]["properties"]["backoff"]["enum"].size(), 3u);
}

TEST(SchemaTest, EditDistanceAndClosestMatch) {
  EXPECT_EQ(EditDistance("descripton", "description"), 1u);
  EXPECT_EQ(ClosestMatch("temprature", {"temperature", "top_p"}), "temperature");
  EXPECT_EQ(ClosestMatch("zzzz", {"temperature", "top_p"}), "");
}

}  // namespace
}  // namespace cortex::registry
