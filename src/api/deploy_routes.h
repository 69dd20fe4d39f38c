// HTTP routes of the deployer: /deploy/relic, /relics/..., /deploy/monument, /monuments/...,
// /discovery/services.
#pragma once

#include "deploy/deployer.h"
#include "deploy/monuments.h"
#include "http/http.h"

namespace cortex::api {

void AddDeployRoutes(http::Server& server, deploy::Deployer& deployer,
                     deploy::Monuments& monuments);

}  // namespace cortex::api
