// Diagnostics: what validation says about a manifest file, with its position.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace cortex::registry {

enum class Severity { kError, kWarning };

struct Diagnostic {
  Severity severity = Severity::kError;
  std::string file;  // as given to the parser (the path relative to the manifests root, usually)
  int line = 0;      // 1-based; 0 when the message is about the whole file
  int column = 0;
  std::string message;

  // "file:line:col: error: message" (the compiler convention editors understand).
  std::string ToString() const;
  nlohmann::ordered_json ToJson() const;
};

using Diagnostics = std::vector<Diagnostic>;

bool HasErrors(const Diagnostics& diagnostics);

}  // namespace cortex::registry
