#include "api/relic_caller.h"
#include "common/json.h"

namespace cortex::api {

namespace {

using Json = nlohmann::ordered_json;

// A non-2xx answer fails the step, with the status and the start of the body.
Result<Json> StepOutput(Result<deploy::CallResult> r) {
  if (!r.ok()) return r.status();
  if (r->status < 200 || r->status >= 300) {
    std::string snippet = r->body.is_string() ? r->body.get<std::string>() : DumpJson(r->body);
    if (snippet.size() > 300) snippet.resize(300);
    return UnavailableError(r->method + " " + r->url + " answered " + std::to_string(r->status) +
                            (snippet.empty() || snippet == "null" ? "" : ": " + snippet));
  }
  return r->body;
}

}  // namespace

Result<Json> RelicCaller::Perform(const workflow::StepDispatcher::RelicCall& call) const {
  const std::string& target = call.target;
  Json params = call.parameters.is_object() ? call.parameters : Json::object();
  if (!target.starts_with("http://") && !target.starts_with("https://")) {
    if (!deployer_) return FailedPreconditionError("relic steps by name need the deployer");
    // By name: the operation is the step's action, or parameters.operation / .action.
    std::string op = call.action;
    for (const char* key : {"operation", "action"}) {
      if (auto it = params.find(key); it != params.end() && it->is_string()) {
        if (op.empty()) op = it->get<std::string>();
        params.erase(key);
      }
    }
    if (op.empty()) {
      return InvalidArgumentError("relic step on " + target +
                                  ": no operation (set the step's action, or "
                                  "parameters.operation)");
    }
    return StepOutput(deployer_->CallRelic(target, op, params, call.timeout, call.traceparent));
  }
  deploy::HttpCall http_call;
  http_call.url = target;
  std::string sub = call.action.starts_with("/") ? call.action : params.value("path", "");
  if (!sub.empty()) {
    if (http_call.url.back() == '/' && sub.front() == '/') http_call.url.pop_back();
    http_call.url += sub.front() == '/' ? sub : "/" + sub;
  }
  if (auto q = params.find("query"); q != params.end() && q->is_object()) http_call.query = *q;
  if (auto b = params.find("body"); b != params.end()) {
    http_call.body = *b;
  } else {
    Json rest = Json::object();
    for (const auto& [k, v] : params.items()) {
      if (k != "method" && k != "path" && k != "query" && k != "headers") rest[k] = v;
    }
    if (!rest.empty()) http_call.body = rest;
  }
  std::string method = params.value("method", "");
  if (method.empty()) method = http_call.body.is_null() ? "GET" : "POST";
  for (char& c : method) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  http_call.method = method;
  http_call.timeout = call.timeout;
  http_call.traceparent = call.traceparent;
  return StepOutput(deploy::SendHttp(http_call));
}

RelicCaller::RelicCaller(const deploy::Deployer* deployer, int threads, size_t queue)
    : deployer_(deployer), capacity_(queue) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Loop(); });
}

RelicCaller::~RelicCaller() {
  std::deque<Job> left;
  {
    MutexLock lock(mu_);
    stopping_ = true;
    left.swap(queue_);
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  for (auto& job : left) job.done(UnavailableError("the server stopped before the call"));
}

Status RelicCaller::Call(const workflow::StepDispatcher::RelicCall& call,
                         std::function<void(Result<Json>)> done) {
  {
    MutexLock lock(mu_);
    if (stopping_) return UnavailableError("the server is stopping");
    if (queue_.size() >= capacity_) {
      return ResourceExhaustedError("too many relic calls waiting");
    }
    queue_.push_back({call, std::move(done)});
  }
  cv_.notify_one();
  return Status::Ok();
}

void RelicCaller::Loop() {
  for (;;) {
    Job job;
    {
      MutexLock lock(mu_);
      cv_.wait(lock.native(), [&]() CORTEX_REQUIRES(mu_) { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    job.done(Perform(job.call));
  }
}

}  // namespace cortex::api
