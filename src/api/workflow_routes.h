// HTTP routes of the workflow engine: /execute/workflow, /workflows/..., /hooks/{workflow}.
#pragma once

#include "http/http.h"
#include "registry/registry.h"
#include "store/store.h"
#include "workflow/engine.h"

namespace cortex::api {

struct WorkflowRouteOptions {
  // Environment lookup for `${VAR}` in webhook secrets.
  std::function<std::optional<std::string>(std::string_view)> env;
  // What a workflow posted through the API may read of `env` (variables.allow_env).
  std::vector<std::string> allowed_env;
};

void AddWorkflowRoutes(http::Server& server, workflow::Engine& engine, store::Store& store,
                       registry::Registry& registry, WorkflowRouteOptions options = {});

}  // namespace cortex::api
