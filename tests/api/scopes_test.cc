// Scopes (api/scopes.h): what a scope may say, what it covers, and the route table's targets.
#include "api/scopes.h"

#include <gtest/gtest.h>

#include <string>

#include "api/auth.h"
#include "common/json.h"

namespace cortex::api {
namespace {

TEST(GlobMatch, StarsAndQuestionMarksMatchTheWholeName) {
  EXPECT_TRUE(GlobMatch("nightly-*", "nightly-backup"));
  EXPECT_TRUE(GlobMatch("nightly-*", "nightly-"));
  EXPECT_FALSE(GlobMatch("nightly-*", "nightly"));
  EXPECT_FALSE(GlobMatch("nightly-*", "a-nightly-backup"));
  EXPECT_TRUE(GlobMatch("*-web-*", "team-web-scraper"));
  EXPECT_FALSE(GlobMatch("*-web-*", "team-web"));
  EXPECT_TRUE(GlobMatch("a?c", "abc"));
  EXPECT_FALSE(GlobMatch("a?c", "ac"));
  EXPECT_TRUE(GlobMatch("*", ""));
  EXPECT_TRUE(GlobMatch("exact", "exact"));
  EXPECT_FALSE(GlobMatch("exact", "exact2"));
  EXPECT_FALSE(GlobMatch("exact", "Exact"));  // names are case-sensitive
  EXPECT_TRUE(GlobMatch("**a*b*", "xxaxxb"));
  // A star is a star even where the text has one (found by the inputs fuzzer).
  EXPECT_TRUE(GlobMatch("*", "*:a"));
  EXPECT_TRUE(GlobMatch("a*", "a*b"));
}

TEST(GlobMatch, AHostilePatternTakesLinearTime) {
  // A backtracking matcher takes exponential time on this; ours makes one pass per star.
  std::string pattern, text(128, 'a');
  for (int i = 0; i < 40; ++i) pattern += "a*";
  pattern += "b";
  EXPECT_FALSE(GlobMatch(pattern, text));
}

TEST(InScope, NoScopesCoverEverythingAndAScopeOnlyItsKindAndNames) {
  EXPECT_TRUE(InScope({}, "tool", "anything"));
  const std::vector<std::string> scopes = {"workflow:nightly-*", "tool:calculator", "*:team-a-*"};
  EXPECT_TRUE(InScope(scopes, "workflow", "nightly-backup"));
  EXPECT_FALSE(InScope(scopes, "tool", "nightly-backup"));
  EXPECT_TRUE(InScope(scopes, "tool", "calculator"));
  EXPECT_FALSE(InScope(scopes, "tool", "calculator2"));
  EXPECT_TRUE(InScope(scopes, "relic", "team-a-db"));
  EXPECT_TRUE(InScope(scopes, "agent", "team-a-helper"));
  EXPECT_FALSE(InScope(scopes, "agent", "team-b-helper"));
}

TEST(CheckScope, NamesWhatIsWrong) {
  EXPECT_TRUE(CheckScope("workflow:nightly-*").ok());
  EXPECT_TRUE(CheckScope("*:*").ok());
  EXPECT_TRUE(CheckScope("monument:prod_stack-?").ok());
  auto message = [](std::string_view s) { return CheckScope(s).message(); };
  EXPECT_NE(message("nightly").find("has no kind"), std::string::npos);
  EXPECT_NE(message("workflows:x").find("names no kind"), std::string::npos);
  EXPECT_NE(message("tool:").find("no name pattern"), std::string::npos);
  EXPECT_NE(message("tool:a b").find("character"), std::string::npos);
  EXPECT_NE(message("tool:a:b").find("character"), std::string::npos);
  EXPECT_NE(message("tool:" + std::string(129, 'a')).find("longer than 128"), std::string::npos);
  std::string invalid = "tool:\xff\xfe";
  EXPECT_FALSE(CheckScope(invalid).ok());
  EXPECT_TRUE(IsValidUtf8(CheckScope(invalid).message()));
  std::vector<std::string> many(kMaxScopes + 1, "tool:x");
  EXPECT_NE(CheckScopes(many).message().find("at most"), std::string::npos);
  EXPECT_TRUE(CheckScopes({}).ok());
}

TEST(RouteTargets, EveryRuleSaysWhatItActsOnInAFormTheFilterReads) {
  for (const RouteRule& r : RouteRules()) {
    SCOPED_TRACE(std::string(r.method) + " " + r.pattern);
    std::string_view target = r.target;
    if (target == "any" || target == "global") continue;
    if (target == "body" || target == "each") {
      EXPECT_EQ(std::string(r.method), "POST") << "only a body names a manifest";
      continue;
    }
    const size_t colon = target.find(':');
    ASSERT_NE(colon, std::string_view::npos);
    std::string kind(target.substr(0, colon));
    std::string param(target.substr(colon + 1));
    EXPECT_TRUE(kind == "{kind}" || kind == "execution" || kind == "run" || kind == "agent-run" ||
                kind == "session" || CheckScope(kind + ":x").ok())
        << kind;
    EXPECT_NE(std::string(r.pattern).find(param), std::string::npos)
        << "the target's parameter " << param << " is not in the path";
    if (kind == "{kind}") {
      EXPECT_NE(std::string(r.pattern).find("{kind}"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace cortex::api
