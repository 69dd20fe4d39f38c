#include "api/relic_caller.h"

#include "http/http.h"

namespace cortex::api {

namespace {

using Json = nlohmann::ordered_json;

Result<Json> Perform(const workflow::StepDispatcher::RelicCall& call) {
  const std::string& target = call.target;
  if (!target.starts_with("http://") && !target.starts_with("https://")) {
    return FailedPreconditionError("relic '" + target +
                                   "' has no known endpoint: relic steps by name need the "
                                   "deployer, which has not landed yet (give a URL as target)");
  }
  size_t path_start = target.find('/', target.find("//") + 2);
  std::string base = path_start == std::string::npos ? target : target.substr(0, path_start);
  std::string path = path_start == std::string::npos ? "" : target.substr(path_start);
  Json params = call.parameters.is_object() ? call.parameters : Json::object();
  std::string method = params.value("method", "");
  std::string sub = call.action.starts_with("/") ? call.action : params.value("path", "");
  if (!sub.empty()) {
    if (!path.empty() && path.back() == '/' && sub.front() == '/') path.pop_back();
    path += sub.front() == '/' ? sub : "/" + sub;
  }
  if (path.empty()) path = "/";
  if (auto q = params.find("query"); q != params.end() && q->is_object()) {
    std::string query;
    for (const auto& [k, v] : q->items()) {
      query += (query.empty() ? "" : "&") + http::UrlEncode(k) + "=" +
               http::UrlEncode(v.is_string() ? v.get<std::string>() : v.dump());
    }
    if (!query.empty()) path += (path.find('?') == std::string::npos ? "?" : "&") + query;
  }
  Json body;
  if (auto b = params.find("body"); b != params.end()) {
    body = *b;
  } else {
    Json rest = Json::object();
    for (const auto& [k, v] : params.items()) {
      if (k != "method" && k != "path" && k != "query" && k != "headers") rest[k] = v;
    }
    if (!rest.empty()) body = rest;
  }
  if (method.empty()) method = body.is_null() ? "GET" : "POST";
  for (char& c : method) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  http::ClientOptions opts;
  opts.read_timeout = call.timeout;
  http::Client client(base, opts);
  Result<http::ClientResponse> resp = InvalidArgumentError("unsupported method " + method);
  std::string text = body.is_null() ? "" : body.dump();
  if (method == "GET") resp = client.Get(path);
  if (method == "POST") resp = client.Post(path, text);
  if (method == "PUT") resp = client.Put(path, text);
  if (method == "DELETE") resp = client.Delete(path);
  if (!resp.ok())
    return UnavailableError(method + " " + base + path + ": " + resp.status().message());
  Json out = Json::parse(resp->body, nullptr, false);
  if (out.is_discarded()) out = resp->body;
  if (resp->status < 200 || resp->status >= 300) {
    std::string snippet = resp->body.substr(0, 300);
    return UnavailableError(method + " " + base + path + " answered " +
                            std::to_string(resp->status) + (snippet.empty() ? "" : ": " + snippet));
  }
  return out;
}

}  // namespace

RelicCaller::RelicCaller(int threads, size_t queue) : capacity_(queue) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Loop(); });
}

RelicCaller::~RelicCaller() {
  std::deque<Job> left;
  {
    std::lock_guard lock(mu_);
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
    std::lock_guard lock(mu_);
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
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    job.done(Perform(job.call));
  }
}

}  // namespace cortex::api
