// `cortex serve`: every service in one process, until SIGINT/SIGTERM.
#pragma once

#include "api/settings.h"

namespace cortex::api {

// Runs until a stop signal; returns the process exit code. The bound address is written to
// <data_dir>/serve.json ({"pid", "listen", "port"}) once the API is ready, for scripts and tests
// that start it on port 0.
int RunServe(const Settings& settings);

}  // namespace cortex::api
