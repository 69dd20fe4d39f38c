// HTTP routes of the executor service: /execute/tool and /executions/...
#pragma once

#include "exec/executor.h"
#include "http/http.h"
#include "store/store.h"

namespace cortex::api {

void AddExecuteRoutes(http::Server& server, exec::Executor& executor, store::Store& store);

}  // namespace cortex::api
