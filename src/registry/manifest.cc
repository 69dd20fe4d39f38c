#include "registry/manifest.h"

#include <cctype>

namespace cortex::registry {

std::optional<Kind> ParseKind(std::string_view text) {
  std::string lower;
  for (char c : text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!lower.empty() && lower.back() == 's') lower.pop_back();
  for (const auto& [kind, name] : EnumTraits<Kind>::kValues) {
    std::string n;
    for (char c : name) n += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (n == lower) return kind;
  }
  return std::nullopt;
}

std::string CheckName(std::string_view name) {
  if (name.empty()) return "a name cannot be empty";
  if (name.size() > 128) return "a name is at most 128 characters";
  if (!std::isalpha(static_cast<unsigned char>(name[0]))) {
    return "'" + std::string(name) + "' is not a valid name: it must start with a letter";
  }
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') {
      return "'" + std::string(name) +
             "' is not a valid name: use letters, digits, '_' and '-' only";
    }
  }
  return "";
}

std::string CheckVersion(std::string_view v) {
  // \d+\.\d+(\.\d+)?
  int parts = 0;
  size_t i = 0;
  while (i <= v.size()) {
    size_t start = i;
    while (i < v.size() && std::isdigit(static_cast<unsigned char>(v[i]))) ++i;
    if (i == start) break;
    ++parts;
    if (i == v.size()) {
      if (parts == 2 || parts == 3) return "";
      break;
    }
    if (v[i] != '.') break;
    ++i;
  }
  return "version '" + std::string(v) + "' must look like 1.0 or 1.2.3";
}

// --- Shorthands ------------------------------------------------------------------------------

bool ParameterList::FromNode(const yaml::Node& node, ParameterList& out, YamlReader& r) {
  out.items.clear();
  if (node.IsNull()) return true;
  if (node.IsSequence()) return r.Read(node, out.items);
  if (node.IsMapping()) {
    bool ok = true;
    for (const yaml::Entry& e : node.entries()) {
      Parameter p;
      p.name = e.key->scalar();
      p.keyed = true;
      if (e.value->IsScalar()) {  // `max_age_days: "integer"`
        p.type = e.value->scalar();
        bool known = false;
        for (std::string_view t : kParamTypes) known = known || t == p.type;
        if (!known) {
          std::string msg = p.name + ": '" + p.type + "' is not a parameter type (one of";
          for (std::string_view t : kParamTypes) msg += " " + std::string(t);
          r.Error(*e.value, msg + ")");
          ok = false;
          continue;
        }
      } else if (!e.value->IsNull()) {
        YamlReader::PathGuard guard(r, p.name);
        if (!r.Read(*e.value, p)) {
          ok = false;
          continue;
        }
      }
      out.items.push_back(std::move(p));
    }
    return ok;
  }
  r.Error(node, "expected a list of parameters or a mapping of name to parameter, got " +
                    std::string(node.TypeName()));
  return false;
}

Json ParameterList::ToShorthandJson(const ParameterList& value, Json) {
  return JsonWriter::ToJson(value.items);
}

Json ParameterList::ShorthandSchema() {
  return {{"type", "array"}, {"items", SchemaWriter::SchemaOf<Parameter>()}};
}

bool HealthCheck::FromShorthand(const yaml::Node& node, HealthCheck& out, YamlReader& r) {
  if (!node.IsScalar()) {
    r.Error(node, "expected a health check mapping or a URL, got " + std::string(node.TypeName()));
    return false;
  }
  out = HealthCheck{};
  out.type = "http";
  out.url = node.scalar();
  return true;
}

bool Argv::FromShorthand(const yaml::Node& node, Argv& out, YamlReader& r) {
  out.args.clear();
  if (node.IsSequence()) return r.Read(node, out.args);
  if (!node.IsScalar()) {
    r.Error(node, "expected a command (a string or a list of arguments), got " +
                      std::string(node.TypeName()));
    return false;
  }
  const std::string& s = node.scalar();
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (quote) {
      if (c == quote) {
        quote = 0;
      } else if (c == '\\' && quote == '"' && i + 1 < s.size()) {
        word += s[++i];
      } else {
        word += c;
      }
    } else if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (std::isspace(static_cast<unsigned char>(c))) {
      if (in_word) out.args.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else if (c == '\\' && i + 1 < s.size()) {
      word += s[++i];
      in_word = true;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (quote) {
    r.Error(node, "unterminated quote in command");
    return false;
  }
  if (in_word) out.args.push_back(std::move(word));
  if (out.args.empty()) {
    r.Error(node, "the command is empty");
    return false;
  }
  return true;
}

bool Trigger::FromShorthand(const yaml::Node& node, Trigger& out, YamlReader& r) {
  out = Trigger{};
  return r.Read(node, out.type);
}

bool WorkflowOutput::FromShorthand(const yaml::Node& node, WorkflowOutput& out, YamlReader& r) {
  out = WorkflowOutput{};
  return r.Read(node, out.source);
}

bool ComponentRef::FromShorthand(const yaml::Node& node, ComponentRef& out, YamlReader& r) {
  out = ComponentRef{};
  if (!r.Read(node, out.name)) return false;
  std::string err = CheckName(out.name);
  if (!err.empty()) {
    r.Error(node, err);
    return false;
  }
  return true;
}

bool StartupStage::FromShorthand(const yaml::Node& node, StartupStage& out, YamlReader& r) {
  out.names.clear();
  if (node.IsScalar()) {
    out.names.push_back(node.scalar());
    return true;
  }
  if (node.IsSequence()) {
    for (const yaml::Node* item : node.items()) {
      if (!item->IsScalar()) {
        r.Error(*item, "a parallel group lists names only");
        return false;
      }
      out.names.push_back(item->scalar());
    }
    if (out.names.empty()) {
      r.Error(node, "an empty parallel group");
      return false;
    }
    return true;
  }
  r.Error(node, "expected a name or a list of names started together");
  return false;
}

namespace {
void CollectLayer(const std::optional<MonumentLayer>& layer,
                  std::vector<ComponentRef> MonumentLayer::*member,
                  std::vector<const ComponentRef*>* out) {
  if (!layer) return;
  for (const ComponentRef& c : (*layer).*member) out->push_back(&c);
}
}  // namespace

std::vector<const ComponentRef*> MonumentSpec::Relics() const {
  std::vector<const ComponentRef*> out;
  if (components) {
    for (const ComponentRef& c : components->relics) out.push_back(&c);
  }
  CollectLayer(infrastructure, &MonumentLayer::relics, &out);
  return out;
}

std::vector<const ComponentRef*> MonumentSpec::Agents() const {
  std::vector<const ComponentRef*> out;
  if (components) {
    for (const ComponentRef& c : components->agents) out.push_back(&c);
  }
  CollectLayer(intelligence, &MonumentLayer::agents, &out);
  return out;
}

std::vector<const ComponentRef*> MonumentSpec::Workflows() const {
  std::vector<const ComponentRef*> out;
  if (components) {
    for (const ComponentRef& c : components->workflows) out.push_back(&c);
  }
  CollectLayer(automation, &MonumentLayer::workflows, &out);
  return out;
}

Json ManifestToJson(const Manifest& m) {
  Json out = Json::object();
  JsonWriter w(&out);
  ManifestHeader::Fields(m.header, w);
  std::visit([&](const auto& spec) { std::decay_t<decltype(spec)>::Fields(spec, w); }, m.spec);
  return out;
}

Json KindSchema(Kind kind) {
  Json props = Json::object();
  Json required = Json::array();
  SchemaWriter w(&props, &required);
  ManifestHeader header;
  ManifestHeader::Fields(header, w);
  auto add = [&](auto spec) { decltype(spec)::Fields(spec, w); };
  switch (kind) {
    case Kind::kTool:
      add(ToolSpec{});
      break;
    case Kind::kAgent:
      add(AgentSpec{});
      break;
    case Kind::kRelic:
      add(RelicSpec{});
      break;
    case Kind::kWorkflow:
      add(WorkflowSpec{});
      break;
    case Kind::kMonument:
      add(MonumentSpec{});
      break;
  }
  props["kind"] = {{"const", std::string(EnumName(kind))}};
  return {{"$schema", "https://json-schema.org/draft/2020-12/schema"},
          {"title", "Cortex " + std::string(EnumName(kind)) + " manifest"},
          {"type", "object"},
          {"properties", props},
          {"required", required},
          {"additionalProperties", true}};
}

}  // namespace cortex::registry
