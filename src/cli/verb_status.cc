// cortex status: is the server up, and what does its registry hold (GET /health and
// GET /registry/status).
#include <CLI/CLI.hpp>
#include <iomanip>
#include <iostream>

#include "cli/client.h"
#include "cli/verbs.h"
#include "common/json.h"

namespace cortex::cli {

namespace {

constexpr int kLabelWidth = 12;

void Line(std::ostream& out, std::string_view label, const std::string& value) {
  PrintField(out, label, value, kLabelWidth);
}

std::string Number(const Json& j, const char* key) {
  auto it = j.find(key);
  return it == j.end() ? "?" : it->dump();
}

void PrintStatus(std::ostream& out, const std::string& server, const Json& health,
                 const Json& reg) {
  Line(out, "Server",
       server + " (" + health.value("status", "?") + ", cortex " + health.value("version", "?") +
           ")");
  std::string kinds;
  const Json by_kind = reg.value("by_kind", Json::object());
  for (const auto& [kind, count] : by_kind.items()) {
    if (count.is_number() && count.get<int64_t>() == 0) continue;
    kinds += (kinds.empty() ? "" : ", ") + kind + " " + DumpJson(count);
  }
  Line(out, "Manifests",
       Number(reg, "total_manifests") + (kinds.empty() ? "" : " (" + kinds + ")"));
  Line(out, "Folder", reg.value("manifests_root", ""));
  Line(out, "Unresolved", Number(reg, "unresolved"));
  Line(out, "Errors", Number(reg, "errors") + " file(s)");
  Line(out, "Conflicts", Number(reg, "conflicts"));
  Line(out, "Generation",
       Number(reg, "generation") + ", updated " + reg.value("last_updated", "?"));
  if (reg.value("errors", int64_t{0}) > 0 || reg.value("conflicts", int64_t{0}) > 0 ||
      reg.value("unresolved", int64_t{0}) > 0) {
    out << "run `cortex errors` for details\n";
  }
}

}  // namespace

void AddStatusCommand(CLI::App& app, Context& ctx) {
  auto output = std::make_shared<std::string>("text");
  auto* cmd = app.add_subcommand("status", "Show whether the server is up and what it holds");
  cmd->fallthrough();
  AddOutputOption(cmd, *output, {"text", "json", "yaml"}, "text, json or yaml");
  cmd->callback([&ctx, output] {
    ApiClient api(ctx);
    auto health = api.GetJson("/health");
    auto reg = health ? api.GetJson("/registry/status") : std::nullopt;
    ctx.exit_code = api.exit_code();
    if (!health || !reg) return;
    if (*output == "text") {
      PrintStatus(std::cout, ctx.server, *health, *reg);
    } else {
      Json j = {{"server", ctx.server}, {"health", *health}, {"registry", *reg}};
      std::cout << Render(j, *output);
    }
  });
}

}  // namespace cortex::cli
