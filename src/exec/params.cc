#include "exec/params.h"
#include "common/json.h"

#include <charconv>
#include <cmath>
#include <regex>

namespace cortex::exec {

namespace {

using Json = nlohmann::ordered_json;

std::string Describe(const Json& v) {
  std::string s = DumpJson(v);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// 100 rather than 100.0.
std::string Number(double d) {
  if (std::floor(d) == d && std::abs(d) < 9.0e15) return std::to_string(static_cast<int64_t>(d));
  return DumpJson(Json(d));
}

std::string TypeOf(const Json& v) {
  if (v.is_string()) return "string";
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "integer";
  if (v.is_number()) return "number";
  if (v.is_array()) return "array";
  if (v.is_object()) return "object";
  return "null";
}

// Converts `v` to `type` when it fits (text inputs are converted); false when it does not.
bool Coerce(const std::string& type, Json& v) {
  if (type == "any") return true;
  if (type == "string") return v.is_string();
  if (type == "array") return v.is_array();
  if (type == "object") return v.is_object();
  if (type == "boolean") {
    if (v.is_boolean()) return true;
    if (v.is_string() && (v == "true" || v == "false")) {
      v = v == "true";
      return true;
    }
    return false;
  }
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    double d = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty() || !std::isfinite(d)) {
      return false;
    }
    v = d;
  }
  if (type == "number") return v.is_number();
  if (type == "integer") {
    if (v.is_number_integer() || v.is_number_unsigned()) return true;
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (std::floor(d) == d && std::abs(d) < 9.0e15) {
        v = static_cast<int64_t>(d);
        return true;
      }
    }
    return false;
  }
  return true;
}

void CheckValue(const registry::Parameter& p, Json& v, std::vector<FieldError>* errors) {
  auto fail = [&](std::string m) { errors->push_back({p.name, std::move(m)}); };
  if (!Coerce(p.type, v)) {
    fail("expected " + std::string(p.type == "integer" ? "an " : "a ") + p.type + ", got " +
         TypeOf(v) + " " + Describe(v));
    return;
  }
  if (!p.enum_values.empty()) {
    bool found = false;
    for (const auto& e : p.enum_values) found = found || Json(e) == v;
    if (!found) {
      std::string allowed;
      for (const auto& e : p.enum_values)
        allowed += (allowed.empty() ? "" : ", ") + DumpJson(Json(e));
      fail(Describe(v) + " is not one of " + allowed);
      return;
    }
  }
  if (!p.validation) return;
  const registry::ParamValidation& rules = *p.validation;
  if (v.is_number()) {
    double d = v.get<double>();
    if (rules.min && d < *rules.min) fail("must be at least " + Number(*rules.min));
    if (rules.max && d > *rules.max) fail("must be at most " + Number(*rules.max));
  }
  if (v.is_string() || v.is_array()) {
    size_t len = v.is_string() ? v.get_ref<const std::string&>().size() : v.size();
    const char* unit = v.is_string() ? " characters" : " items";
    if (rules.min_length && static_cast<int64_t>(len) < *rules.min_length) {
      fail("must have at least " + std::to_string(*rules.min_length) + unit);
    }
    if (rules.max_length && static_cast<int64_t>(len) > *rules.max_length) {
      fail("must have at most " + std::to_string(*rules.max_length) + unit);
    }
  }
  if (rules.pattern && v.is_string()) {
    try {
      std::regex re(*rules.pattern, std::regex::ECMAScript);
      if (!std::regex_match(v.get_ref<const std::string&>(), re)) {
        fail("does not match the pattern " + *rules.pattern);
      }
    } catch (const std::regex_error&) {
      fail("the tool's pattern " + *rules.pattern + " is not a valid regular expression");
    }
  }
}

}  // namespace

ParameterCheck CheckParameters(const registry::ParameterList& declared, const Json& given) {
  ParameterCheck out;
  out.values = Json::object();
  if (!given.is_null() && !given.is_object()) {
    out.errors.push_back({"", "parameters must be a JSON object, not " + TypeOf(given)});
    return out;
  }
  if (declared.items.empty()) {
    if (given.is_object()) out.values = given;
    return out;
  }
  std::vector<std::string_view> names;
  for (const registry::Parameter& p : declared.items) names.push_back(p.name);
  if (given.is_object()) {
    for (const auto& [key, value] : given.items()) {
      bool known = false;
      for (std::string_view n : names) known = known || n == key;
      if (!known) {
        std::string msg = "unknown parameter";
        std::string_view hint = registry::ClosestMatch(key, names);
        if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
        out.errors.push_back({key, msg});
      }
    }
  }
  for (const registry::Parameter& p : declared.items) {
    if (given.is_object() && given.contains(p.name) && !given[p.name].is_null()) {
      Json v = given[p.name];
      CheckValue(p, v, &out.errors);
      out.values[p.name] = std::move(v);
    } else if (!p.default_value.is_null()) {
      out.values[p.name] = p.default_value;
    } else if (p.IsRequired()) {
      out.errors.push_back({p.name, "missing required parameter"});
    }
  }
  return out;
}

Json FieldErrorsJson(const std::vector<FieldError>& errors) {
  Json arr = Json::array();
  for (const FieldError& e : errors) arr.push_back({{"field", e.field}, {"message", e.message}});
  return arr;
}

}  // namespace cortex::exec
