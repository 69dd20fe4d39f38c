// The one place a Status becomes an HTTP answer.
#pragma once

#include <string_view>

#include "common/status.h"
#include "http/http.h"

namespace cortex::api {

int HttpStatusFor(StatusCode code);

// {"error":{"code":..., "message":..., "details":...}} with the status's HTTP code.
http::Response ErrorFromStatus(const Status& status, std::string_view details_json = {});

}  // namespace cortex::api
