// cortex errors: what is wrong in the manifests folder: files that fail to load (and whether
// their last good version is still served), conflicting declarations, unresolved manifests.
// Exits 1 when a file has errors or two files conflict, so scripts and CI can gate on it.
#include <CLI/CLI.hpp>
#include <iostream>

#include "cli/client.h"
#include "cli/verbs.h"
#include "common/json.h"

namespace cortex::cli {

namespace {

void PrintErrors(std::ostream& out, const Json& j) {
  const Json errors = j.value("errors", Json::array());
  const Json conflicts = j.value("conflicts", Json::array());
  const Json unresolved = j.value("unresolved", Json::array());
  if (errors.empty() && conflicts.empty() && unresolved.empty()) {
    out << "no errors, conflicts or unresolved manifests (generation "
        << j.value("generation", int64_t{0}) << ")\n";
    return;
  }
  if (!errors.empty()) {
    out << "Files with errors (" << errors.size() << "):\n";
    for (const Json& e : errors) {
      out << "  " << e.value("path", "") << "  ("
          << (e.value("serving_last_good", false) ? "the last good version is served"
                                                  : "not served")
          << ")\n";
      for (const char* list : {"diagnostics", "warnings"}) {
        for (const Json& d : e.value(list, Json::array())) {
          out << "    " << FormatDiagnostic(d) << "\n";
        }
      }
    }
  }
  if (!conflicts.empty()) {
    out << "Conflicts (" << conflicts.size() << "):\n";
    for (const Json& c : conflicts) {
      out << "  " << c.value("key", "") << " is declared by " << c.value("served", "")
          << " (served) and " << c.value("ignored", "") << " (ignored)\n";
    }
  }
  if (!unresolved.empty()) {
    out << "Unresolved manifests (" << unresolved.size() << "):\n";
    for (const Json& u : unresolved) {
      out << "  " << u.value("key", "") << "  (" << u.value("path", "") << ")\n";
      for (const Json& p : u.value("problems", Json::array())) {
        out << "    - " << (p.is_string() ? p.get<std::string>() : DumpJson(p)) << "\n";
      }
    }
  }
}

}  // namespace

void AddErrorsCommand(CLI::App& app, Context& ctx) {
  auto output = std::make_shared<std::string>("text");
  auto* cmd = app.add_subcommand(
      "errors", "List manifest errors, conflicts and unresolved manifests (exit 1 on errors)");
  cmd->fallthrough();
  AddOutputOption(cmd, *output, {"text", "json", "yaml"}, "text, json or yaml");
  cmd->callback([&ctx, output] {
    ApiClient api(ctx);
    auto j = api.GetJson("/registry/errors");
    if (!j) {
      ctx.exit_code = api.exit_code();
      return;
    }
    if (*output == "text") {
      PrintErrors(std::cout, *j);
    } else {
      std::cout << Render(*j, *output);
    }
    bool failing =
        !j->value("errors", Json::array()).empty() || !j->value("conflicts", Json::array()).empty();
    ctx.exit_code = failing ? kExitApiError : kExitOk;
  });
}

}  // namespace cortex::cli
