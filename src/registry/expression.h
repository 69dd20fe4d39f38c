// The expression language of workflow `condition:` values, e.g.
//
//   $(steps.research_task.status) == 'success'
//   $(steps.a.count) > 3 and $(trigger.mode) in ['fast', 'full']
//   not ($(steps.check.ok) == true) or len($(steps.fetch.items)) >= 2
//
// Conditions are parsed at load time (ParseExpression, no context needed) and evaluated when the
// step is about to run (EvaluateExpression) with the same VariableContext the template resolver
// uses, so nothing here reads the process environment or the clock directly. Nothing throws.
//
// Grammar (lowest precedence first; keywords are lowercase):
//   expr       := or
//   or         := and { ('or' | '||') and }
//   and        := not { ('and' | '&&') not }
//   not        := ('not' | '!') not | comparison      -- '!' is a synonym of 'not', same precedence
//   comparison := unary [ op unary ]                   -- op: == != < <= > >= in, 'not in'
//   unary      := '-' unary | primary
//   primary    := number | string | true | false | null | True | False | None
//               | '[' [ expr { ',' expr } ] ']' | '(' expr ')' | 'len' '(' expr ')' | reference
// Comparisons do not chain: `a == b == c` is a syntax error (write `a == b and b == c`).
//
// Literals: numbers are JSON-style (`3`, `-2`, `1.5`, `2e3`; integers that do not fit 64 bits
// become floating point). Strings are 'single' or "double" quoted with the escapes \\ \' \" \n \t
// \r. A string literal is a template (variables.h): `"$(steps.a.status)"` and `'v$VERSION'`
// are resolved when evaluated and always give a string (non-string values are compact JSON);
// a reference in it that cannot be resolved stays verbatim, as in any manifest string, and is
// listed as unresolved. Write `$$` for a literal '$' followed by `(`, `{` or an uppercase name.
//
// References: `$(steps.s.path)`, `$(trigger.x)`, `$(input.x)`, `$VAR`, `${VAR}`, `${VAR:-d}`
// (exactly the template syntax of variables.h), and the bare forms `steps.s.path`, `trigger.x`,
// `input.x` (same meaning as with the `$( )` wrapper; `trigger`/`input` alone is all inputs).
// Variables are strings, so `${LEVEL:-3}` is the string "3". A reference that cannot be resolved
// (step not run, missing field, unset variable without default) evaluates to null and its text
// is listed in ExpressionValue::unresolved, so `$(steps.a.x) != null` tests for presence.
//
// Semantics:
// - `and` / `or` short-circuit and give booleans (from the truthiness of their operands); the
//   references of a branch that is not evaluated are not listed as unresolved. `not` gives a
//   boolean. A condition that is a single value (`$(trigger.enabled)`) gives that value: test it
//   with Truthy().
// - Truthiness: null, false, 0, 0.0, "", [] and {} are false; everything else is true.
// - `==` / `!=` never fail. Numbers compare numerically (1 == 1.0). If one side is a number and
//   the other a string that is entirely a number in the literal syntax above ("3", "-2.5",
//   "1e3"; not " 3" or "0x10"), they compare numerically: `${LEVEL:-3} == 3` is true. Otherwise
//   values of different types are unequal (no other coercion: `true == 1` and `null == false`
//   are false); arrays and objects compare structurally.
// - `<`, `<=`, `>`, `>=` order two numbers (with the numeric-string rule above) or two strings
//   (bytewise lexicographic: '10' < '9'). Any other pair, null included, is an evaluation error
//   naming the operator and both types.
// - `x in list` is true when an element equals x (with `==` semantics); `s in string` is
//   substring search (s must be a string); `k in object` tests for the key k (a string). A right
//   side of another type (null included) is an evaluation error. `not in` is the negation.
// - `len(x)`: characters (UTF-8 code points) of a string, elements of an array or object;
//   anything else (null included) is an evaluation error.
// - Unary `-` negates a number; anything else is an evaluation error.
// - Step-status aliases: when a side of `==` / `!=` is a step's status (`$(steps.s.status)`,
//   `steps.s.status`, or a string literal that is exactly such a reference), the strings
//   'success' and 'completed' on either side mean "succeeded", and 'failure' and 'error' mean
//   "failed"; the same applies to `$(steps.s.status) in [...]` (the list's strings). Nowhere
//   else: `$(trigger.x) == 'success'` compares plain strings. Status values are "pending",
//   "running", "succeeded", "failed", "skipped" and "cancelled".
//
// Errors: syntax errors are InvalidArgument Statuses whose message starts with "offset N: " (N
// = byte offset in the expression text) and says what was expected. Evaluation errors
// (type errors above) are InvalidArgument too, "offset N: " being the offset of the operator,
// and mention the unresolved reference when a null came from one.
//
// Bounds: the text is at most kMaxExpressionLength bytes; groupings (parentheses, list
// brackets, len(), `not`, unary `-`) nest at most kMaxExpressionDepth levels. Both are syntax
// errors beyond that; parsing and evaluation recurse no deeper than those bounds allow.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "registry/variables.h"

namespace cortex::registry {

inline constexpr size_t kMaxExpressionLength = 4096;
inline constexpr int kMaxExpressionDepth = 64;

// A parsed expression (opaque, immutable; share it freely once parsed).
struct Expression;

// Load-time: parses `text`, or returns the first syntax error.
Result<std::shared_ptr<const Expression>> ParseExpression(std::string_view text);

// Every reference the expression reads, in source order, including references inside string
// literals and inside `${VAR:-default}` defaults (listed after the reference that holds them).
// Offsets and lengths are byte positions in the expression text; a bare `steps.a.status` is a
// kStep reference like `$(steps.a.status)`. Lets the loader check that steps and inputs exist.
std::vector<Reference> ExpressionReferences(const Expression& expression);

struct ExpressionValue {
  nlohmann::ordered_json value;
  // The text (as written) of each reference evaluated that could not be resolved, in order of
  // first evaluation, without duplicates.
  std::vector<std::string> unresolved;
};

// Evaluates the expression against `ctx`; errors are type errors (see above).
Result<ExpressionValue> EvaluateExpression(const Expression& expression,
                                           const VariableContext& ctx);

// The truthiness of a value (see above).
bool Truthy(const nlohmann::ordered_json& value);

}  // namespace cortex::registry
