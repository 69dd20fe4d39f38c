#include "registry/expression.h"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace cortex::registry {
namespace {

using Json = nlohmann::ordered_json;
using ::testing::ElementsAre;
using ::testing::IsEmpty;

struct EvalCase {
  std::string_view text;
  Json expected;
};

// A context with a fake environment, explicit variables, a trigger and some recorded steps.
class ExpressionTest : public ::testing::Test {
 protected:
  ExpressionTest() {
    ctx_.env = [this](std::string_view name) -> std::optional<std::string> {
      auto it = env_.find(name);
      if (it == env_.end()) return std::nullopt;
      return it->second;
    };
    ctx_.variables = {{"ENV_NAME", "prod"}, {"EMPTY", ""}};
    ctx_.trigger = &trigger_;
    ctx_.step = [this](std::string_view name) -> std::optional<StepOutcome> {
      if (name == "research_task") return StepOutcome{"succeeded", nullptr};
      if (name == "analyze_text") return StepOutcome{"succeeded", &analyze_output_};
      if (name == "a") return StepOutcome{"succeeded", &a_output_};
      if (name == "check") return StepOutcome{"succeeded", &check_output_};
      if (name == "fetch") return StepOutcome{"succeeded", &fetch_output_};
      if (name == "broken") return StepOutcome{"failed", nullptr};
      if (name == "later") return StepOutcome{"skipped", nullptr};
      return std::nullopt;
    };
  }

  std::shared_ptr<const Expression> Parse(std::string_view text) {
    Result<std::shared_ptr<const Expression>> e = ParseExpression(text);
    EXPECT_TRUE(e.ok()) << text << " -> " << e.status().ToString();
    return e.ok() ? *e : nullptr;
  }

  // Parses and evaluates, expecting both to succeed.
  ExpressionValue Eval(std::string_view text) {
    std::shared_ptr<const Expression> e = Parse(text);
    if (e == nullptr) return {};
    Result<ExpressionValue> v = EvaluateExpression(*e, ctx_);
    EXPECT_TRUE(v.ok()) << text << " -> " << v.status().ToString();
    return v.ok() ? std::move(v).value() : ExpressionValue{};
  }

  // Evaluates each case and compares its value.
  void ExpectValues(const std::vector<EvalCase>& cases) {
    for (const EvalCase& c : cases) {
      ExpressionValue v = Eval(c.text);
      EXPECT_EQ(v.value, c.expected) << c.text << " gave " << v.value.dump();
    }
  }

  std::map<std::string, std::string, std::less<>> env_ = {{"REGION", "eu"}};
  Json trigger_ = Json::parse(R"({"mode": "fast", "enabled": true, "disabled": false,
                                  "n": "3", "count": 4, "result": "succeeded", "name": "cats",
                                  "tags": ["x", "y"], "opts": {"deep": 1}, "empty": ""})");
  Json analyze_output_ = Json::parse(R"({"sentiment": "positive", "score": 0.75})");
  Json a_output_ = Json::parse(R"({"count": 5, "status": "from-output", "ratio": 2.5})");
  Json check_output_ = Json::parse(R"({"ok": false})");
  Json fetch_output_ = Json::parse(R"({"items": [1, 2, 3], "none": null})");
  VariableContext ctx_;
};

// ---------------------------------------------------------------------------------------------
// The manifests' conditions.

TEST_F(ExpressionTest, CorpusConditions) {
  const std::vector<EvalCase> cases = {
      {"$(steps.research_task.status) == 'success'", true},
      {"$(steps.analyze_text.sentiment) != null", true},
      {"$(steps.a.count) > 3 and $(trigger.mode) in ['fast', 'full']", true},
      {"not ($(steps.check.ok) == true) or len($(steps.fetch.items)) >= 2", true},
      {"$(trigger.enabled)", true},
      {"\"$(steps.a.status)\" == \"succeeded\"", true},
      {"$ENV_NAME == 'prod'", true},
      {"${LEVEL:-3} > 2", true},
      {"steps.a.status == 'succeeded'", true},
      {"trigger.mode", "fast"},
      {"input.mode", "fast"},
  };
  ExpectValues(cases);
  for (const EvalCase& c : cases) EXPECT_THAT(Eval(c.text).unresolved, IsEmpty()) << c.text;
}

TEST_F(ExpressionTest, CorpusConditionsCanBeFalse) {
  trigger_["mode"] = "slow";
  check_output_["ok"] = true;
  fetch_output_["items"] = Json::array({1});
  const std::vector<EvalCase> cases = {
      {"$(steps.a.count) > 3 and $(trigger.mode) in ['fast', 'full']", false},
      {"not ($(steps.check.ok) == true) or len($(steps.fetch.items)) >= 2", false},
      {"$(steps.broken.status) == 'success'", false},
      {"$(steps.analyze_text.missing) != null", false},
  };
  ExpectValues(cases);
}

// ---------------------------------------------------------------------------------------------
// Literals and operators.

TEST_F(ExpressionTest, Literals) {
  const std::vector<EvalCase> cases = {
      {"3", 3},
      {"-3", -3},
      {"1.5", 1.5},
      {"-0.25", -0.25},
      {"2e3", 2000.0},
      {"1E-2", 0.01},
      {"007", 7},
      {"9223372036854775807", Json(INT64_MAX)},
      {"-9223372036854775808", Json(INT64_MIN)},
      {"18446744073709551615", Json(UINT64_MAX)},
      {"18446744073709551616", 18446744073709551616.0},
      {"'single'", "single"},
      {"\"double\"", "double"},
      {"''", ""},
      {R"('it\'s')", "it's"},
      {R"("say \"hi\"")", "say \"hi\""},
      {R"('a\\b')", "a\\b"},
      {R"('tab\there\nnew\rcr')", "tab\there\nnew\rcr"},
      {R"("it's")", "it's"},
      {"'héllo'", "héllo"},
      {"true", true},
      {"false", false},
      {"null", nullptr},
      {"True", true},
      {"False", false},
      {"None", nullptr},
      {"[]", Json::array()},
      {"[1, 'two', [3], null]", Json::parse(R"([1, "two", [3], null])")},
      {"( 'grouped' )", "grouped"},
      {" \t\n 42 \r\n", 42},
      {"- - 2", 2},
      {"-(3)", -3},
  };
  ExpectValues(cases);
}

TEST_F(ExpressionTest, BooleanOperatorsAndSynonyms) {
  const std::vector<EvalCase> cases = {
      {"true and false", false},  {"true && true", true},
      {"false or true", true},    {"false || false", false},
      {"not true", false},        {"!false", true},
      {"not not 1", true},        {"!!''", false},
      {"1 and 'x'", true},        {"0 or ''", false},
      {"[] or 0.0", false},       {"true and true and 1", true},
      {"0 or 0 or 0 or 7", true}, {"false and false or true", true},
  };
  ExpectValues(cases);
}

TEST_F(ExpressionTest, Precedence) {
  const std::vector<EvalCase> cases = {
      // and binds tighter than or.
      {"true or true and false", true},
      {"(true or true) and false", false},
      {"false and true or true", true},
      {"false and (true or true)", false},
      // not binds looser than comparisons: not (1 == 2).
      {"not 1 == 2", true},
      {"(not 1) == 2", false},
      {"! 1 == 2", true},
      {"not 'a' in ['b']", true},
      // not binds tighter than and/or.
      {"not true or true", true},
      {"not (true or true)", false},
      {"not false and false", false},
      // unary minus binds tightest.
      {"-2 < -1", true},
      {"- 2 == -2", true},
      {"not -1 == 1", true},
      // comparisons inside boolean chains.
      {"1 < 2 and 2 < 3 or 3 < 1", true},
      {"1 > 2 or 2 > 3 and 3 > 1", false},
  };
  ExpectValues(cases);
}

TEST_F(ExpressionTest, Equality) {
  const std::vector<EvalCase> cases = {
      {"1 == 1.0", true},
      {"-0 == 0", true},
      {"0.1 == 0.10", true},
      {"2 != 3", true},
      {"'a' == 'a'", true},
      {"'a' == 'A'", false},
      {"'a' != 'b'", true},
      {"null == null", true},
      {"true == true", true},
      {"true == 1", false},
      {"false == 0", false},
      {"null == false", false},
      {"null == ''", false},
      {"null == 0", false},
      {"[] == null", false},
      {"[1, 2] == [1, 2]", true},
      {"[1, 2] == [2, 1]", false},
      {"[1] == [1.0]", true},
      {"$(trigger.opts) == $(trigger.opts)", true},
      {"$(trigger.tags) == ['x', 'y']", true},
      // Numbers and numeric strings compare numerically...
      {"'3' == 3", true},
      {"3 == '3'", true},
      {"'3.0' == 3", true},
      {"'-2.5' == -2.5", true},
      {"'1e3' == 1000", true},
      {"$(trigger.n) == 3", true},
      {"${LEVEL:-3} == 3", true},
      // ...but only when the whole string is a number.
      {"' 3' == 3", false},
      {"'3 ' == 3", false},
      {"'0x10' == 16", false},
      {"'abc' == 3", false},
      {"'abc' != 3", true},
      {"'' == 0", false},
      {"'inf' == 3", false},
      {"'nan' != 3", true},
      // Two strings never compare numerically.
      {"'3' == '3.0'", false},
      // Integers beyond doubles' precision compare exactly.
      {"9007199254740993 == 9007199254740992", false},
      {"18446744073709551615 == -1", false},
  };
  ExpectValues(cases);
}

TEST_F(ExpressionTest, Ordering) {
  const std::vector<EvalCase> cases = {
      {"1 < 2", true},
      {"2 <= 2", true},
      {"3 > 2.5", true},
      {"2.5 >= 3", false},
      {"-1 < 0", true},
      {"9223372036854775807 < 9223372036854775808", true},
      {"-1 < 18446744073709551615", true},
      {"18446744073709551615 > -9223372036854775808", true},
      {"'a' < 'b'", true},
      {"'abc' < 'abd'", true},
      {"'b' > 'abc'", true},
      {"'' < 'a'", true},
      {"'Z' < 'a'", true},   // bytewise
      {"'z' < 'é'", true},   // bytewise: UTF-8 lead bytes sort after ASCII
      {"'10' < '9'", true},  // two strings: lexicographic
      {"'10' < 9", false},   // numeric string vs number: numeric
      {"9 < '10'", true},
      {"$(trigger.n) >= 3", true},
      {"$(trigger.count) > $(trigger.n)", true},
      {"$(steps.a.ratio) > 2", true},
      {"$(steps.analyze_text.score) <= 0.75", true},
  };
  ExpectValues(cases);
}

TEST_F(ExpressionTest, Membership) {
  const std::vector<EvalCase> cases = {
      {"'a' in ['a', 'b']", true},
      {"'c' in ['a', 'b']", false},
      {"'c' not in ['a', 'b']", true},
      {"'a' not in ['a']", false},
      {"2 in [1, 2.0]", true},
      {"'2' in [1, 2]", true},  // `==` semantics, numeric strings included
      {"null in [1, null]", true},
      {"[1] in [[1], [2]]", true},
      {"1 in []", false},
      {"'at' in 'cats'", true},
      {"'dog' in 'cats'", false},
      {"'' in 'cats'", true},
      {"'dog' not in 'cats'", true},
      {"'deep' in $(trigger.opts)", true},
      {"'shallow' in $(trigger.opts)", false},
      {"'shallow' not in $(trigger.opts)", true},
      {"'x' in $(trigger.tags)", true},
      {"$(trigger.name) in 'bobcats!'", true},
      {"'mode' in trigger", true},
      {"'nope' in input", false},
  };
  ExpectValues(cases);
}

TEST_F(ExpressionTest, Len) {
  const std::vector<EvalCase> cases = {
      {"len('abc')", 3},
      {"len('')", 0},
      {"len('héllo')", 5},  // code points, not bytes
      {"len('日本')", 2},
      {"len([1, [2, 3]])", 2},
      {"len([])", 0},
      {"len($(trigger.opts))", 1},
      {"len($(steps.fetch.items))", 3},
      {"len(steps.fetch.items) == 3", true},
      {"len($(trigger.name) ) > 3", true},
  };
  ExpectValues(cases);
}

TEST_F(ExpressionTest, Truthiness) {
  const std::vector<std::pair<Json, bool>> cases = {
      {nullptr, false},
      {false, false},
      {true, true},
      {0, false},
      {0u, false},
      {0.0, false},
      {-0.0, false},
      {1, true},
      {-1, true},
      {0.5, true},
      {"", false},
      {"0", true},
      {"false", true},
      {Json::array(), false},
      {Json::array({0}), true},
      {Json::object(), false},
      {Json::object({{"a", nullptr}}), true},
  };
  for (const auto& [value, truthy] : cases) EXPECT_EQ(Truthy(value), truthy) << value.dump();
  EXPECT_TRUE(Truthy(Eval("$(trigger.enabled)").value));
  EXPECT_FALSE(Truthy(Eval("$(trigger.disabled)").value));
  EXPECT_FALSE(Truthy(Eval("$(trigger.empty)").value));
  EXPECT_FALSE(Truthy(Eval("$(steps.fetch.none)").value));
  EXPECT_TRUE(Truthy(Eval("$(steps.fetch.items)").value));
  EXPECT_FALSE(Truthy(Eval("$(steps.check.ok)").value));
}

// ---------------------------------------------------------------------------------------------
// References.

TEST_F(ExpressionTest, ReferenceForms) {
  const std::vector<EvalCase> cases = {
      {"$(steps.a.count)", 5},
      {"$( steps.a.count )", 5},
      {"$(steps.a.output.status)", "from-output"},
      {"$(steps.a.status)", "succeeded"},
      {"$(steps.later.status)", "skipped"},
      {"$(steps.fetch.items[1])", 2},
      {"$(steps.fetch.items.2)", 3},
      {"$(trigger.tags[0])", "x"},
      {"$(input.opts.deep)", 1},
      {"$(trigger)", trigger_},
      {"steps.a.count", 5},
      {"steps.fetch.items[0]", 1},
      {"steps.a.output.status", "from-output"},
      {"trigger.tags[1]", "y"},
      {"input.opts.deep", 1},
      {"$ENV_NAME", "prod"},
      {"${ENV_NAME}", "prod"},
      {"$(ENV_NAME)", "prod"},
      {"$REGION", "eu"},  // from the (fake) environment
      {"${LEVEL:-3}", "3"},
      {"${LEVEL-3}", "3"},
      {"${EMPTY:-d}", "d"},
      {"${EMPTY-d}", ""},
      {"${LEVEL:-${REGION}}", "eu"},
      {"${LEVEL:-$(trigger.count)}", 4},
      {"${ENV_NAME} == 'prod' and $REGION == 'eu'", true},
  };
  ExpectValues(cases);
}

TEST_F(ExpressionTest, StringLiteralsAreTemplates) {
  const std::vector<EvalCase> cases = {
      {"\"$(steps.a.status)\"", "succeeded"},
      {"'$(steps.a.count)'", "5"},  // always a string
      {"'$(steps.fetch.items)'", "[1,2,3]"},
      {"'n=$(steps.a.count)!'", "n=5!"},
      {"'$ENV_NAME-${REGION}'", "prod-eu"},
      {"'$(steps.a.count)' == 5", true},  // numeric string rule
      {"'$(steps.a.count)' == '5'", true},
      {"'$$(not a ref)'", "$(not a ref)"},
      {"'costs $ 5, $sum, $5'", "costs $ 5, $sum, $5"},
      {R"('\'$(trigger.mode)\'')", "'fast'"},
  };
  ExpectValues(cases);
}

TEST_F(ExpressionTest, UnresolvedReferencesAreNullAndListed) {
  ExpressionValue v = Eval("$(steps.missing.x) != null");
  EXPECT_EQ(v.value, false);
  EXPECT_THAT(v.unresolved, ElementsAre("$(steps.missing.x)"));

  v = Eval("$(steps.analyze_text.nope) == null and trigger.nope == null and $UNSET == null");
  EXPECT_EQ(v.value, true);
  EXPECT_THAT(v.unresolved, ElementsAre("$(steps.analyze_text.nope)", "trigger.nope", "$UNSET"));

  // Listed once, in order of first evaluation.
  v = Eval("$(trigger.x) == null and $(trigger.y) == null and $(trigger.x) == null");
  EXPECT_THAT(v.unresolved, ElementsAre("$(trigger.x)", "$(trigger.y)"));

  // A step that has not run, a step without output, a status with a path after it.
  v = Eval("[$(steps.pending.status), $(steps.research_task.x), $(steps.a.status.x)]");
  EXPECT_EQ(v.value, Json::parse("[null, null, null]"));
  EXPECT_EQ(v.unresolved.size(), 3u);

  // A default that does not resolve leaves the whole reference unresolved.
  v = Eval("${LEVEL:-$(trigger.nope)}");
  EXPECT_EQ(v.value, nullptr);
  EXPECT_THAT(v.unresolved, ElementsAre("${LEVEL:-$(trigger.nope)}"));

  // A value that is JSON null is resolved, not unresolved.
  v = Eval("$(steps.fetch.none) == null");
  EXPECT_EQ(v.value, true);
  EXPECT_THAT(v.unresolved, IsEmpty());

  // In a string literal an unresolved reference stays verbatim (as in any template).
  v = Eval("'x$(steps.missing.status)y'");
  EXPECT_EQ(v.value, "x$(steps.missing.status)y");
  EXPECT_THAT(v.unresolved, ElementsAre("$(steps.missing.status)"));
}

TEST_F(ExpressionTest, ShortCircuitSkipsTheOtherBranch) {
  ExpressionValue v = Eval("false and $(steps.missing.x) > 3");
  EXPECT_EQ(v.value, false);
  EXPECT_THAT(v.unresolved, IsEmpty());
  v = Eval("true or len($(steps.missing.x)) > 0");
  EXPECT_EQ(v.value, true);
  EXPECT_THAT(v.unresolved, IsEmpty());
  // The guard idiom.
  v = Eval("$(steps.missing.items) != null and len($(steps.missing.items)) > 0");
  EXPECT_EQ(v.value, false);
  EXPECT_THAT(v.unresolved, ElementsAre("$(steps.missing.items)"));
}

TEST_F(ExpressionTest, EmptyContextResolvesNothing) {
  ctx_ = VariableContext();
  ExpressionValue v = Eval("$(steps.a.status) == null and trigger.x == null and $REGION == null");
  EXPECT_EQ(v.value, true);
  EXPECT_THAT(v.unresolved, ElementsAre("$(steps.a.status)", "trigger.x", "$REGION"));
}

// ---------------------------------------------------------------------------------------------
// Step-status aliases.

TEST_F(ExpressionTest, StatusAliases) {
  const std::vector<EvalCase> cases = {
      {"$(steps.research_task.status) == 'success'", true},
      {"$(steps.research_task.status) == 'completed'", true},
      {"$(steps.research_task.status) == 'succeeded'", true},
      {"$(steps.research_task.status) != 'success'", false},
      {"$(steps.research_task.status) == 'failure'", false},
      {"'success' == $(steps.research_task.status)", true},
      {"steps.research_task.status == 'success'", true},
      {"\"$(steps.research_task.status)\" == 'completed'", true},
      {"$(steps.research_task.status) in ['success', 'skipped']", true},
      {"$(steps.research_task.status) not in ['completed']", false},
      {"$(steps.broken.status) == 'failure'", true},
      {"$(steps.broken.status) == 'error'", true},
      {"$(steps.broken.status) == 'failed'", true},
      {"$(steps.broken.status) != 'error'", false},
      {"$(steps.broken.status) in ['error']", true},
      {"$(steps.later.status) == 'success'", false},
      {"$(steps.later.status) == 'skipped'", true},
      // Not a step's status: no alias.
      {"$(trigger.result) == 'success'", false},
      {"'succeeded' == 'success'", false},
      {"$(steps.a.output.status) == 'from-output'", true},
      {"\"x$(steps.research_task.status)\" == 'xsuccess'", false},
      {"'success' in [$(steps.research_task.status)]", false},
      // Not an equality: no alias.
      {"$(steps.research_task.status) > 'success'", false},
  };
  ExpectValues(cases);
}

// ---------------------------------------------------------------------------------------------
// References for the loader.

TEST_F(ExpressionTest, ReferencesAreListedWithOffsets) {
  std::shared_ptr<const Expression> e =
      Parse("$(steps.a.count) > 3 and $(trigger.mode) in ['fast', 'full']");
  ASSERT_NE(e, nullptr);
  std::vector<Reference> refs = ExpressionReferences(*e);
  ASSERT_EQ(refs.size(), 2u);
  EXPECT_EQ(refs[0].kind, Reference::Kind::kStep);
  EXPECT_EQ(refs[0].name, "a");
  EXPECT_EQ(refs[0].path, "count");
  EXPECT_EQ(refs[0].offset, 0u);
  EXPECT_EQ(refs[0].length, 16u);
  EXPECT_EQ(refs[1].kind, Reference::Kind::kTrigger);
  EXPECT_EQ(refs[1].name, "mode");
  EXPECT_EQ(refs[1].path, "");
  EXPECT_EQ(refs[1].offset, 25u);
  EXPECT_EQ(refs[1].length, 15u);
}

TEST_F(ExpressionTest, ReferencesOfEveryForm) {
  const std::string text =
      R"(steps.fetch.items[0].id == input.q and 'a\'$(steps.s.status)' != ${LVL:-$(trigger.l)} )"
      "or $HOME == 'x'";
  std::shared_ptr<const Expression> e = Parse(text);
  ASSERT_NE(e, nullptr);
  std::vector<Reference> refs = ExpressionReferences(*e);
  ASSERT_EQ(refs.size(), 6u);
  auto at = [&](const Reference& r) { return text.substr(r.offset, r.length); };

  EXPECT_EQ(refs[0].kind, Reference::Kind::kStep);
  EXPECT_EQ(refs[0].name, "fetch");
  EXPECT_EQ(refs[0].path, "items[0].id");
  EXPECT_EQ(at(refs[0]), "steps.fetch.items[0].id");

  EXPECT_EQ(refs[1].kind, Reference::Kind::kTrigger);
  EXPECT_EQ(refs[1].name, "q");
  EXPECT_EQ(at(refs[1]), "input.q");

  EXPECT_EQ(refs[2].kind, Reference::Kind::kStep);  // inside a string with an escape before it
  EXPECT_EQ(refs[2].name, "s");
  EXPECT_EQ(refs[2].path, "status");
  EXPECT_EQ(at(refs[2]), "$(steps.s.status)");

  EXPECT_EQ(refs[3].kind, Reference::Kind::kVariable);
  EXPECT_EQ(refs[3].name, "LVL");
  EXPECT_EQ(refs[3].default_value, "$(trigger.l)");
  EXPECT_TRUE(refs[3].default_if_empty);
  EXPECT_EQ(at(refs[3]), "${LVL:-$(trigger.l)}");

  EXPECT_EQ(refs[4].kind, Reference::Kind::kTrigger);  // nested in the default
  EXPECT_EQ(refs[4].name, "l");
  EXPECT_EQ(at(refs[4]), "$(trigger.l)");

  EXPECT_EQ(refs[5].kind, Reference::Kind::kVariable);
  EXPECT_EQ(refs[5].name, "HOME");
  EXPECT_EQ(at(refs[5]), "$HOME");

  EXPECT_THAT(ExpressionReferences(*Parse("1 == 'plain' and true")), IsEmpty());
}

TEST_F(ExpressionTest, ParsedExpressionIsSharedAndReusable) {
  std::shared_ptr<const Expression> e = Parse("$(trigger.count) > 3");
  ASSERT_NE(e, nullptr);
  std::shared_ptr<const Expression> copy = e;
  Result<ExpressionValue> first = EvaluateExpression(*copy, ctx_);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->value, true);
  trigger_["count"] = 1;
  Result<ExpressionValue> second = EvaluateExpression(*e, ctx_);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->value, false);
}

// ---------------------------------------------------------------------------------------------
// Syntax errors.

struct ErrorCase {
  std::string_view text;
  std::string_view message;
};

TEST_F(ExpressionTest, SyntaxErrors) {
  const std::vector<ErrorCase> cases = {
      {"", "offset 0: empty expression"},
      {"   \n ", "offset 0: empty expression"},
      // Unterminated strings.
      {"'abc", "offset 0: unterminated string (missing closing ')"},
      {"x == \"abc",
       "offset 0: unknown name 'x' (expected a literal, a reference such as "
       "$(steps.<step>.<field>), steps.<step>.<field> or trigger.<field>, or "
       "len(...))"},
      {"1 == \"abc", "offset 5: unterminated string (missing closing \")"},
      {"'abc\\'", "offset 0: unterminated string (missing closing ')"},
      {"'abc\\", "offset 0: unterminated string (missing closing ')"},
      {"'a\\qb'",
       "offset 2: unknown escape '\\q' in a string (supported: \\\\ \\' \\\" \\n \\t "
       "\\r)"},
      // Parentheses and brackets.
      {"(1 == 2",
       "offset 7: expected ')' to close the '(' at offset 0, found the end of the "
       "expression"},
      {"((1)",
       "offset 4: expected ')' to close the '(' at offset 0, found the end of the "
       "expression"},
      {"(1 2)", "offset 3: expected ')' to close the '(' at offset 0, found '2'"},
      {"1 == 2)", "offset 6: unexpected ')' without a matching '('"},
      {"()", "offset 1: expected an operand after '(', found ')'"},
      {"[1, 2",
       "offset 5: expected ',' or ']' in the list at offset 0, found the end of the "
       "expression"},
      {"[1 2]", "offset 3: expected ',' or ']' in the list at offset 0, found '2'"},
      {"[1, ]", "offset 4: expected an operand after ',', found ']'"},
      {"[,]", "offset 1: expected an operand after '[', found ','"},
      // Dangling operators.
      {"$(trigger.x) ==", "offset 15: expected an operand after '=='"},
      {"$(trigger.x) == ", "offset 16: expected an operand after '=='"},
      {"1 <", "offset 3: expected an operand after '<'"},
      {"1 and", "offset 5: expected an operand after 'and'"},
      {"1 ||", "offset 4: expected an operand after '||'"},
      {"not", "offset 3: expected an operand after 'not'"},
      {"!", "offset 1: expected an operand after '!'"},
      {"-", "offset 1: expected an operand after '-'"},
      {"1 in", "offset 4: expected an operand after 'in'"},
      {"1 not in", "offset 8: expected an operand after 'in'"},
      {"== 1", "offset 0: expected an operand, found '=='"},
      {"and 1", "offset 0: expected an operand, found 'and'"},
      {"1 == == 2", "offset 5: expected an operand after '==', found '=='"},
      {"1 == and", "offset 5: expected an operand after '==', found 'and'"},
      {"1 not 2", "offset 6: expected 'in' after 'not', found '2'"},
      {"1 = 1", "offset 2: unexpected '=' (use '==' to compare)"},
      {"1 & 1", "offset 2: unexpected '&' (use '&&' or 'and')"},
      {"1 | 1", "offset 2: unexpected '|' (use '||' or 'or')"},
      {"1 + 1", "offset 2: unexpected character '+'"},
      {"1 == {}", "offset 5: unexpected character '{'"},
      {"1 == \x01", "offset 5: unexpected character '\\x01'"},
      // Chained comparisons.
      {"1 < 2 < 3",
       "offset 6: comparisons cannot be chained (write 'a < b and b < c', or use "
       "parentheses)"},
      {"1 == 1 not in [1]",
       "offset 7: comparisons cannot be chained (write 'a < b and b < c', or "
       "use parentheses)"},
      // Functions and names.
      {"size('abc')", "offset 0: unknown function 'size' (the only function is len)"},
      {"1 < count ( 2 )", "offset 4: unknown function 'count' (the only function is len)"},
      {"len 'abc'", "offset 4: expected '(' after 'len', found 'abc'"},
      {"len()", "offset 4: len() takes exactly one argument"},
      {"len('a', 'b')", "offset 7: len() takes exactly one argument"},
      {"len('a'",
       "offset 7: expected ')' to close the 'len(' at offset 3, found the end of the "
       "expression"},
      {"LEVEL > 2", "offset 0: unknown name 'LEVEL' (did you mean '$LEVEL'?)"},
      {"yes",
       "offset 0: unknown name 'yes' (expected a literal, a reference such as "
       "$(steps.<step>.<field>), steps.<step>.<field> or trigger.<field>, or len(...))"},
      {"TRUE", "offset 0: unknown name 'TRUE' (did you mean '$TRUE'?)"},
      // Trailing tokens.
      {"1 2", "offset 2: expected an operator or the end of the expression, found '2'"},
      {"$(trigger.x) 'y'",
       "offset 13: expected an operator or the end of the expression, found 'y'"},
      {"1 \"two\"", "offset 2: expected an operator or the end of the expression, found \"two\""},
      {"true false", "offset 5: expected an operator or the end of the expression, found 'false'"},
      {"steps.a.status succeeded",
       "offset 15: expected an operator or the end of the "
       "expression, found 'succeeded'"},
      {"trigger.items[x]",
       "offset 13: expected an operator or the end of the expression, found "
       "'['"},
      // Numbers.
      {"1.", "offset 0: invalid number '1.'"},
      {"1.2.3", "offset 0: invalid number '1.2.3'"},
      {"12ab == 1", "offset 0: invalid number '12ab'"},
      {"2e", "offset 0: invalid number '2e'"},
      {"1e999999", "offset 0: invalid number '1e999999'"},
      // References.
      {"1 == $", "offset 5: expected '(', '{' or a variable name after '$'"},
      {"$sum > 1",
       "offset 0: invalid variable reference '$sum' (variable names are "
       "[A-Z_][A-Z0-9_]*)"},
      {"1 == $(trigger.x", "offset 5: unterminated '$(' (missing ')')"},
      {"1 == ${X:-y", "offset 5: unterminated '${' (missing '}')"},
      {"1 == $(foo.bar)",
       "offset 5: unknown reference root 'foo' (expected trigger, input, "
       "steps or a VARIABLE)"},
      {"1 == $()", "offset 5: empty reference '$()'"},
      {"1 == ${lower}",
       "offset 5: invalid variable reference '${lower}': names are "
       "[A-Z_][A-Z0-9_]* (write '$${' for a literal '${')"},
      {"1 == ${X:-${lower}}",
       "offset 10: invalid variable reference '${lower}': names are "
       "[A-Z_][A-Z0-9_]* (write '$${' for a literal '${')"},
      {"steps == 1", "offset 0: expected a step name after 'steps' (steps.<step>.<field>)"},
      {"steps.a. == 1", "offset 8: expected a field name after '.'"},
      {"trigger. == 1", "offset 8: expected a field name after '.'"},
      {"1 == steps.a[9999999999]",
       "offset 5: invalid array index (expected '[<0-999999999>]') "
       "in '$(steps.a[9999999999])'"},
      // Templates inside string literals: offsets point into the expression.
      {"'ab${lower}' == 1",
       "offset 3: invalid variable reference '${lower}': names are "
       "[A-Z_][A-Z0-9_]* (write '$${' for a literal '${')"},
      {R"('\'\'$(trigger.x' == 1)", "offset 5: unterminated '$(' (missing ')')"},
  };
  for (const ErrorCase& c : cases) {
    Result<std::shared_ptr<const Expression>> e = ParseExpression(c.text);
    ASSERT_FALSE(e.ok()) << c.text;
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument) << c.text;
    EXPECT_EQ(e.status().message(), c.message) << c.text;
  }
}

TEST_F(ExpressionTest, NestingDepthIsBounded) {
  auto nested = [](std::string_view open, std::string_view inner, std::string_view close, int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += open;
    s += inner;
    for (int i = 0; i < n; ++i) s += close;
    return s;
  };
  const std::string kTooDeep = "expression nested more than 64 levels deep";
  // Exactly at the limit.
  EXPECT_EQ(Eval(nested("(", "1", ")", 64)).value, 1);
  EXPECT_EQ(Eval(nested("[", "1", "]", 64)).value.dump(), nested("[", "1", "]", 64));
  EXPECT_EQ(Eval(nested("not ", "true", "", 64)).value, true);
  EXPECT_EQ(Eval(nested("-", "1", "", 64)).value, 1);
  EXPECT_EQ(Eval(nested("len(", "'abc'", ")", 1)).value, 3);
  EXPECT_EQ(Eval(nested("(", "-$(trigger.count)", ")", 63)).value, -4);

  // One beyond, and far beyond (no stack overflow: the parser stops at the limit).
  const std::vector<std::pair<std::string, size_t>> cases = {
      {nested("(", "1", ")", 65), 64},       {nested("[", "1", "]", 65), 64},
      {nested("not ", "true", "", 65), 256}, {nested("!", "true", "", 65), 64},
      {nested("-", "1", "", 65), 64},        {nested("len(", "'a'", ")", 65), 256},
      {nested("(", "-1", ")", 64), 64},      {nested("(", "1", ")", 2000), 64},
      {nested("[", "", "", 4000), 64},
  };
  for (const auto& [text, offset] : cases) {
    Result<std::shared_ptr<const Expression>> e = ParseExpression(text);
    ASSERT_FALSE(e.ok()) << text.substr(0, 20);
    EXPECT_EQ(e.status().message(), "offset " + std::to_string(offset) + ": " + kTooDeep)
        << text.substr(0, 20);
  }
}

TEST_F(ExpressionTest, LengthIsBounded) {
  // Long flat chains are fine (and/or are n-ary; evaluation does not recurse per operand).
  std::string chain = "true";
  while (chain.size() + 9 <= kMaxExpressionLength) chain += " and true";
  EXPECT_EQ(Eval(chain).value, true);
  std::string ors = "0";
  while (ors.size() + 5 <= kMaxExpressionLength) ors += " or 0";
  EXPECT_EQ(Eval(ors).value, false);

  std::string too_long(kMaxExpressionLength + 1, ' ');
  too_long[0] = '1';
  Result<std::shared_ptr<const Expression>> e = ParseExpression(too_long);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().message(), "offset 4096: expression longer than 4096 bytes");
  EXPECT_TRUE(ParseExpression(too_long.substr(0, kMaxExpressionLength)).ok());
}

// ---------------------------------------------------------------------------------------------
// Evaluation errors.

TEST_F(ExpressionTest, EvaluationErrors) {
  const std::vector<ErrorCase> cases = {
      // Ordering between incompatible types.
      {"'abc' < 3", "offset 6: '<' cannot compare string with number"},
      {"3 >= 'abc'", "offset 2: '>=' cannot compare number with string"},
      {"true < false", "offset 5: '<' cannot compare boolean with boolean"},
      {"[1] <= [2]", "offset 4: '<=' cannot compare array with array"},
      {"$(trigger.opts) > 1", "offset 16: '>' cannot compare object with number"},
      {"null > 1", "offset 5: '>' cannot compare null with number"},
      {"$(steps.missing.count) > 3",
       "offset 23: '>' cannot compare null (unresolved reference "
       "$(steps.missing.count)) with number"},
      {"1 < steps.missing.count",
       "offset 2: '<' cannot compare number with null (unresolved "
       "reference steps.missing.count)"},
      {"$(steps.fetch.none) > 1", "offset 20: '>' cannot compare null with number"},
      // Membership.
      {"1 in 'abc'",
       "offset 2: 'in' needs a string on the left when the right side is a "
       "string, got number"},
      {"1 not in $(trigger.opts)",
       "offset 2: 'not in' needs a string on the left when the "
       "right side is an object, got number"},
      {"'a' in null", "offset 4: 'in' needs an array, string or object on the right, got null"},
      {"'a' in 5", "offset 4: 'in' needs an array, string or object on the right, got number"},
      {"'a' in $(steps.missing.tags)",
       "offset 4: 'in' needs an array, string or object on the "
       "right, got null (unresolved reference "
       "$(steps.missing.tags))"},
      // len().
      {"len(3)", "offset 0: len() needs a string, array or object, got number"},
      {"len(true)", "offset 0: len() needs a string, array or object, got boolean"},
      {"1 == len($(steps.missing.items))",
       "offset 5: len() needs a string, array or object, "
       "got null (unresolved reference "
       "$(steps.missing.items))"},
      {"len( 'a' in 'abc' or 'xy' )",
       "offset 0: len() needs a string, array or object, got "
       "boolean"},
      // Unary minus.
      {"-'3'", "offset 0: unary '-' needs a number, got string"},
      {"-$(trigger.tags)", "offset 0: unary '-' needs a number, got array"},
      // Errors inside nested expressions propagate.
      {"true and (false or [1] < 2)", "offset 23: '<' cannot compare array with number"},
  };
  for (const ErrorCase& c : cases) {
    std::shared_ptr<const Expression> e = Parse(c.text);
    ASSERT_NE(e, nullptr) << c.text;
    Result<ExpressionValue> v = EvaluateExpression(*e, ctx_);
    ASSERT_FALSE(v.ok()) << c.text << " gave " << v->value.dump();
    EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument) << c.text;
    EXPECT_EQ(v.status().message(), c.message) << c.text;
  }
}

TEST_F(ExpressionTest, NegationOfReferencesAndExtremes) {
  const std::vector<EvalCase> cases = {
      {"-$(trigger.count)", -4},
      {"-$(steps.a.ratio)", -2.5},
      {"-(-9223372036854775808)", 9223372036854775808.0},
      {"-(9223372036854775808)", Json(INT64_MIN)},
      {"-(-(18446744073709551615))", 18446744073709551615.0},
      {"-$(steps.a.count) < 0", true},
  };
  ExpectValues(cases);
}

}  // namespace
}  // namespace cortex::registry
