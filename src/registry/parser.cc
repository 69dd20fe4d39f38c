#include "registry/parser.h"

#include "common/cron.h"
#include "registry/expression.h"
#include "registry/variables.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>

namespace cortex::registry {

namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

class FileDiagnostics {
 public:
  FileDiagnostics(std::string_view file, Diagnostics* out) : file_(file), out_(out) {}
  void Error(int line, int column, std::string message) {
    out_->push_back({Severity::kError, std::string(file_), line, column, std::move(message)});
  }
  void Error(const yaml::Node* at, std::string message) {
    Error(at ? at->mark().line : 0, at ? at->mark().column : 0, std::move(message));
  }
  void Warning(const yaml::Node* at, std::string message) {
    out_->push_back({Severity::kWarning, std::string(file_), at ? at->mark().line : 0,
                     at ? at->mark().column : 0, std::move(message)});
  }

 private:
  std::string_view file_;
  Diagnostics* out_;
};

// Splits "---\n<yaml>\n---\n<body>". Returns false when there is no front matter.
bool SplitFrontMatter(std::string_view text, std::string_view* yaml, std::string_view* body) {
  auto line_end = [&](size_t pos) {
    size_t e = text.find('\n', pos);
    return e == std::string_view::npos ? text.size() : e;
  };
  size_t first_end = line_end(0);
  std::string_view first = text.substr(0, first_end);
  if (!first.empty() && first.back() == '\r') first.remove_suffix(1);
  if (first != "---") return false;
  size_t pos = first_end + 1;
  while (pos <= text.size()) {
    size_t e = line_end(pos);
    std::string_view line = text.substr(pos, e - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == "---" || line == "...") {
      *yaml = text.substr(first_end + 1, pos - first_end - 1);
      *body = e >= text.size() ? std::string_view() : text.substr(e + 1);
      return true;
    }
    if (e >= text.size()) break;
    pos = e + 1;
  }
  return false;
}

std::string Trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

// Every step name of a workflow, nested ones included.
void CollectStepNames(const std::vector<WorkflowStep>& steps, std::vector<std::string>* out) {
  for (const WorkflowStep& s : steps) {
    out->push_back(s.name);
    CollectStepNames(s.parallel, out);
    CollectStepNames(s.then_steps, out);
    CollectStepNames(s.else_steps, out);
  }
}

// Checks the templates of a workflow at load time: syntax, `$(steps.X...)` naming a step of
// this workflow, `$(trigger.x)` naming a declared trigger parameter (when any are declared).
class TemplateChecker {
 public:
  TemplateChecker(const WorkflowSpec& wf, FileDiagnostics& diag) : diag_(diag) {
    CollectStepNames(wf.steps, &step_names_);
    steps_.assign(step_names_.begin(), step_names_.end());
    for (const Parameter& p : wf.trigger.parameters.items) params_.push_back(p.name);
  }

  void CheckSteps(const std::vector<WorkflowStep>& steps, const yaml::Node* steps_node,
                  const std::string& path) {
    for (size_t i = 0; i < steps.size(); ++i) {
      const WorkflowStep& s = steps[i];
      const yaml::Node* n = steps_node && steps_node->IsSequence() && i < steps_node->items().size()
                                ? steps_node->items()[i]
                                : steps_node;
      std::string where = path + "[" + std::to_string(i) + "] (" + s.name + ")";
      CheckJson(s.parameters, n, where + ".parameters");
      if (s.condition)
        CheckCondition(*s.condition, n ? n->Find("condition") : nullptr, n, where + ".condition");
      if (!s.parallel.empty())
        CheckSteps(s.parallel, n ? n->Find("parallel") : nullptr, where + ".parallel");
      if (!s.then_steps.empty())
        CheckSteps(s.then_steps, n ? n->Find("then") : nullptr, where + ".then");
      if (!s.else_steps.empty())
        CheckSteps(s.else_steps, n ? n->Find("else") : nullptr, where + ".else");
    }
  }

  // Outputs name their source as "steps.s.field" (the original's form) or as a template.
  void CheckOutputs(const OrderedMap<WorkflowOutput>& outputs, const yaml::Node* node) {
    for (const auto& [name, out] : outputs) {
      const yaml::Node* at = node && node->IsMapping() ? node->Find(name) : node;
      std::string where = "outputs." + name + ".source";
      if (out.source.starts_with("steps.")) {
        std::string rest = out.source.substr(6);
        CheckStepName(rest.substr(0, rest.find_first_of(".[")), at, where);
      } else {
        CheckText(out.source, at, where);
      }
    }
  }

 private:
  void CheckJson(const Json& value, const yaml::Node* at, const std::string& where) {
    if (value.is_string()) {
      CheckText(value.get_ref<const std::string&>(), at, where);
    } else if (value.is_object()) {
      for (const auto& [k, v] : value.items()) CheckJson(v, at, where + "." + k);
    } else if (value.is_array()) {
      for (size_t i = 0; i < value.size(); ++i) {
        CheckJson(value[i], at, where + "[" + std::to_string(i) + "]");
      }
    }
  }

  void CheckText(const std::string& text, const yaml::Node* at, const std::string& where) {
    if (text.find('$') == std::string::npos) return;
    auto refs = ParseTemplate(text);
    if (!refs.ok()) {
      diag_.Error(at, where + ": " + refs.status().message());
      return;
    }
    CheckReferences(*refs, at, where);
  }

  // A condition is an expression (registry/expression.h): its syntax and every reference it
  // reads are checked now. Errors point at the condition's own line when it is known.
  void CheckCondition(const std::string& text, const yaml::Node* value, const yaml::Node* step,
                      const std::string& where) {
    const yaml::Node* at = value ? value : step;
    auto expr = ParseExpression(text);
    if (!expr.ok()) {
      diag_.Error(at, where + ": " + expr.status().message());
      return;
    }
    CheckReferences(ExpressionReferences(**expr), at, where);
  }

  void CheckReferences(const std::vector<Reference>& refs, const yaml::Node* at,
                       const std::string& where) {
    for (const Reference& r : refs) {
      if (r.kind == Reference::Kind::kStep) CheckStepName(r.name, at, where);
      if (r.kind == Reference::Kind::kTrigger && !params_.empty() &&
          std::find(params_.begin(), params_.end(), r.name) == params_.end()) {
        std::string msg = where + ": the trigger declares no parameter '" + r.name + "'";
        std::string_view hint = ClosestMatch(r.name, params_);
        if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
        diag_.Error(at, msg);
      }
    }
  }

  void CheckStepName(const std::string& name, const yaml::Node* at, const std::string& where) {
    if (std::find(steps_.begin(), steps_.end(), name) != steps_.end()) return;
    std::string msg = where + ": no step named '" + name + "' in this workflow";
    std::string_view hint = ClosestMatch(name, steps_);
    if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
    diag_.Error(at, msg);
  }

  FileDiagnostics& diag_;
  std::vector<std::string> step_names_;
  std::vector<std::string_view> steps_;  // views of step_names_, for ClosestMatch
  std::vector<std::string_view> params_;
};

// Cross-field checks of a workflow's steps: unique names, depends_on targets, cycles, targets.
void ValidateSteps(const std::vector<WorkflowStep>& steps, const yaml::Node* steps_node,
                   const std::string& path, FileDiagnostics& diag) {
  auto node_of = [&](size_t i) -> const yaml::Node* {
    if (steps_node && steps_node->IsSequence() && i < steps_node->items().size()) {
      return steps_node->items()[i];
    }
    return steps_node;
  };
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < steps.size(); ++i) {
    auto [it, inserted] = index.emplace(steps[i].name, i);
    if (!inserted) {
      diag.Error(node_of(i), path + "[" + std::to_string(i) + "]: step name '" + steps[i].name +
                                 "' is already used by " + path + "[" + std::to_string(it->second) +
                                 "]");
    }
  }
  std::vector<std::string_view> names;
  for (const auto& [n, i] : index) names.push_back(n);
  for (size_t i = 0; i < steps.size(); ++i) {
    const WorkflowStep& s = steps[i];
    const yaml::Node* n = node_of(i);
    std::string where = path + "[" + std::to_string(i) + "] (" + s.name + ")";
    for (const std::string& dep : s.depends_on) {
      if (dep == s.name) {
        diag.Error(n, where + ": a step cannot depend on itself");
      } else if (!index.count(dep)) {
        std::string msg = where + ": depends_on names an unknown step '" + dep + "'";
        std::string_view hint = ClosestMatch(dep, names);
        if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
        diag.Error(n, msg);
      }
    }
    bool needs_target = s.type == StepType::kTool || s.type == StepType::kAgent ||
                        s.type == StepType::kRelic || s.type == StepType::kWorkflow;
    if (needs_target && s.target.empty()) {
      diag.Error(n, where + ": a " + std::string(EnumName(s.type)) + " step needs a 'target'");
    }
    if (s.type == StepType::kParallel && s.parallel.empty()) {
      diag.Error(n, where + ": a parallel step needs a 'parallel' list of steps");
    }
    if (s.type == StepType::kConditional && !s.condition) {
      diag.Error(n, where + ": a conditional step needs a 'condition'");
    }
    const yaml::Node* sub_parallel = n && n->IsMapping() ? n->Find("parallel") : nullptr;
    if (!s.parallel.empty()) ValidateSteps(s.parallel, sub_parallel, where + ".parallel", diag);
    if (!s.then_steps.empty()) {
      ValidateSteps(s.then_steps, n ? n->Find("then") : nullptr, where + ".then", diag);
    }
    if (!s.else_steps.empty()) {
      ValidateSteps(s.else_steps, n ? n->Find("else") : nullptr, where + ".else", diag);
    }
  }
  // Cycles in depends_on (DFS with colours), reported with their path.
  std::vector<int> colour(steps.size(), 0);
  std::vector<size_t> stack;
  std::set<std::string> reported;
  std::function<void(size_t)> dfs = [&](size_t u) {
    colour[u] = 1;
    stack.push_back(u);
    for (const std::string& dep : steps[u].depends_on) {
      auto it = index.find(dep);
      if (it == index.end() || it->second == u) continue;
      size_t v = it->second;
      if (colour[v] == 1) {
        std::string cycle;
        auto pos = std::find(stack.begin(), stack.end(), v);
        for (auto p = pos; p != stack.end(); ++p) cycle += steps[*p].name + " -> ";
        cycle += steps[v].name;
        if (reported.insert(cycle).second) {
          diag.Error(node_of(u), path + ": depends_on forms a cycle: " + cycle);
        }
      } else if (colour[v] == 0) {
        dfs(v);
      }
    }
    stack.pop_back();
    colour[u] = 2;
  };
  for (size_t i = 0; i < steps.size(); ++i) {
    if (colour[i] == 0) dfs(i);
  }
}

void ValidateMonument(const MonumentSpec& m, const yaml::Node* root, FileDiagnostics& diag) {
  std::set<std::string> known;
  for (const ComponentRef* c : m.Relics()) known.insert(c->name);
  for (const ComponentRef* c : m.Agents()) known.insert(c->name);
  for (const ComponentRef* c : m.Workflows()) known.insert(c->name);
  std::vector<std::string_view> names(known.begin(), known.end());
  const yaml::Node* order = root->Find("startup_order");
  std::set<std::string> seen;
  for (size_t i = 0; i < m.startup_order.size(); ++i) {
    const yaml::Node* at =
        order && order->IsSequence() && i < order->items().size() ? order->items()[i] : order;
    for (const std::string& n : m.startup_order[i].names) {
      if (!known.count(n)) {
        std::string msg = "startup_order[" + std::to_string(i) + "]: '" + n +
                          "' is not a component of this monument";
        std::string_view hint = ClosestMatch(n, names);
        if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
        diag.Error(at, msg);
      } else if (!seen.insert(n).second) {
        diag.Error(at, "startup_order[" + std::to_string(i) + "]: '" + n + "' is listed twice");
      }
    }
  }
  // depends_on between relics must name relics of this monument.
  std::set<std::string> relic_names;
  for (const ComponentRef* c : m.Relics()) relic_names.insert(c->name);
  for (const ComponentRef* c : m.Relics()) {
    for (const std::string& d : c->depends_on) {
      if (!relic_names.count(d)) {
        diag.Error(root, "relic '" + c->name + "' depends_on '" + d +
                             "', which is not a relic of this monument");
      }
    }
  }
}

template <class Spec>
void ReadSpec(const yaml::Node& root, ManifestHeader& header, ManifestSpec& spec,
              YamlReader& reader) {
  Spec s;
  reader.ReadObject(root, [&](YamlReader& r) {
    ManifestHeader::Fields(header, r);
    Spec::Fields(s, r);
  });
  spec = std::move(s);
}

}  // namespace

std::optional<FileFormat> FormatOfPath(std::string_view path) {
  std::string_view base = path.substr(
      path.find_last_of('/') == std::string_view::npos ? 0 : path.find_last_of('/') + 1);
  // Files that live beside manifests but are not manifests.
  if (base.starts_with("docker-compose") || base == "compose.yml" || base == "compose.yaml" ||
      base.starts_with("compose.") || base == "autoload.yml" || base == "autoload.yaml" ||
      base == "cortex.yml" || base == "cortex.yaml") {
    return std::nullopt;
  }
  if (EndsWith(path, ".yml") || EndsWith(path, ".yaml")) return FileFormat::kYaml;
  if (EndsWith(path, ".md") || EndsWith(path, ".markdown")) return FileFormat::kMarkdown;
  return std::nullopt;
}

namespace {
ParsedFile ParseManifestImpl(std::string_view text, std::string_view display_path,
                             FileFormat format, const ParserOptions& options) {
  ParsedFile out;
  FileDiagnostics diag(display_path, &out.diagnostics);
  if (text.size() > options.max_bytes) {
    diag.Error(0, 0,
               "file is " + std::to_string(text.size()) + " bytes, over the limit of " +
                   std::to_string(options.max_bytes) + " bytes for a manifest");
    return out;
  }
  if (text.find('\0') != std::string_view::npos) {
    diag.Error(0, 0, "binary file (contains NUL bytes), not a manifest");
    return out;
  }
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);

  std::string_view yaml_text = text;
  std::string_view body;
  yaml::ParseOptions yopts;
  yopts.max_depth = options.max_depth;
  if (format == FileFormat::kMarkdown) {
    if (!SplitFrontMatter(text, &yaml_text, &body)) {
      out.not_a_manifest = true;  // plain Markdown (a persona prompt, a README)
      return out;
    }
    yopts.line_offset = 1;
  }

  auto stream = yaml::Parse(yaml_text, yopts);
  if (!stream.ok()) {
    const std::string& m = stream.status().message();
    // yaml messages start with "line:col: ".
    size_t c1 = m.find(':');
    size_t c2 = c1 == std::string::npos ? std::string::npos : m.find(':', c1 + 1);
    int line = 0, col = 0;
    std::string rest = m;
    if (c2 != std::string::npos) {
      line = std::atoi(m.substr(0, c1).c_str());
      col = std::atoi(m.substr(c1 + 1, c2 - c1 - 1).c_str());
      rest = Trim(m.substr(c2 + 1));
    }
    diag.Error(line, col, "invalid YAML: " + rest);
    return out;
  }

  const yaml::Node* root = nullptr;
  const yaml::Node* first = nullptr;
  for (const yaml::Node* doc : stream->documents()) {
    if (!doc || doc->IsNull()) continue;
    if (!first) first = doc;
    if (doc->IsMapping() && doc->Find("kind")) {
      root = doc;
      break;
    }
  }
  if (!root) {
    if (format == FileFormat::kMarkdown && (!first || first->IsMapping())) {
      out.not_a_manifest = true;  // front matter of some other tool
      return out;
    }
    if (!first) {
      diag.Error(0, 0,
                 "empty file: no YAML document (a manifest needs at least 'kind' and 'name')");
    } else if (!first->IsMapping()) {
      diag.Error(first, "a manifest must be a mapping, not a " + std::string(first->TypeName()));
    } else if (const yaml::Node* legacy = first->Find("PraetorianRelics")) {
      diag.Error(legacy,
                 "legacy 'PraetorianRelics' relic format (no 'kind'): not supported; write it "
                 "as 'kind: Relic' with 'interface' and 'deployment'");
    } else {
      diag.Error(first,
                 "no 'kind' field: a manifest declares kind: Tool, Agent, Relic, Workflow "
                 "or Monument");
    }
    return out;
  }

  const yaml::Node* kind_node = root->Find("kind");
  std::optional<Kind> kind;
  if (kind_node->IsScalar()) kind = EnumFromName<Kind>(kind_node->scalar());
  if (!kind) {
    std::string k = kind_node->IsScalar() ? kind_node->scalar() : "";
    if (k == "Amulet" || k == "Metadata") {
      diag.Error(kind_node, "kind '" + k +
                                "' is not supported yet (supported: Tool, Agent, "
                                "Relic, Workflow, Monument)");
    } else {
      std::string msg = "kind '" + k + "' is not one of Tool, Agent, Relic, Workflow, Monument";
      std::string_view hint = ClosestMatch(k, {"Tool", "Agent", "Relic", "Workflow", "Monument"});
      if (!hint.empty()) msg += " (did you mean '" + std::string(hint) + "'?)";
      diag.Error(kind_node, msg);
    }
    return out;
  }

  Manifest m;
  YamlReader reader(std::string(display_path), &out.diagnostics, options.strict);
  switch (*kind) {
    case Kind::kTool:
      ReadSpec<ToolSpec>(*root, m.header, m.spec, reader);
      break;
    case Kind::kAgent:
      ReadSpec<AgentSpec>(*root, m.header, m.spec, reader);
      break;
    case Kind::kRelic:
      ReadSpec<RelicSpec>(*root, m.header, m.spec, reader);
      break;
    case Kind::kWorkflow:
      ReadSpec<WorkflowSpec>(*root, m.header, m.spec, reader);
      break;
    case Kind::kMonument:
      ReadSpec<MonumentSpec>(*root, m.header, m.spec, reader);
      break;
  }
  m.body = Trim(body);
  m.unknown_fields = reader.unknown_fields();

  // Cross-field rules that a field list cannot express.
  if (auto* tool = std::get_if<ToolSpec>(&m.spec)) {
    if (m.header.description.empty() && m.body.empty()) {
      diag.Error(root, "missing required field 'description' (or a Markdown body)");
    }
    const ToolImplementation& impl = tool->implementation;
    bool runs_script = impl.type != "api" && impl.type != "container" && impl.type != "docker" &&
                       impl.type != "mcp";
    const yaml::Node* impl_node = root->Find("implementation");
    if (impl.type == "mcp" && !HasErrors(out.diagnostics)) {
      const yaml::Node* at =
          impl_node && impl_node->Find("mcp") ? impl_node->Find("mcp") : impl_node;
      if (!impl.mcp) {
        diag.Error(impl_node,
                   "implementation: type mcp needs 'mcp' with the server's 'command' "
                   "(started by Cortex), 'url' or 'relic'");
      } else if (int ways = !impl.mcp->command.empty() + impl.mcp->url.has_value() +
                            impl.mcp->relic.has_value();
                 ways != 1) {
        diag.Error(at,
                   "implementation.mcp: give exactly one of 'command' (a stdio server Cortex "
                   "starts), 'url' (a Streamable HTTP server) and 'relic' (a deployed relic "
                   "serving MCP at 'path')");
      } else if (impl.mcp->url && !impl.mcp->url->starts_with("http://") &&
                 !impl.mcp->url->starts_with("https://")) {
        diag.Error(
            at->Find("url") ? at->Find("url") : at,
            "implementation.mcp.url: an http:// or https:// URL, not '" + *impl.mcp->url + "'");
      }
    } else if (impl.mcp && impl.type != "mcp") {
      diag.Warning(impl_node->Find("mcp"),
                   "implementation.mcp has no effect unless implementation.type is mcp");
    }
    if (runs_script && impl.entrypoint.empty() && !HasErrors(out.diagnostics)) {
      diag.Error(root->Find("implementation"),
                 "implementation: missing required field 'entrypoint' (the script to run, "
                 "relative to the tool's folder)");
    }
    if (!impl.host_ports.empty() && !impl.network.value_or(false)) {
      const yaml::Node* at = root->Find("implementation");
      diag.Warning(at ? at->Find("host_ports") : root,
                   "implementation.host_ports has no effect without 'network: true' (the tool "
                   "has no network at all)");
    }
  } else if (auto* agent = std::get_if<AgentSpec>(&m.spec)) {
    if (agent->persona.agent.empty() && m.body.empty()) {
      diag.Error(root,
                 "an agent needs a persona: 'persona.agent' (a Markdown file) or the "
                 "persona written as the Markdown body of this file");
    }
    if (agent->cognitive_engine && !options.llm_providers.empty()) {
      const yaml::Node* engine = root->Find("cognitive_engine");
      auto check = [&](const ModelRef& ref, const char* which) {
        const auto& known = options.llm_providers;
        if (std::find(known.begin(), known.end(), ref.provider) != known.end()) return;
        const yaml::Node* at = engine ? engine->Find(which) : nullptr;
        if (at && at->Find("provider")) at = at->Find("provider");
        std::string list;
        for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
        diag.Warning(at ? at : root, std::string("cognitive_engine.") + which + ".provider: '" +
                                         ref.provider +
                                         "' is not a configured llm provider (llm.providers in "
                                         "cortex.yml; known: " +
                                         list + "): the agent cannot run with it");
      };
      check(agent->cognitive_engine->primary, "primary");
      if (agent->cognitive_engine->fallback) check(*agent->cognitive_engine->fallback, "fallback");
    }
  } else if (auto* relic = std::get_if<RelicSpec>(&m.spec)) {
    if (relic->service && !relic->deployment) {  // the seed's `service:` block
      RelicDeployment d;
      d.type = relic->service->type;
      d.compose_file = relic->service->compose_file;
      relic->deployment = d;
    }
    if (relic->service && relic->service->health_check && !relic->health_check) {
      relic->health_check = relic->service->health_check;
    }
    if (relic->deployment) {
      const std::string& t = relic->deployment->type;
      if ((t == "docker-compose" || t == "compose") && !relic->deployment->compose_file &&
          !relic->deployment->image) {
        diag.Error(root->Find("deployment") ? root->Find("deployment") : root->Find("service"),
                   "deployment: a " + t + " relic needs 'compose_file'");
      }
      if ((t == "process" || t == "native") && !relic->deployment->command) {
        diag.Error(root->Find("deployment"), "deployment: a process relic needs 'command'");
      }
      if (relic->deployment->sandbox && t != "process" && t != "native") {
        const yaml::Node* d = root->Find("deployment");
        const yaml::Node* at = d != nullptr && d->Find("sandbox") ? d->Find("sandbox") : d;
        diag.Error(at, "deployment.sandbox: only process relics run in Cortex's sandbox (a " + t +
                           " relic's containers are isolated by its engine)");
      }
    }
  } else if (auto* wf = std::get_if<WorkflowSpec>(&m.spec)) {
    if (wf->steps.empty() && !HasErrors(out.diagnostics)) {
      diag.Error(root->Find("steps"), "steps: a workflow needs at least one step");
    }
    ValidateSteps(wf->steps, root->Find("steps"), "steps", diag);
    TemplateChecker templates(*wf, diag);
    templates.CheckSteps(wf->steps, root->Find("steps"), "steps");
    templates.CheckOutputs(wf->outputs, root->Find("outputs"));
    if (wf->trigger.type == TriggerType::kScheduled && !wf->trigger.schedule) {
      diag.Error(root->Find("trigger"), "trigger: a scheduled trigger needs 'schedule' (cron)");
    }
    if (wf->trigger.schedule) {
      const yaml::Node* trig = root->Find("trigger");
      const yaml::Node* at = trig ? trig->Find("schedule") : nullptr;
      if (!at && trig) at = trig->Find("cron");
      if (auto cron = ParseCron(*wf->trigger.schedule); !cron.ok()) {
        diag.Error(at ? at : trig, "trigger.schedule: " + cron.status().message());
      }
      if (wf->trigger.timezone && *wf->trigger.timezone != "UTC" &&
          *wf->trigger.timezone != "Etc/UTC") {
        diag.Warning(trig, "trigger.timezone: schedules run in UTC; '" + *wf->trigger.timezone +
                               "' is ignored");
      }
    }
  } else if (auto* mon = std::get_if<MonumentSpec>(&m.spec)) {
    ValidateMonument(*mon, root, diag);
  }

  std::stable_sort(out.diagnostics.begin(), out.diagnostics.end(),
                   [](const Diagnostic& a, const Diagnostic& b) {
                     return a.line != b.line ? a.line < b.line : a.column < b.column;
                   });
  if (!HasErrors(out.diagnostics)) out.manifest = std::move(m);
  return out;
}

}  // namespace

ParsedFile ParseManifest(std::string_view text, std::string_view display_path, FileFormat format,
                         const ParserOptions& options) {
  try {
    return ParseManifestImpl(text, display_path, format, options);
  } catch (const std::exception& e) {
    // A bug, not bad input: still only this file fails, with a message that says so.
    ParsedFile out;
    out.diagnostics.push_back(
        {Severity::kError, std::string(display_path), 0, 0,
         std::string("internal error while validating (please report): ") + e.what()});
    return out;
  }
}

}  // namespace cortex::registry
