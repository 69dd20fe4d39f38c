// cortex apply -f FILE...: sends manifests to the server, which validates each one and writes it
// into its manifests folder (a new file, or the file that already declares that kind and name).
// An invalid manifest changes nothing; its diagnostics are printed against FILE.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/client.h"
#include "cli/verbs.h"
#include "common/json.h"

namespace cortex::cli {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kStdin = "-";

struct ApplyOptions {
  std::vector<std::string> files;
  std::string format;  // yaml | markdown; empty: by extension (stdin: yaml)
};

struct Input {
  std::string name;  // as shown in messages
  std::string text;
  bool markdown = false;
};

bool HasManifestExtension(const fs::path& p) {
  std::string ext = p.extension().string();
  return ext == ".yml" || ext == ".yaml" || ext == ".md";
}

// The manifest files under a folder, sorted, skipping hidden files and folders.
std::vector<std::string> FilesUnder(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->path().filename().string().starts_with(".")) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && HasManifestExtension(it->path())) {
      out.push_back(it->path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool ReadInput(const std::string& name, const ApplyOptions& o, Input* input) {
  input->name = name == kStdin ? "<stdin>" : name;
  std::stringstream ss;
  if (name == kStdin) {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream in(name, std::ios::binary);
    if (!in) {
      std::cerr << name << ": error: cannot read\n";
      return false;
    }
    ss << in.rdbuf();
  }
  input->text = ss.str();
  input->markdown = o.format.empty() ? fs::path(name).extension() == ".md" : o.format == "markdown";
  return true;
}

// Applies one manifest; false when it was not applied.
bool ApplyOne(ApiClient& api, const Input& input) {
  api.set_request_name(input.name);
  auto j = api.PostJson("/registry/manifests", input.text,
                        input.markdown ? "text/markdown" : "application/yaml");
  if (!j) return false;
  std::string key = j->value("key", "?");
  std::cout << (j->value("created", false) ? "created " : "configured ") << key << " ("
            << j->value("path", "") << ")\n";
  // The server names the stored file in its warnings; the lines match the file given here.
  for (Json d : j->value("warnings", Json::array())) {
    d["file"] = input.name;
    std::cerr << FormatDiagnostic(d) << "\n";
  }
  if (!j->value("resolved", true)) {
    for (const Json& p : j->value("problems", Json::array())) {
      std::cerr << input.name << ": warning: " << key
                << " is unresolved: " << (p.is_string() ? p.get<std::string>() : DumpJson(p))
                << "\n";
    }
  }
  return true;
}

int Apply(const Context& server, const ApplyOptions& o) {
  std::vector<std::string> names;
  int exit_code = kExitOk;
  for (const std::string& f : o.files) {
    std::error_code ec;
    if (f != kStdin && fs::is_directory(f, ec)) {
      std::vector<std::string> under = FilesUnder(f);
      if (under.empty()) std::cerr << f << ": warning: no .yml, .yaml or .md files\n";
      names.insert(names.end(), under.begin(), under.end());
    } else {
      names.push_back(f);
    }
  }
  if (std::count(names.begin(), names.end(), std::string(kStdin)) > 1) {
    std::cerr << "error: '-f -' (stdin) can be given once\n";
    return kExitUsage;
  }
  ApiClient api(server);
  for (const std::string& name : names) {
    Input input;
    if (!ReadInput(name, o, &input)) {
      exit_code = kExitApiError;
      continue;
    }
    ApplyOne(api, input);
    if (api.exit_code() == kExitUnreachable) break;  // every other file would fail the same way
  }
  return std::max(exit_code, api.exit_code());
}

}  // namespace

void AddApplyCommand(CLI::App& app, Context& ctx) {
  auto o = std::make_shared<ApplyOptions>();
  auto* cmd = app.add_subcommand("apply", "Create or update manifests from files");
  cmd->fallthrough();
  cmd->add_option("-f,--filename", o->files,
                  "A manifest file (.yml, .yaml, .md), a folder of them, or - for stdin "
                  "(repeatable)")
      ->required();
  cmd->add_option("--format", o->format,
                  "yaml or markdown: how to send the input (default: by file extension; stdin is "
                  "yaml)")
      ->check(CLI::IsMember({"yaml", "markdown"}));
  cmd->callback([&ctx, o] { ctx.exit_code = Apply(ctx, *o); });
}

}  // namespace cortex::cli
