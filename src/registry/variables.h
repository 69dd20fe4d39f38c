// The template language of manifest values: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
// `$(VAR)`, `$(trigger.x)`, `$(input.x)`, `$(steps.s)`, `$(steps.s.path[0].x)`,
// `$(steps.s.status)` and the `$$` escape. The user-facing description is docs/variables.md.
//
// The registry keeps templates as written and checks them at load time with ParseTemplate (no
// context needed). Values are produced at execution time by ResolveString / ResolveJson with a
// VariableContext that carries everything the resolver reads: it never calls getenv() or now().
//
// Nothing here throws. Syntax errors are InvalidArgument Statuses whose message starts with
// "offset N: " (N = byte offset of the offending `$` in the string). References that cannot be
// resolved are not errors: they stay verbatim and are listed in Resolution::unresolved, and the
// caller decides.
//
// Bounds: defaults nest at most kMaxDefaultDepth levels; ResolveJson descends at most
// kMaxJsonDepth levels of objects/arrays. Both are syntax/argument errors beyond that.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace cortex::registry {

inline constexpr int kMaxDefaultDepth = 8;
inline constexpr int kMaxJsonDepth = 256;

// What a step has recorded so far, as seen by `$(steps.<name>...)`.
struct StepOutcome {
  std::string_view status;                         // "succeeded", "failed", "skipped", ...
  const nlohmann::ordered_json* output = nullptr;  // null when the step produced no output
};

// Everything resolution may read. Cheap to build per run/step; all members are optional.
struct VariableContext {
  // Environment lookup for names that are not built-ins (and for HOME, USER, PWD, HOSTNAME).
  // Empty function = no environment.
  std::function<std::optional<std::string>(std::string_view name)> env;
  // The instant TIMESTAMP, TIMESTAMP_UNIX, DATE, TIME and DATETIME describe (UTC).
  std::chrono::system_clock::time_point now;
  // Explicit values (AGENT_NAME, SESSION_ID, WORKFLOW_ID, RUN_ID, the manifest's
  // `environment.variables`, ...). They override built-ins, the clock and the environment.
  std::map<std::string, std::string, std::less<>> variables;
  // The run's inputs, read by `$(trigger.x)` / `$(input.x)`. Null = no trigger.
  const nlohmann::ordered_json* trigger = nullptr;
  // A step's recorded outcome, or nullopt when it has none (not run yet, unknown name).
  // Empty function = no steps.
  std::function<std::optional<StepOutcome>(std::string_view step)> step;
};

struct Resolution {
  nlohmann::ordered_json value;
  // The text of every reference left verbatim in `value` because it could not be resolved
  // (each entry appears as-is in the output), in order of first appearance, without duplicates.
  std::vector<std::string> unresolved;
};

// One reference found in a template.
struct Reference {
  enum class Kind {
    kVariable,  // `$VAR`, `${VAR...}`, `$(VAR)`: name = VAR, path empty
    kTrigger,   // `$(trigger.x...)` / `$(input.x...)`: name = first key ("x"), path = the rest
    kStep,      // `$(steps.s...)`: name = step ("s"), path after it ("items[0].id", "status", "")
  };
  Kind kind = Kind::kVariable;
  std::string name;
  std::string path;                          // as written, without the leading '.'
  std::optional<std::string> default_value;  // the default's text as written (`${VAR:-...}`)
  bool default_if_empty = false;             // `:-` (true) rather than `-` (false)
  size_t offset = 0;                         // byte offset of the reference's `$` in the text
  size_t length = 0;                         // byte length of the whole reference

  friend bool operator==(const Reference&, const Reference&) = default;
};

// Load-time check: every reference in `text` in source order, including references nested in
// defaults (listed after the reference that holds them), or the first syntax error.
Result<std::vector<Reference>> ParseTemplate(std::string_view text);

// Resolves one string. A string that is exactly one reference keeps the JSON type of the
// referenced value (`"$(steps.a.items)"` gives an array); otherwise the result is a string with
// each reference's text spliced in (strings as-is, other JSON compact-dumped). Variables are
// always strings. A string without '$' is returned as-is without being scanned further.
Result<Resolution> ResolveString(std::string_view text, const VariableContext& ctx);

using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;

// `env` limited to the names on `allow` (an exact name, or a prefix ending in '*': "APP_*"):
// the environment a manifest posted through the API may read (variables.allow_env).
EnvLookup AllowListedEnv(EnvLookup env, std::vector<std::string> allow);

// Resolves every string value in `value`, recursively through objects and arrays; keys and
// non-string values are kept. Errors are prefixed with the JSON pointer of the failing string.
Result<Resolution> ResolveJson(const nlohmann::ordered_json& value, const VariableContext& ctx);

// The value at `path` in `root`, or nullptr when there is none (or the path is malformed): keys
// joined by '.', array indexes as `[0]` or `.0`, after an optional `$` ("$.items[0].id",
// "items.0.id"). What `$(steps.s.<path>)` in a template and a step's output_mapping both read.
const nlohmann::ordered_json* JsonAtPath(const nlohmann::ordered_json& root, std::string_view path);

}  // namespace cortex::registry
