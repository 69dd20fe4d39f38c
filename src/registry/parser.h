// Turns the text of one manifest file into a validated Manifest, or into diagnostics.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "registry/diagnostics.h"
#include "registry/manifest.h"

namespace cortex::registry {

struct ParserOptions {
  bool strict = false;          // unknown fields are errors, not warnings
  size_t max_bytes = 1u << 20;  // larger files are refused
  int max_depth = 64;           // YAML nesting
  // The model providers the server knows (llm.providers and the default names). Set: an agent
  // naming another one gets a warning. Empty (`cortex validate`, no server): not checked.
  std::vector<std::string> llm_providers;
};

enum class FileFormat { kYaml, kMarkdown };

// The format a path's extension implies, or nullopt for files that are never manifests.
std::optional<FileFormat> FormatOfPath(std::string_view path);

struct ParsedFile {
  // Set when the file declares a manifest that validated (possibly with warnings).
  std::optional<Manifest> manifest;
  // True when the file is not a manifest at all (Markdown without front matter, ...): no error.
  bool not_a_manifest = false;
  Diagnostics diagnostics;
};

// `display_path` is used in diagnostics (file:line:col).
ParsedFile ParseManifest(std::string_view text, std::string_view display_path, FileFormat format,
                         const ParserOptions& options = {});

}  // namespace cortex::registry
