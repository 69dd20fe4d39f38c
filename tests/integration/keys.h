// Test support: API keys made by the real `cortex auth create-key` on a server's data dir.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/cli_process.h"

namespace cortex::testing {

// `cortex auth create-key NAME --role ROLE [--scope S]...` on a data dir: the key's secret (and
// its id in *id).
inline std::string CreateKey(const std::filesystem::path& data, const std::string& name,
                             const std::string& role, std::string* id = nullptr,
                             const std::vector<std::string>& scopes = {}) {
  std::vector<std::string> args = {"auth",       "--data-dir", data.string(), "-o", "json",
                                   "create-key", name,         "--role",      role};
  for (const auto& s : scopes) {
    args.push_back("--scope");
    args.push_back(s);
  }
  CliResult r = RunCli(args);
  EXPECT_EQ(r.exit_code, 0) << r;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
  if (id) *id = j.is_object() ? j.value("id", "") : "";
  return j.is_object() ? j.value("secret", "") : "";
}

}  // namespace cortex::testing
