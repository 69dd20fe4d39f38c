// One health probe of a relic: HTTP (status code), TCP (connect), or a command (exit code 0).
#pragma once

#include <string>
#include <vector>

#include "deploy/plan.h"
#include "exec/process.h"

namespace cortex::deploy {

struct ProbeResult {
  bool ok = false;
  std::string error;  // why it failed, e.g. "GET http://127.0.0.1:8004/health: status 500"
  Ms took{0};
};

// Runs one probe, bounded by spec.timeout. `base_url` serves HTTP probes that name only an
// endpoint; `env`/`cwd` are the relic's, for command probes (run by `runner`).
ProbeResult RunProbe(const ProbeSpec& spec, const std::string& base_url,
                     const std::vector<std::string>& env, const std::string& cwd,
                     exec::ProcessRunner& runner);

}  // namespace cortex::deploy
