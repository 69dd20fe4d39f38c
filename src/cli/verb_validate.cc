// cortex validate PATH...: checks manifest files locally, for CI and pre-commit hooks.
// A file is checked alone (schema, types, references inside it); a folder is loaded like the
// server loads it, so imports, conflicts and cycles are checked too.
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/context.h"
#include "registry/registry.h"

namespace cortex::cli {

namespace {

struct ValidateOptions {
  std::vector<std::string> paths;
  bool strict = false;
  bool allow_unresolved = false;
  bool quiet = false;
};

int ValidateFile(const std::string& path, const ValidateOptions& o, int* errors, int* warnings) {
  auto format = registry::FormatOfPath(path);
  if (!format) {
    std::cerr << path << ": error: not a manifest file (.yml, .yaml, .md)\n";
    ++*errors;
    return 1;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::cerr << path << ": error: cannot read\n";
    ++*errors;
    return 1;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  registry::ParserOptions popts;
  popts.strict = o.strict;
  registry::ParsedFile parsed = registry::ParseManifest(ss.str(), path, *format, popts);
  for (const auto& d : parsed.diagnostics) {
    std::cerr << d.ToString() << "\n";
    (d.severity == registry::Severity::kError ? *errors : *warnings) += 1;
  }
  if (parsed.manifest && !o.quiet) {
    std::cout << path << ": ok (" << registry::EnumName(parsed.manifest->kind()) << "/"
              << parsed.manifest->name() << ")\n";
  }
  if (parsed.not_a_manifest && !o.quiet) {
    std::cout << path << ": skipped (Markdown without front matter)\n";
  }
  return 0;
}

void ValidateDir(const std::string& dir, const ValidateOptions& o, int* errors, int* warnings) {
  registry::RegistryOptions ropts;
  ropts.root = dir;
  ropts.parser.strict = o.strict;
  registry::Registry reg(ropts);
  if (Status st = reg.LoadAll(); !st.ok()) {
    std::cerr << dir << ": error: " << st.message() << "\n";
    ++*errors;
    return;
  }
  auto snap = reg.snapshot();
  for (const auto& [path, rec] : snap->files()) {
    for (const auto& d : rec->diagnostics) {
      std::cerr << dir << "/" << d.ToString() << "\n";
      (d.severity == registry::Severity::kError ? *errors : *warnings) += 1;
    }
  }
  for (const auto& c : snap->conflicts()) {
    std::cerr << dir << "/" << c.ignored_path << ": error: " << c.key << " is already declared by "
              << c.served_path << "\n";
    ++*errors;
  }
  for (const auto& e : snap->entries()) {
    for (const std::string& p : e->problems) {
      std::cerr << dir << "/" << e->file->rel_path << ": "
                << (o.allow_unresolved ? "warning" : "error") << ": " << e->key << ": " << p
                << "\n";
      (o.allow_unresolved ? *warnings : *errors) += 1;
    }
  }
  if (!o.quiet) {
    std::cout << dir << ": " << snap->entries().size() << " manifests\n";
  }
}

}  // namespace

void AddValidateCommand(CLI::App& app, Context& ctx) {
  auto o = std::make_shared<ValidateOptions>();
  auto* cmd = app.add_subcommand("validate", "Validate manifest files or folders (no server)");
  cmd->add_option("paths", o->paths, "Files or folders")->required();
  cmd->add_flag("--strict", o->strict, "Unknown fields are errors");
  cmd->add_flag("--allow-unresolved", o->allow_unresolved,
                "Missing dependencies are warnings, not errors");
  cmd->add_flag("-q,--quiet", o->quiet, "Print problems only");
  cmd->callback([&ctx, o] {
    int errors = 0, warnings = 0;
    for (std::string p : o->paths) {
      while (p.size() > 1 && p.back() == '/') p.pop_back();
      struct stat st;
      if (::stat(p.c_str(), &st) != 0) {
        std::cerr << p << ": error: no such file or folder\n";
        ++errors;
      } else if (S_ISDIR(st.st_mode)) {
        ValidateDir(p, *o, &errors, &warnings);
      } else {
        ValidateFile(p, *o, &errors, &warnings);
      }
    }
    if (errors || warnings || !o->quiet) {
      std::cerr << errors << " error(s), " << warnings << " warning(s)\n";
    }
    ctx.exit_code = errors ? 1 : 0;
  });
}

}  // namespace cortex::cli
