// ResolveProgram: a program name to the absolute path the runner executes (PATH lookup, and
// pyenv shims resolved to the interpreter they would pick).
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "exec/process.h"
#include "exec/process_sys.h"

namespace cortex::exec {
namespace {

using internal::Exists;
using internal::ParseU64;
using internal::ReadFile;

bool IsExecutableFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

std::vector<std::string> SplitPath(const std::string& path_env) {
  std::vector<std::string> dirs;
  size_t pos = 0;
  while (pos <= path_env.size()) {
    size_t end = path_env.find(':', pos);
    if (end == std::string::npos) end = path_env.size();
    // An empty entry means the server's working directory: never searched (not reproducible).
    if (end > pos) dirs.push_back(path_env.substr(pos, end - pos));
    pos = end + 1;
  }
  return dirs;
}

// "3.11" -> the highest installed "3.11.x" (pyenv's prefix resolution).
std::optional<std::string> PyenvVersionDir(const std::string& versions, const std::string& want) {
  if (Exists(versions + "/" + want)) return versions + "/" + want;
  DIR* dir = ::opendir(versions.c_str());
  if (!dir) return std::nullopt;
  std::optional<std::string> best;
  auto key = [](const std::string& v) {
    std::vector<uint64_t> parts;
    size_t pos = 0;
    while (pos < v.size()) {
      size_t end = v.find('.', pos);
      if (end == std::string::npos) end = v.size();
      parts.push_back(ParseU64(std::string_view(v).substr(pos, end - pos)).value_or(0));
      pos = end + 1;
    }
    return parts;
  };
  while (struct dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name.size() <= want.size() || name.compare(0, want.size(), want) != 0 ||
        name[want.size()] != '.') {
      continue;
    }
    if (name.find_first_not_of("0123456789.") != std::string::npos) continue;
    if (!best || key(name) > key(*best)) best = name;
  }
  ::closedir(dir);
  if (!best) return std::nullopt;
  return versions + "/" + *best;
}

std::vector<std::string> SplitVersions(std::string_view text, std::string_view seps) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find_first_of(seps, pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view v = text.substr(pos, end - pos);
    if (!v.empty() && v[0] != '#') out.emplace_back(v);
    pos = end + 1;
  }
  return out;
}

// A pyenv shim is a small script in a "shims" directory that runs `pyenv exec`. Returns the
// PYENV_ROOT it exports (else the shims directory's parent), or nullopt for anything else.
std::optional<std::string> PyenvShimRoot(const std::string& path, const std::string& dir) {
  if (dir.size() < 6 || dir.compare(dir.size() - 6, 6, "/shims") != 0) return std::nullopt;
  auto head = ReadFile(path, 2048);
  if (!head || head->compare(0, 2, "#!") != 0 || head->find("pyenv") == std::string::npos) {
    return std::nullopt;
  }
  constexpr std::string_view kExport = "export PYENV_ROOT=\"";
  if (size_t pos = head->find(kExport); pos != std::string::npos) {
    size_t begin = pos + kExport.size();
    size_t end = head->find('"', begin);
    if (end != std::string::npos && end > begin && (*head)[begin] == '/') {
      return head->substr(begin, end - begin);
    }
  }
  return dir.substr(0, dir.size() - 6);
}

}  // namespace

Result<std::string> ResolveProgram(const std::string& name, const std::string& path_env,
                                   const std::string& pyenv_version) {
  if (name.empty()) return InvalidArgumentError("empty program name");
  if (name.find('/') != std::string::npos) {
    if (name[0] != '/') {
      return InvalidArgumentError("program '" + name +
                                  "' is a relative path; give an absolute "
                                  "path or a bare name to look up in PATH");
    }
    if (!Exists(name)) return NotFoundError("program " + name + " does not exist");
    if (!IsExecutableFile(name)) {
      return Status(StatusCode::kPermissionDenied, "program " + name + " is not executable");
    }
    return name;
  }
  std::optional<std::string> shim;  // pyenv selected "system": the PATH without the shims
  for (const std::string& dir : SplitPath(path_env)) {
    std::string candidate = dir + "/" + name;
    if (!IsExecutableFile(candidate)) continue;
    auto root_dir = PyenvShimRoot(candidate, dir);
    if (!root_dir) return candidate;
    if (shim) continue;
    // pyenv: PYENV_VERSION, else $PYENV_ROOT/version; each may list several versions.
    const std::string& root = *root_dir;
    std::vector<std::string> versions;
    if (!pyenv_version.empty()) {
      versions = SplitVersions(pyenv_version, ":");
    } else if (auto file = ReadFile(root + "/version", 4096)) {
      versions = SplitVersions(*file, " \t\r\n");
    }
    bool system = versions.empty();  // pyenv's default when nothing is selected
    for (const auto& v : versions) {
      if (v == "system") {
        system = true;
        break;
      }
      auto vdir = PyenvVersionDir(root + "/versions", v);
      if (vdir && IsExecutableFile(*vdir + "/bin/" + name)) return *vdir + "/bin/" + name;
    }
    if (!system) return candidate;  // cannot tell without running it: keep the shim
    shim = candidate;
  }
  if (shim) return *shim;
  return NotFoundError("program '" + name + "' not found in PATH");
}

}  // namespace cortex::exec
