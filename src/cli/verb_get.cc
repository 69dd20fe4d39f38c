// cortex get KIND [NAME]: lists the manifests of a kind (or `all`) as a table, or shows one
// manifest. `-o json` prints the API's answer; `-o yaml` of one manifest prints the manifest
// itself, which `cortex apply -f` takes back: the file as its author wrote it (comments, order,
// layout) when it is a YAML file, so that a get-edit-apply round trip changes only what was
// edited; the normalized form (defaults filled in) for Markdown files and with --normalized.
#include <CLI/CLI.hpp>
#include <cctype>
#include <iostream>

#include "cli/client.h"
#include "cli/verbs.h"

namespace cortex::cli {

namespace {

constexpr size_t kSummaryWidth = 50;

struct GetOptions {
  std::string kind;
  std::string name;
  ListFormat format{.output = ""};  // empty: a table for a list, YAML for one manifest
  bool raw = false;
  bool normalized = false;
};

bool IsYamlPath(const std::string& path) {
  return path.ends_with(".yml") || path.ends_with(".yaml");
}

bool IsAll(const std::string& kind) {
  return kind.size() == 3 && std::tolower(static_cast<unsigned char>(kind[0])) == 'a' &&
         std::tolower(static_cast<unsigned char>(kind[1])) == 'l' &&
         std::tolower(static_cast<unsigned char>(kind[2])) == 'l';
}

std::string ResolvedCell(const Json& j) {
  std::string cell = j.value("resolved", false) ? "yes" : "no";
  if (j.value("stale", false)) cell += " (stale)";
  return cell;
}

Table ManifestTable() {
  return Table({"KIND", "NAME", "VERSION", "STATE", "RESOLVED", "PATH", "SUMMARY"});
}

int List(ApiClient& api, const GetOptions& o, std::ostream& out, std::ostream& err) {
  std::string path = "/registry/manifests";
  if (!IsAll(o.kind)) path += "?kind=" + http::UrlEncode(o.kind);
  auto j = api.GetJson(path);
  if (!j) return api.exit_code();
  Table table = ManifestTable();
  for (const Json& m : j->value("manifests", Json::array())) {
    table.AddRow(
        {m.value("kind", ""), m.value("name", ""), m.value("version", ""), m.value("state", ""),
         ResolvedCell(m), m.value("path", ""), Truncate(m.value("summary", ""), kSummaryWidth)},
        m.value("kind", "") + "/" + m.value("name", ""));
  }
  PrintList(out, err, *j, table, o.format,
            (IsAll(o.kind) ? "" : o.kind + " ") + std::string("manifests"));
  return kExitOk;
}

int One(ApiClient& api, const GetOptions& o) {
  std::string path = "/registry/manifest/" + PathSegment(o.kind) + "/" + PathSegment(o.name);
  if (o.raw) {
    auto r = api.Get(path + "?format=raw");
    if (!r) return api.exit_code();
    std::cout << r->body;
    if (!r->body.empty() && r->body.back() != '\n') std::cout << "\n";
    return kExitOk;
  }
  bool as_yaml = o.format.output.empty() || o.format.output == "yaml";
  auto j = api.GetJson(as_yaml && !o.normalized ? path + "?raw=true" : path);
  if (!j) return api.exit_code();
  if (o.format.output == "json") {
    std::cout << ToPrettyJson(*j);
  } else if (o.format.output == "name") {
    std::cout << j->value("kind", "") << "/" << j->value("name", "") << "\n";
  } else if (o.format.output == "table") {
    const Json manifest = j->value("manifest", Json::object());
    Table table = ManifestTable();
    table.AddRow({j->value("kind", ""), j->value("name", ""), manifest.value("version", ""),
                  manifest.value("state", ""), ResolvedCell(*j), j->value("path", ""),
                  Truncate(manifest.value("summary", ""), kSummaryWidth)});
    table.Print(std::cout, !o.format.no_headers);
  } else if (const Json* raw = j->contains("raw") ? &(*j)["raw"] : nullptr;
             raw && raw->is_string() && IsYamlPath(j->value("path", "")) &&
             !j->value("stale", false)) {
    // The file as written. (A stale entry serves its last good version, which the file on
    // disk no longer is: that one is printed normalized.)
    const auto& text = raw->get_ref<const std::string&>();
    std::cout << text;
    if (!text.empty() && text.back() != '\n') std::cout << "\n";
  } else {
    std::cout << ToYaml(j->value("manifest", Json::object()));
  }
  return kExitOk;
}

}  // namespace

void AddGetCommand(CLI::App& app, Context& ctx) {
  auto o = std::make_shared<GetOptions>();
  auto* cmd = app.add_subcommand("get", "List the manifests of a kind, or show one manifest");
  cmd->fallthrough();  // global options (--server) may follow the verb
  cmd->add_option("kind", o->kind,
                  "Tool, Agent, Relic, Workflow or Monument (any case, singular or plural), or "
                  "'all'; KIND/NAME names one manifest, as `-o name` prints it")
      ->required();
  cmd->add_option("name", o->name, "Show this manifest instead of a list");
  AddListFormat(cmd, o->format,
                "table, json, yaml or name (KIND/NAME, one a line); default: a table for a "
                "list, YAML for one manifest");
  cmd->add_flag("--raw", o->raw, "With NAME: print the manifest file as stored (YAML or Markdown)");
  cmd->add_flag("--normalized", o->normalized,
                "With NAME: print the manifest's normalized form (defaults filled in, no "
                "comments) instead of its YAML file");
  cmd->callback([&ctx, o] {
    SplitKindName(o->kind, o->name);
    if (IsAll(o->kind) && !o->name.empty()) {
      std::cerr << "error: 'get all' lists every manifest; give a kind to show one by name\n";
      ctx.exit_code = kExitUsage;
      return;
    }
    if ((o->raw || o->normalized) && o->name.empty()) {
      std::cerr << "error: " << (o->raw ? "--raw" : "--normalized") << " needs a NAME\n";
      ctx.exit_code = kExitUsage;
      return;
    }
    ApiClient api(ctx);
    if (!o->name.empty()) {
      ctx.exit_code = One(api, *o);
      return;
    }
    ctx.exit_code = RunList(
        o->format, [&](std::ostream& out, std::ostream& err) { return List(api, *o, out, err); });
  });
}

}  // namespace cortex::cli
