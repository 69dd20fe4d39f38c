// Scopes narrow what a caller's role applies to (docs/security.md, "Scoped keys"): a scope is
// "kind:pattern", where kind is tool, agent, relic, workflow, monument or `*`, and the pattern
// is a manifest name in which `*` stands for any run of characters and `?` for one. A caller
// with scopes may act only on the manifests one of them covers (and on the runs of those); one
// without any may act on everything its role allows.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "registry/manifest.h"

namespace cortex::api {

inline constexpr size_t kMaxScopes = 32;

// InvalidArgument naming what is wrong with `scope`, or with the list (at most kMaxScopes).
Status CheckScope(std::string_view scope);
Status CheckScopes(const std::vector<std::string>& scopes);

// True when `scopes` is empty or one of them covers the manifest `name` of `kind` ("tool",
// "agent", "relic", "workflow", "monument"; lowercase).
bool InScope(const std::vector<std::string>& scopes, std::string_view kind, std::string_view name);

// A kind as scopes name it: "tool", "agent"...
std::string ScopeKind(registry::Kind kind);

// Shell-style match of the whole `text`: `*` any run of characters (none too), `?` one.
bool GlobMatch(std::string_view pattern, std::string_view text);

}  // namespace cortex::api
