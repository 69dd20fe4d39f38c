#include "cli/contexts.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "cli/output.h"
#include "common/fd.h"
#include "common/yaml.h"
#include "registry/schema.h"

namespace cortex::cli {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxFileBytes = 1 << 20;

// The file as written: contexts in the file's order (the reader's map form).
struct ContextsYaml {
  std::string current;
  std::vector<std::pair<std::string, ContextEntry>> contexts;
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("current", s.current);
    v.Field("contexts", s.contexts);
  }
};

}  // namespace

fs::path ContextsPath() {
  if (const char* p = std::getenv("CORTEX_CONTEXTS"); p && *p) return p;
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : "/") / ".cortex" / "contexts.yml";
}

Result<ContextsFile> LoadContexts(const fs::path& path) {
  ContextsFile out;
  std::error_code ec;
  if (!fs::exists(path, ec)) return out;
  auto size = fs::file_size(path, ec);
  if (ec) return UnavailableError("cannot read " + path.string() + ": " + ec.message());
  if (size > kMaxFileBytes) {
    return InvalidArgumentError(path.string() + ": larger than 1 MiB; not a contexts file");
  }
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return UnavailableError("cannot read " + path.string());
  auto stream = yaml::Parse(text.str());
  if (!stream.ok()) return InvalidArgumentError(path.string() + ":" + stream.status().message());
  if (stream->documents().empty() || stream->documents()[0]->IsNull()) return out;
  // Read like cortex.yml: unknown keys are errors (a typo must not drop a token silently).
  registry::Diagnostics diags;
  registry::YamlReader reader(path.string(), &diags, /*strict=*/true);
  ContextsYaml file;
  if (!reader.Read(*stream->documents()[0], file) || registry::HasErrors(diags)) {
    std::string msg;
    for (const auto& d : diags) {
      if (d.severity == registry::Severity::kError) msg += (msg.empty() ? "" : "\n") + d.ToString();
    }
    return InvalidArgumentError(msg.empty() ? path.string() + ": not a contexts file" : msg);
  }
  out.current = std::move(file.current);
  for (auto& [name, entry] : file.contexts) out.contexts[name] = std::move(entry);
  return out;
}

Status SaveContexts(const fs::path& path, const ContextsFile& file) {
  Json root = Json::object();
  root["current"] = file.current;
  Json contexts = Json::object();
  for (const auto& [name, e] : file.contexts) {
    Json j = Json::object();
    j["server"] = e.server;
    if (!e.token.empty()) j["token"] = e.token;
    if (!e.token_file.empty()) j["token_file"] = e.token_file;
    if (!e.ca_file.empty()) j["ca_file"] = e.ca_file;
    contexts[name] = std::move(j);
  }
  root["contexts"] = std::move(contexts);
  const std::string text =
      "# Cortex CLI contexts (cortex context --help). May hold API keys: keep it private.\n" +
      ToYaml(root);
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  const fs::path tmp = path.string() + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return UnavailableError("cannot write " + tmp.string() + ": " + ErrnoText(errno));
  ::fchmod(fd, 0600);  // an older file of that name kept its mode through O_TRUNC
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0) {
      ::close(fd);
      return UnavailableError("cannot write " + tmp.string() + ": " + ErrnoText(errno));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return UnavailableError("cannot write " + tmp.string() + ": " + ErrnoText(errno));
  }
  fs::rename(tmp, path, ec);
  if (ec) return UnavailableError("cannot replace " + path.string() + ": " + ec.message());
  return Status::Ok();
}

Status ResolveContext(Context& ctx) {
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? v : "";
  };
  if (ctx.server.empty()) ctx.server = env("CORTEX_SERVER");
  if (ctx.token.empty()) ctx.token = env("CORTEX_TOKEN");
  if (ctx.context_name.empty()) ctx.context_name = env("CORTEX_CONTEXT");
  if (ctx.ca_file.empty()) ctx.ca_file = env("CORTEX_CA_CERT");
  const bool need_file = ctx.server.empty() || ctx.token.empty() || !ctx.context_name.empty();
  if (need_file) {
    const fs::path path = ContextsPath();
    CORTEX_ASSIGN_OR_RETURN(ContextsFile file, LoadContexts(path));
    std::string name = ctx.context_name.empty() ? file.current : ctx.context_name;
    if (!name.empty()) {
      auto it = file.contexts.find(name);
      if (it == file.contexts.end()) {
        return NotFoundError("no context named '" + name + "' in " + path.string() +
                             " (cortex context ls)");
      }
      ctx.context_name = name;
      const ContextEntry& e = it->second;
      if (ctx.server.empty()) ctx.server = e.server;
      if (ctx.ca_file.empty()) ctx.ca_file = e.ca_file;
      if (ctx.token.empty() && !e.token.empty()) ctx.token = e.token;
      if (ctx.token.empty() && !e.token_file.empty()) {
        std::ifstream in(e.token_file);
        std::string line;
        if (!in || !std::getline(in, line)) {
          return UnavailableError("context '" + name + "': cannot read its token_file " +
                                  e.token_file);
        }
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        ctx.token = line;
      }
    }
  }
  if (ctx.server.empty()) ctx.server = "http://127.0.0.1:8080";
  return Status::Ok();
}

}  // namespace cortex::cli
