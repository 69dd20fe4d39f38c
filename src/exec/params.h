// Checking a call's parameters against a tool's (or a workflow trigger's) declared parameters,
// before anything runs.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "registry/manifest.h"

namespace cortex::exec {

struct FieldError {
  std::string field;
  std::string message;
  friend bool operator==(const FieldError&, const FieldError&) = default;
};

struct ParameterCheck {
  nlohmann::ordered_json values;   // the parameters to pass: given ones, converted, plus defaults
  std::vector<FieldError> errors;  // one per bad field; empty when the call is valid
  bool ok() const { return errors.empty(); }
};

// Rules: `given` must be an object (null counts as {}); a missing parameter takes its default,
// or is an error when required; types are string, integer, number, boolean, array, object, any
// (a string holding a number or true/false is converted for number, integer and boolean, as
// form and command-line inputs are text); enum, min/max (numbers), min_length/max_length
// (strings and arrays) and pattern (strings, the whole value must match) are enforced. When the
// tool declares parameters, an undeclared one is an error (with a did-you-mean); a tool that
// declares none accepts anything.
ParameterCheck CheckParameters(const registry::ParameterList& declared,
                               const nlohmann::ordered_json& given);

// The errors as a JSON array of {"field", "message"}, for API error details.
nlohmann::ordered_json FieldErrorsJson(const std::vector<FieldError>& errors);

}  // namespace cortex::exec
