#include "api/scopes.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "common/json.h"

namespace cortex::api {
namespace {

constexpr std::array<std::string_view, 6> kScopeKinds = {"tool",     "agent",    "relic",
                                                         "workflow", "monument", "*"};

}  // namespace

Status CheckScope(std::string_view scope) {
  const std::string shown =
      scope.size() > 60 ? std::string(scope.substr(0, 60)) + "..." : std::string(scope);
  auto bad = [&](const std::string& why) {
    return InvalidArgumentError("scope '" + ToValidUtf8(shown) + "' " + why +
                                " (a scope is kind:pattern, e.g. workflow:nightly-*, where kind "
                                "is tool, agent, relic, workflow, monument or *)");
  };
  const size_t colon = scope.find(':');
  if (colon == std::string_view::npos) return bad("has no kind");
  std::string_view kind = scope.substr(0, colon), pattern = scope.substr(colon + 1);
  if (std::find(kScopeKinds.begin(), kScopeKinds.end(), kind) == kScopeKinds.end()) {
    return bad("names no kind Cortex has");
  }
  if (pattern.empty()) return bad("has no name pattern");
  if (pattern.size() > 128) return bad("has a pattern longer than 128 characters");
  for (char c : pattern) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '*' &&
        c != '?') {
      return bad(
          "has a pattern with a character names cannot have; use letters, digits, "
          "'_', '-', '*' and '?'");
    }
  }
  return Status::Ok();
}

Status CheckScopes(const std::vector<std::string>& scopes) {
  if (scopes.size() > kMaxScopes) {
    return InvalidArgumentError("at most " + std::to_string(kMaxScopes) + " scopes, not " +
                                std::to_string(scopes.size()));
  }
  for (const auto& s : scopes) CORTEX_RETURN_IF_ERROR(CheckScope(s));
  return Status::Ok();
}

bool InScope(const std::vector<std::string>& scopes, std::string_view kind, std::string_view name) {
  if (scopes.empty()) return true;
  for (std::string_view s : scopes) {
    const size_t colon = s.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view k = s.substr(0, colon);
    if ((k == "*" || k == kind) && GlobMatch(s.substr(colon + 1), name)) return true;
  }
  return false;
}

std::string ScopeKind(registry::Kind kind) {
  std::string name(registry::EnumName(kind));
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

bool GlobMatch(std::string_view pattern, std::string_view text) {
  // Greedy with one backtrack point, the last '*': linear in practice, never exponential.
  size_t p = 0, t = 0, star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {  // before the literal case: '*' == '*'
      star = p++;
      resume = t;
    } else if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace cortex::api
