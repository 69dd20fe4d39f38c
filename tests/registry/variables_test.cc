#include "registry/variables.h"

#include <chrono>
#include <map>
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
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// 2026-11-25T12:34:56Z
constexpr std::chrono::sys_seconds kNoon{std::chrono::seconds{1795610096}};

// A context with a fake environment, a fixed clock, a trigger and two recorded steps.
class VariablesTest : public ::testing::Test {
 protected:
  VariablesTest() {
    ctx_.env = [this](std::string_view name) -> std::optional<std::string> {
      auto it = env_.find(name);
      if (it == env_.end()) return std::nullopt;
      return it->second;
    };
    ctx_.now = kNoon;
    ctx_.trigger = &trigger_;
    ctx_.step = [this](std::string_view name) -> std::optional<StepOutcome> {
      if (name == "fetch") return StepOutcome{"succeeded", &fetch_output_};
      if (name == "noop") return StepOutcome{"skipped", nullptr};
      return std::nullopt;
    };
  }

  // Resolves and expects success.
  Resolution Resolve(std::string_view text) {
    Result<Resolution> r = ResolveString(text, ctx_);
    EXPECT_TRUE(r.ok()) << text << " -> " << r.status().ToString();
    return r.ok() ? std::move(r).value() : Resolution{};
  }
  std::string ResolveText(std::string_view text) {
    Resolution r = Resolve(text);
    EXPECT_TRUE(r.value.is_string()) << r.value.dump();
    return r.value.is_string() ? r.value.get<std::string>() : "";
  }
  Status ErrorOf(std::string_view text) {
    Result<Resolution> r = ResolveString(text, ctx_);
    EXPECT_FALSE(r.ok()) << text;
    return r.status();
  }

  std::map<std::string, std::string, std::less<>> env_ = {
      {"KV_STORE_URL", "http://kv:8000"}, {"EMPTY", ""}, {"HOME", "/home/alice"}};
  Json trigger_ = Json::parse(R"({"query": "cats", "limit": 5, "tags": ["a", "b"],
                                   "opts": {"deep": {"x": true}}})");
  Json fetch_output_ = Json::parse(R"({"items": [{"id": 7, "name": "seven"}, {"id": 8}],
                                       "count": 2, "ok": true, "meta": {"source": "web"},
                                       "status": "from-output", "note": null})");
  VariableContext ctx_;
};

TEST_F(VariablesTest, StringWithoutDollarIsReturnedAsIs) {
  Resolution r = Resolve("plain text {with} (parens)");
  EXPECT_EQ(r.value, "plain text {with} (parens)");
  EXPECT_THAT(r.unresolved, IsEmpty());
  EXPECT_EQ(Resolve("").value, "");
}

TEST_F(VariablesTest, DollarAndBracedVariables) {
  EXPECT_EQ(ResolveText("$KV_STORE_URL/x"), "http://kv:8000/x");
  EXPECT_EQ(ResolveText("${KV_STORE_URL}/x"), "http://kv:8000/x");
  EXPECT_EQ(ResolveText("$(KV_STORE_URL)/x"), "http://kv:8000/x");
  EXPECT_EQ(ResolveText("a${HOME}b"), "a/home/aliceb");
}

TEST_F(VariablesTest, DefaultWhenUnsetValueWhenSet) {
  // MK1 turned this into "http://kv:8000:-http://localhost:8004}".
  EXPECT_EQ(ResolveText("${KV_STORE_URL:-http://localhost:8004}"), "http://kv:8000");
  env_.erase("KV_STORE_URL");
  EXPECT_EQ(ResolveText("${KV_STORE_URL:-http://localhost:8004}"), "http://localhost:8004");
  EXPECT_EQ(ResolveText("url=${KV_STORE_URL:-http://localhost:8004}/v1"),
            "url=http://localhost:8004/v1");
}

TEST_F(VariablesTest, ColonDashUsesDefaultForEmptyDashOnlyForUnset) {
  EXPECT_EQ(ResolveText("[${EMPTY:-d}]"), "[d]");
  EXPECT_EQ(ResolveText("[${EMPTY-d}]"), "[]");
  EXPECT_EQ(ResolveText("[${NOPE-d}]"), "[d]");
  EXPECT_EQ(ResolveText("[${NOPE:-}]"), "[]");
}

TEST_F(VariablesTest, DefaultsMayReferenceVariables) {
  EXPECT_EQ(ResolveText("${NOPE:-$HOME/data}"), "/home/alice/data");
  EXPECT_EQ(ResolveText("${NOPE:-${ALSO_NOPE:-${HOME}}}"), "/home/alice");
  EXPECT_EQ(ResolveText("${NOPE:-$(trigger.query)}"), "cats");
  // A whole-value default keeps its type.
  EXPECT_EQ(Resolve("${NOPE:-$(trigger.limit)}").value, 5);
}

TEST_F(VariablesTest, DefaultThatDoesNotResolveLeavesTheWholeReference) {
  Resolution r = Resolve("x ${NOPE:-${ALSO_NOPE}} y");
  EXPECT_EQ(r.value, "x ${NOPE:-${ALSO_NOPE}} y");
  EXPECT_THAT(r.unresolved, ElementsAre("${NOPE:-${ALSO_NOPE}}"));
}

TEST_F(VariablesTest, DefaultsNestAtMostEightDeep) {
  std::string ok = "$HOME";
  for (int i = 0; i < kMaxDefaultDepth; ++i) ok = "${N" + std::to_string(i) + ":-" + ok + "}";
  EXPECT_EQ(ResolveText(ok), "/home/alice");
  std::string too_deep = "${TOO:-" + ok + "}";
  EXPECT_THAT(ErrorOf(too_deep).message(), HasSubstr("nested more than 8 levels"));
  // Pathological input fails fast instead of recursing.
  std::string huge;
  for (int i = 0; i < 100000; ++i) huge += "${A:-";
  EXPECT_EQ(ErrorOf(huge).code(), StatusCode::kInvalidArgument);
}

TEST_F(VariablesTest, TriggerAndInputReferences) {
  EXPECT_EQ(ResolveText("q=$(trigger.query)"), "q=cats");
  EXPECT_EQ(ResolveText("q=$(input.query)"), "q=cats");
  EXPECT_EQ(Resolve("$(trigger.opts.deep.x)").value, true);
  EXPECT_EQ(ResolveText("$(trigger.tags[1])"), "b");
  EXPECT_EQ(Resolve("$(trigger)").value, trigger_);
  EXPECT_EQ(ResolveText("$( trigger.query )"), "cats");
}

TEST_F(VariablesTest, StepReferences) {
  EXPECT_EQ(Resolve("$(steps.fetch.count)").value, 2);
  EXPECT_EQ(ResolveText("$(steps.fetch.meta.source)"), "web");
  EXPECT_EQ(Resolve("$(steps.fetch)").value, fetch_output_);
  EXPECT_EQ(Resolve("$(steps.fetch.output)").value, fetch_output_);
  EXPECT_EQ(Resolve("$(steps.fetch.note)").value, nullptr);
}

TEST_F(VariablesTest, StepStatusAndTheOutputEscapeHatch) {
  EXPECT_EQ(ResolveText("$(steps.fetch.status)"), "succeeded");
  EXPECT_EQ(ResolveText("$(steps.noop.status)"), "skipped");
  EXPECT_EQ(ResolveText("$(steps.fetch.output.status)"), "from-output");
  EXPECT_EQ(ResolveText("$(steps.fetch.status) == 'succeeded'"), "succeeded == 'succeeded'");
}

TEST_F(VariablesTest, ArrayIndexPaths) {
  EXPECT_EQ(Resolve("$(steps.fetch.items[0].id)").value, 7);
  EXPECT_EQ(ResolveText("$(steps.fetch.items[0].name)"), "seven");
  EXPECT_EQ(Resolve("$(steps.fetch.items[1])").value, Json::parse(R"({"id": 8})"));
  EXPECT_EQ(Resolve("$(steps.fetch.items.1.id)").value, 8);  // `.1` on an array indexes it
}

TEST_F(VariablesTest, WholeValueReferencesKeepTheirType) {
  Json obj = Resolve("$(steps.fetch.meta)").value;
  EXPECT_TRUE(obj.is_object());
  EXPECT_EQ(obj, Json::parse(R"({"source": "web"})"));
  EXPECT_TRUE(Resolve("$(steps.fetch.count)").value.is_number_integer());
  EXPECT_TRUE(Resolve("$(steps.fetch.ok)").value.is_boolean());
  EXPECT_TRUE(Resolve("$(steps.fetch.items)").value.is_array());
  EXPECT_EQ(Resolve("$(trigger.tags)").value, Json::parse(R"(["a", "b"])"));
  // Variables are text, even whole.
  EXPECT_EQ(Resolve("$TIMESTAMP_UNIX").value, "1795610096");
}

TEST_F(VariablesTest, EmbeddedReferencesSpliceText) {
  EXPECT_EQ(ResolveText("n=$(steps.fetch.count) ok=$(steps.fetch.ok)"), "n=2 ok=true");
  EXPECT_EQ(ResolveText("meta=$(steps.fetch.meta)"), R"(meta={"source":"web"})");
  EXPECT_EQ(ResolveText("tags: $(trigger.tags)!"), R"(tags: ["a","b"]!)");
  EXPECT_EQ(ResolveText(" $(steps.fetch.count)"), " 2");  // not whole: a leading space
}

TEST_F(VariablesTest, ClockBuiltinsUseTheInjectedClock) {
  EXPECT_EQ(ResolveText("$TIMESTAMP"), "2026-11-25T12:34:56Z");
  EXPECT_EQ(ResolveText("$DATE|$TIME|$DATETIME"), "2026-11-25|12:34:56|2026-11-25 12:34:56");
  EXPECT_EQ(ResolveText("${TIMESTAMP_UNIX}"), "1795610096");

  // Never frozen: another context (another moment) gives another value.
  VariableContext later = ctx_;
  later.now = kNoon + std::chrono::hours(36) + std::chrono::milliseconds(999);
  Result<Resolution> r = ResolveString("$TIMESTAMP", later);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->value, "2026-11-27T00:34:56Z");
  EXPECT_EQ(ResolveText("$TIMESTAMP"), "2026-11-25T12:34:56Z");
}

TEST_F(VariablesTest, ContextBuiltinsAndTheirFallbacks) {
  EXPECT_EQ(ResolveText("$AGENT_NAME/$AGENT_ID/$AGENT_VERSION"), "unknown/unknown/1.0");
  EXPECT_EQ(ResolveText("$SESSION_ID,$USER_ID,[$USER_INTENT]"), "unknown,default,[]");
  EXPECT_EQ(ResolveText("$ITERATION_COUNT $CONFIDENCE $ERROR_COUNT [$LAST_RESULT]"), "0 0.0 0 []");
  EXPECT_EQ(ResolveText("$TASK_ID $TASK_STATUS $TASK_PRIORITY"), "unknown pending normal");
  ctx_.variables = {{"AGENT_NAME", "scribe"}, {"SESSION_ID", "s-1"}, {"WORKFLOW_ID", "wf"}};
  EXPECT_EQ(ResolveText("$AGENT_NAME@$SESSION_ID in $WORKFLOW_ID"), "scribe@s-1 in wf");
}

TEST_F(VariablesTest, RunIdentifiersHaveNoFallbackAndIgnoreTheEnvironment) {
  env_["RUN_ID"] = "from-process-env";
  env_["SESSION_ID"] = "from-process-env";
  Resolution r = Resolve("$RUN_ID $STEP_NAME $SESSION_ID");
  EXPECT_EQ(r.value, "$RUN_ID $STEP_NAME unknown");
  EXPECT_THAT(r.unresolved, ElementsAre("$RUN_ID", "$STEP_NAME"));
}

TEST_F(VariablesTest, EnvironmentBuiltins) {
  EXPECT_EQ(ResolveText("$HOME"), "/home/alice");                           // from env
  EXPECT_EQ(ResolveText("$USER:$PWD:$HOSTNAME"), "cortex:/:cortex-prime");  // fallbacks
  env_["HOSTNAME"] = "box";
  EXPECT_EQ(ResolveText("$HOSTNAME"), "box");
  // A template default beats a built-in fallback.
  EXPECT_EQ(ResolveText("${USER:-nobody} ${AGENT_NAME:-anon}"), "nobody anon");
}

TEST_F(VariablesTest, ExplicitVariablesOverrideEnvironmentAndBuiltins) {
  ctx_.variables = {{"HOME", "/srv"}, {"KV_STORE_URL", "http://explicit"}, {"DATE", "today"}};
  EXPECT_EQ(ResolveText("$HOME $KV_STORE_URL $DATE"), "/srv http://explicit today");
}

TEST_F(VariablesTest, NoEnvironmentNoTriggerNoSteps) {
  VariableContext empty;
  Result<Resolution> r = ResolveString("$KV_STORE_URL $(trigger.q) $(steps.a) $HOME", empty);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->value, "$KV_STORE_URL $(trigger.q) $(steps.a) /home/cortex");
  EXPECT_THAT(r->unresolved, ElementsAre("$KV_STORE_URL", "$(trigger.q)", "$(steps.a)"));
}

TEST_F(VariablesTest, LowercaseDigitsAndLoneDollarsPassThrough) {
  EXPECT_EQ(ResolveText("total=$sum"), "total=$sum");
  EXPECT_EQ(ResolveText("$output_key and $Path and $HOMEdir"),
            "$output_key and $Path and $HOMEdir");
  EXPECT_EQ(ResolveText("costs $5"), "costs $5");
  EXPECT_EQ(ResolveText("a $ b $"), "a $ b $");
  EXPECT_THAT(Resolve("$sum $5 $").unresolved, IsEmpty());
}

TEST_F(VariablesTest, DoubleDollarEscapes) {
  EXPECT_EQ(ResolveText("$$HOME"), "$HOME");
  EXPECT_EQ(ResolveText("$${HOME} $$(trigger.query) $$"), "${HOME} $(trigger.query) $");
  EXPECT_EQ(ResolveText("$$$HOME"), "$/home/alice");
  EXPECT_EQ(ResolveText("echo $$(date)"), "echo $(date)");
}

TEST_F(VariablesTest, UnresolvedReferencesStayVerbatimAndAreListed) {
  Resolution r = Resolve(
      "$NOPE ${NOPE} $(trigger.missing) $(steps.ghost.x) $(steps.noop.x) "
      "$(steps.fetch.items[9]) $(steps.fetch.status.x) $NOPE");
  EXPECT_EQ(r.value,
            "$NOPE ${NOPE} $(trigger.missing) $(steps.ghost.x) $(steps.noop.x) "
            "$(steps.fetch.items[9]) $(steps.fetch.status.x) $NOPE");
  EXPECT_THAT(r.unresolved,
              ElementsAre("$NOPE", "${NOPE}", "$(trigger.missing)", "$(steps.ghost.x)",
                          "$(steps.noop.x)", "$(steps.fetch.items[9])", "$(steps.fetch.status.x)"));
}

TEST_F(VariablesTest, UnresolvedWholeValueGivesTheOriginalString) {
  Resolution r = Resolve("$(steps.ghost.items)");
  EXPECT_EQ(r.value, "$(steps.ghost.items)");
  EXPECT_THAT(r.unresolved, ElementsAre("$(steps.ghost.items)"));
}

TEST_F(VariablesTest, SyntaxErrorsNameTheOffsetAndTheProblem) {
  struct Case {
    std::string_view text;
    std::string_view message;
  };
  const Case cases[] = {
      {"abc ${HOME", "offset 4: unterminated '${'"},
      {"x${A:-${B}", "offset 1: unterminated '${'"},
      {"ab $(trigger.x", "offset 3: unterminated '$('"},
      {"${}", "offset 0: empty variable name"},
      {"  ${:-x}", "offset 2: empty variable name"},
      {"$()", "offset 0: empty reference '$()'"},
      {"go $(foo.bar)",
       "offset 3: unknown reference root 'foo' (expected trigger, input, steps or a VARIABLE)"},
      {"$(previous_step.status)", "unknown reference root 'previous_step'"},
      {"${agent.session_id}", "offset 0: invalid variable reference '${agent.session_id}'"},
      {"${lower}", "invalid variable reference '${lower}'"},
      {"${HOME:=x}", "unsupported operator"},
      {"$(steps)", "expected a step name"},
      {"$(steps.)", "expected a step name"},
      {"$(steps.a..b)", "empty or invalid path segment"},
      {"$(steps.a.items[x])", "invalid array index"},
      {"$(steps.a.items[1)", "invalid array index"},
      {"$(trigger.a b)", "unexpected character ' '"},
      {"$(HOME.x)", "a variable has no fields"},
  };
  for (const Case& c : cases) {
    Status st = ErrorOf(c.text);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(st.message(), HasSubstr(c.message)) << c.text;
    Result<std::vector<Reference>> parsed = ParseTemplate(c.text);
    ASSERT_FALSE(parsed.ok()) << c.text;
    EXPECT_EQ(parsed.status(), st) << c.text;
  }
}

TEST_F(VariablesTest, ResolveJsonWalksObjectsAndArrays) {
  Json in = Json::parse(R"j({
    "url": "${KV_STORE_URL:-http://localhost:8004}/items",
    "$KEYS_ARE_KEPT": "$HOME",
    "limit": "$(trigger.limit)",
    "items": ["$(steps.fetch.items[0])", "$(steps.fetch.count) items", 3, null, false,
              {"deep": ["$(steps.fetch.status)"]}],
    "missing": "$(steps.ghost)",
    "n": 1.5
  })j");
  Result<Resolution> r = ResolveJson(in, ctx_);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->value, Json::parse(R"j({
    "url": "http://kv:8000/items",
    "$KEYS_ARE_KEPT": "/home/alice",
    "limit": 5,
    "items": [{"id": 7, "name": "seven"}, "2 items", 3, null, false,
              {"deep": ["succeeded"]}],
    "missing": "$(steps.ghost)",
    "n": 1.5
  })j"));
  EXPECT_EQ(r->value.begin().key(), "url");  // order kept
  EXPECT_THAT(r->unresolved, ElementsAre("$(steps.ghost)"));
}

TEST_F(VariablesTest, ResolveJsonErrorsCarryTheJsonPointer) {
  Json in = Json::parse(R"({"steps": [{"a/b": {"x": "ok $HOME"}}, {"a/b": {"x": "bad ${"}}]})");
  Result<Resolution> r = ResolveJson(in, ctx_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "/steps/1/a~1b/x: offset 4: unterminated '${' (missing '}')");

  Result<Resolution> root = ResolveJson(Json("${"), ctx_);
  ASSERT_FALSE(root.ok());
  EXPECT_EQ(root.status().message(), "offset 0: unterminated '${' (missing '}')");
}

TEST_F(VariablesTest, ResolveJsonBoundsNesting) {
  Json deep = "$HOME";
  for (int i = 0; i < kMaxJsonDepth; ++i) deep = Json::array({deep});
  EXPECT_TRUE(ResolveJson(deep, ctx_).ok());
  deep = Json::array({deep});
  Result<Resolution> r = ResolveJson(deep, ctx_);
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("nested more than 256 levels"));
}

TEST_F(VariablesTest, ResolveJsonOnScalars) {
  Result<Resolution> r = ResolveJson(Json(42), ctx_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->value, 42);
  r = ResolveJson(Json("$(steps.fetch.meta)"), ctx_);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->value.is_object());
}

TEST(ParseTemplateTest, ListsReferencesInSourceOrder) {
  Result<std::vector<Reference>> r = ParseTemplate(
      "$HOME ${KV:-$(steps.a.items[0].id)} $(input.q.x[2]) $(steps.b) $(RUN_ID) $$NOT $low");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  using K = Reference::Kind;
  std::vector<Reference> want = {
      {K::kVariable, "HOME", "", std::nullopt, false, 0, 5},
      {K::kVariable, "KV", "", "$(steps.a.items[0].id)", true, 6, 29},
      {K::kStep, "a", "items[0].id", std::nullopt, false, 12, 22},
      {K::kTrigger, "q", "x[2]", std::nullopt, false, 36, 15},
      {K::kStep, "b", "", std::nullopt, false, 52, 10},
      {K::kVariable, "RUN_ID", "", std::nullopt, false, 63, 9},
  };
  EXPECT_EQ(r.value(), want);
}

TEST(ParseTemplateTest, TriggerPathsAndDefaults) {
  Result<std::vector<Reference>> r = ParseTemplate("$(trigger) $(trigger.tags[1]) ${X-d}");
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].kind, Reference::Kind::kTrigger);
  EXPECT_EQ((*r)[0].name, "");
  EXPECT_EQ((*r)[1].name, "tags");
  EXPECT_EQ((*r)[1].path, "[1]");
  EXPECT_EQ((*r)[2].default_value, "d");
  EXPECT_FALSE((*r)[2].default_if_empty);
}

TEST(ParseTemplateTest, NoReferences) {
  Result<std::vector<Reference>> r = ParseTemplate("no refs, $lower, $5, $$ESCAPED");
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r.value(), IsEmpty());
}

TEST(JsonAtPathTest, KeysAndIndexesInEitherSpelling) {
  const nlohmann::ordered_json v = {{"items", {{{"id", "a"}}, {{"id", "b"}}}}, {"n", 3}};
  auto at = [&](std::string_view path) {
    const auto* p = JsonAtPath(v, path);
    return p ? *p : nlohmann::ordered_json("<none>");
  };
  EXPECT_EQ(at("n"), 3);
  EXPECT_EQ(at("$.n"), 3);
  EXPECT_EQ(at("$n"), 3);
  EXPECT_EQ(at("items[1].id"), "b");
  EXPECT_EQ(at("items.1.id"), "b");
  EXPECT_EQ(at("$.items[0].id"), "a");
  EXPECT_EQ(at(""), v);
  EXPECT_EQ(at("$"), v);
  for (std::string_view missing : {"items[2]", "items.x", "n.m", "nope", "items[", "items[-1]",
                                   "items[99999999999]", "a b", "items..id", "\xff"}) {
    EXPECT_EQ(at(missing), "<none>") << missing;
  }
}

}  // namespace
}  // namespace cortex::registry
