// HTTP routes of the deployer: /deploy/relic, /relics/..., /discovery/services.
#pragma once

#include "deploy/deployer.h"
#include "http/http.h"

namespace cortex::api {

void AddDeployRoutes(http::Server& server, deploy::Deployer& deployer);

}  // namespace cortex::api
