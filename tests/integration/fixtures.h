// Manifests several integration tests start their servers with.
#pragma once

#include <filesystem>
#include <initializer_list>

#include "integration/daemon.h"

namespace cortex::testing {

// Copies examples/manifests/tools/<name> into <manifests>/tools/<name>, for each name.
inline void CopyExampleTools(const std::filesystem::path& m,
                             std::initializer_list<const char*> names) {
  std::filesystem::create_directories(m / "tools");
  for (const char* tool : names) {
    std::filesystem::copy(
        std::filesystem::path(CORTEX_SOURCE_DIR) / "examples/manifests/tools" / tool,
        m / "tools" / tool, std::filesystem::copy_options::recursive);
  }
}

// workflows/twice.workflow.yml: two shell_echo steps, one after the other.
inline void WriteTwiceWorkflow(const std::filesystem::path& m) {
  WriteFile(m / "workflows/twice.workflow.yml",
            "kind: Workflow\nname: twice\ndescription: Echoes twice.\n"
            "trigger: {type: manual}\nsteps:\n"
            "  - {name: a, type: tool, target: shell_echo, parameters: {message: hi}}\n"
            "  - {name: b, type: tool, target: shell_echo, parameters: {message: ho}, "
            "depends_on: [a]}\n");
}

}  // namespace cortex::testing
