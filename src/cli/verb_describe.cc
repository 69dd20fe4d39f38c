// cortex describe KIND NAME: one manifest for people: where it comes from, whether it is
// resolved (and why not), its warnings and dependencies, the manifest as YAML, its Markdown body.
#include <CLI/CLI.hpp>
#include <iomanip>
#include <iostream>

#include "cli/client.h"
#include "cli/verbs.h"
#include "common/json.h"

namespace cortex::cli {

namespace {

constexpr int kLabelWidth = 10;

struct DescribeOptions {
  std::string kind;
  std::string name;
};

void Field(std::ostream& out, std::string_view label, const std::string& value) {
  PrintField(out, label, value, kLabelWidth);
}

std::string Text(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

void PrintDiagnostics(std::ostream& out, const Json& list) {
  for (const Json& d : list) out << "  " << FormatDiagnostic(d) << "\n";
}

void Describe(std::ostream& out, const Json& e) {
  const Json manifest = e.value("manifest", Json::object());
  Field(out, "Name", Text(e, "kind") + "/" + Text(e, "name"));
  Field(out, "Path", Text(e, "path"));
  Field(out, "Loaded", Text(e, "loaded_at"));
  Field(out, "Version", Text(manifest, "version"));
  Field(out, "State", Text(manifest, "state"));
  if (!Text(manifest, "summary").empty()) Field(out, "Summary", Text(manifest, "summary"));

  const Json problems = e.value("problems", Json::array());
  Field(out, "Resolved", e.value("resolved", false) ? "yes" : "no");
  for (const Json& p : problems)
    out << "  - " << (p.is_string() ? p.get<std::string>() : DumpJson(p)) << "\n";

  if (e.value("stale", false)) {
    Field(out, "Stale", "yes: the file now has errors; the last good version is served");
    PrintDiagnostics(out, e.value("latest_errors", Json::array()));
  }
  const Json warnings = e.value("warnings", Json::array());
  if (!warnings.empty()) {
    out << "Warnings:\n";
    PrintDiagnostics(out, warnings);
  }
  if (e.contains("unknown_fields") && !e["unknown_fields"].empty()) {
    out << "Unknown fields (kept as written):\n";
    PrintIndented(out, ToYaml(e["unknown_fields"]), "  ");
  }

  const Json deps = e.value("dependencies", Json::array());
  out << "Dependencies:";
  if (deps.empty()) {
    out << " none\n";
  } else {
    out << "\n";
    Table table({"VIA", "FIELD", "REFERENCE", "TARGET"});
    for (const Json& d : deps) {
      std::string target =
          d.value("resolved", false) ? "-> " + Text(d, "target") : "error: " + Text(d, "error");
      table.AddRow({Text(d, "via"), Text(d, "field"), Text(d, "reference"), target});
    }
    PrintIndented(out, table.ToString(), "  ");
  }

  const bool agent = Text(e, "kind") == "Agent";
  Json shown = manifest;
  // An agent's persona is most often its Markdown body: an all-empty `persona` field says
  // nothing, so the body is shown as the persona instead.
  if (agent && shown.is_object() && shown.contains("persona") && shown["persona"].is_object()) {
    bool empty = true;
    for (const auto& [k, v] : shown["persona"].items()) {
      empty = empty && (v.is_null() || (v.is_string() && v.get<std::string>().empty()) ||
                        (v.is_array() && v.empty()));
    }
    if (empty) shown.erase("persona");
  }
  out << "Manifest:\n";
  PrintIndented(out, ToYaml(shown), "  ");
  const std::string body = Text(e, "body");
  if (agent) {
    std::string file = manifest.contains("persona") && manifest["persona"].is_object()
                           ? Text(manifest["persona"], "agent")
                           : "";
    if (!body.empty()) {
      out << "Persona (the Markdown body: the agent's system prompt):\n";
      PrintIndented(out, body, "  ");
    } else if (!file.empty()) {
      out << "Persona:   from " << file << "\n";
    } else {
      out << "Persona:   none (the agent runs without a system prompt of its own)\n";
    }
  } else if (!body.empty()) {
    out << "Body:\n";
    PrintIndented(out, body, "  ");
  }
}

}  // namespace

void AddDescribeCommand(CLI::App& app, Context& ctx) {
  auto o = std::make_shared<DescribeOptions>();
  auto* cmd = app.add_subcommand("describe", "Show one manifest in detail, for people");
  cmd->fallthrough();
  AddKindNameArgs(cmd, o->kind, o->name);
  cmd->callback([&ctx, o] {
    if (!KindAndName(ctx, o->kind, o->name)) return;
    ApiClient api(ctx);
    auto e = api.GetJson("/registry/manifest/" + PathSegment(o->kind) + "/" + PathSegment(o->name));
    if (!e) {
      ctx.exit_code = api.exit_code();
      return;
    }
    Describe(std::cout, *e);
  });
}

}  // namespace cortex::cli
