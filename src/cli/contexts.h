// The CLI's contexts file, like kubectl's kubeconfig: named servers with their API keys, and
// which one is current. `cortex context ...` edits it; every verb reads it (ResolveContext).
//
//   # ~/.cortex/contexts.yml (or $CORTEX_CONTEXTS), written with mode 0600
//   current: prod
//   contexts:
//     prod: {server: "https://cortex.example.com:8080", token_file: "/run/secrets/cortex"}
//     local: {server: "http://127.0.0.1:8080"}
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "cli/context.h"
#include "common/status.h"

namespace cortex::cli {

struct ContextEntry {
  std::string server;
  std::string token;       // the key itself, or
  std::string token_file;  // a file holding it (first line)
  std::string ca_file;     // https:// servers: the CA certificates (PEM) to trust
  template <class Self, class V>
  static void Fields(Self& s, V& v) {
    v.Field("server", s.server);
    v.Field("token", s.token);
    v.Field("token_file", s.token_file);
    v.Field("ca_file", s.ca_file);
  }
};

struct ContextsFile {
  std::string current;
  std::map<std::string, ContextEntry> contexts;
};

// $CORTEX_CONTEXTS, else $HOME/.cortex/contexts.yml.
std::filesystem::path ContextsPath();

// An absent file is an empty one. Errors (bad YAML, a wrong shape, a file over 1 MiB) name the
// file and line.
Result<ContextsFile> LoadContexts(const std::filesystem::path& path);
// Writes a new file next to it (mode 0600: it may hold keys) and renames it over the old one.
Status SaveContexts(const std::filesystem::path& path, const ContextsFile& file);

// Fills ctx.server and ctx.token: --server (already in ctx.server), else CORTEX_SERVER, else the
// context's server (ctx.context_name, else CORTEX_CONTEXT, else the file's current one), else
// http://127.0.0.1:8080; CORTEX_TOKEN, else the context's token or token_file; CORTEX_CA_CERT,
// else the context's ca_file. A context named
// but not in the file, or a token_file that cannot be read, is an error.
Status ResolveContext(Context& ctx);

}  // namespace cortex::cli
