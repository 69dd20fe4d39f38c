#include "api/errors.h"

namespace cortex::api {

int HttpStatusFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 200;
    case StatusCode::kInvalidArgument:
      return 400;
    case StatusCode::kUnauthenticated:
      return 401;
    case StatusCode::kPermissionDenied:
      return 403;
    case StatusCode::kNotFound:
      return 404;
    case StatusCode::kAlreadyExists:
      return 409;
    case StatusCode::kConflict:
      return 409;
    case StatusCode::kResourceExhausted:
      return 429;
    case StatusCode::kFailedPrecondition:
      return 409;
    case StatusCode::kUnavailable:
      return 503;
    case StatusCode::kDeadlineExceeded:
      return 504;
    case StatusCode::kUnimplemented:
      return 501;
    case StatusCode::kInternal:
      return 500;
  }
  return 500;
}

http::Response ErrorFromStatus(const Status& status, std::string_view details_json) {
  // Every 403 of the API says "forbidden", whether the access filter or a handler refused.
  std::string_view code = status.code() == StatusCode::kPermissionDenied
                              ? std::string_view("forbidden")
                              : StatusCodeName(status.code());
  return http::ErrorResponse(HttpStatusFor(status.code()), code, status.message(), details_json);
}

}  // namespace cortex::api
