#include "exec/params.h"

#include <gtest/gtest.h>

#include "registry/parser.h"

namespace cortex::exec {
namespace {

using Json = nlohmann::ordered_json;

registry::ParameterList Declared(const std::string& params_yaml) {
  std::string text =
      "kind: Tool\nname: t\ndescription: d\nimplementation: {entrypoint: x}\n"
      "parameters:\n" +
      params_yaml;
  auto parsed = registry::ParseManifest(text, "t.yml", registry::FileFormat::kYaml);
  EXPECT_TRUE(parsed.manifest) << (parsed.diagnostics.empty() ? ""
                                                              : parsed.diagnostics[0].ToString());
  return parsed.manifest->As<registry::ToolSpec>()->parameters;
}

const char* kCalc =
    "  - {name: operation, type: string, enum: [add, subtract]}\n"
    "  - {name: a, type: number}\n"
    "  - {name: b, type: number, validation: {min: -100, max: 100}}\n"
    "  - {name: times, type: integer, default: 1}\n"
    "  - {name: label, type: string, required: false, validation: {pattern: '^[a-z]+$', "
    "max_length: 5}}\n";

TEST(ParamsTest, ValidCallGetsDefaults) {
  auto check = CheckParameters(Declared(kCalc), Json{{"operation", "add"}, {"a", 5}, {"b", 3}});
  ASSERT_TRUE(check.ok()) << FieldErrorsJson(check.errors).dump();
  EXPECT_EQ(check.values, (Json{{"operation", "add"}, {"a", 5}, {"b", 3}, {"times", 1}}));
}

TEST(ParamsTest, TextInputsAreConverted) {
  auto check = CheckParameters(
      Declared(kCalc), Json{{"operation", "add"}, {"a", "5.5"}, {"b", "3"}, {"times", "2"}});
  ASSERT_TRUE(check.ok()) << FieldErrorsJson(check.errors).dump();
  EXPECT_EQ(check.values["a"], 5.5);
  EXPECT_EQ(check.values["times"], 2);
  EXPECT_TRUE(check.values["times"].is_number_integer());
}

TEST(ParamsTest, EveryBadFieldIsListed) {
  auto check = CheckParameters(Declared(kCalc), Json{{"operation", "divide"},
                                                     {"a", "five"},
                                                     {"b", 1000},
                                                     {"times", 1.5},
                                                     {"lable", "x"},
                                                     {"label", "ABCDEFG"}});
  std::vector<FieldError> expected = {
      {"lable", "unknown parameter (did you mean 'label'?)"},
      {"operation", "\"divide\" is not one of \"add\", \"subtract\""},
      {"a", "expected a number, got string \"five\""},
      {"b", "must be at most 100"},
      {"times", "expected an integer, got number 1.5"},
      {"label", "must have at most 5 characters"},
      {"label", "does not match the pattern ^[a-z]+$"},
  };
  EXPECT_EQ(check.errors, expected) << FieldErrorsJson(check.errors).dump(2);
}

TEST(ParamsTest, MissingRequiredAndWrongShape) {
  auto check = CheckParameters(Declared(kCalc), Json::object());
  ASSERT_EQ(check.errors.size(), 3u);
  EXPECT_EQ(check.errors[0], (FieldError{"operation", "missing required parameter"}));
  auto bad = CheckParameters(Declared(kCalc), Json::array());
  ASSERT_EQ(bad.errors.size(), 1u);
  EXPECT_EQ(bad.errors[0].message, "parameters must be a JSON object, not array");
}

TEST(ParamsTest, ToolsWithoutDeclaredParametersTakeAnything) {
  registry::ParameterList none;
  auto check = CheckParameters(none, Json{{"x", 1}});
  EXPECT_TRUE(check.ok());
  EXPECT_EQ(check.values, (Json{{"x", 1}}));
}

}  // namespace
}  // namespace cortex::exec
