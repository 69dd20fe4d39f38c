// GET /openapi.json: an OpenAPI 3.1 document that a real validator (npm
// @apidevtools/swagger-parser) accepts, describing every route the server serves, each with a
// summary and the role the access table gives it. A route added without an entry in the table
// has no summary, and this test fails.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "cli/cli_process.h"
#include "integration/api_reply.h"
#include "integration/daemon.h"

namespace cortex::testing {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

TEST(OpenApi, TheDocumentIsValidAndDescribesEveryRoute) {
  Daemon d;
  ASSERT_DAEMON(d);
  Reply doc = Get(d.client(), "/openapi.json");
  ASSERT_EQ(doc.status, 200) << doc.body;
  EXPECT_EQ(doc.json.value("openapi", ""), "3.1.0");
  const json& paths = doc.json["paths"];
  ASSERT_TRUE(paths.is_object()) << doc.body;

  // Every registered route (as the access table's listing gives them) is described.
  Reply routes = Get(d.client(), "/auth/routes");
  ASSERT_EQ(routes.status, 200) << routes.body;
  std::set<std::string> ids;
  size_t described = 0;
  for (const json& r : routes.json["routes"]) {
    const std::string pattern = r["pattern"], method = Lower(r["method"]);
    SCOPED_TRACE(method + " " + pattern);
    ASSERT_TRUE(paths.contains(pattern) && paths[pattern].contains(method)) << "not described";
    const json& op = paths[pattern][method];
    EXPECT_FALSE(op.value("summary", "").empty()) << "a route without a summary";
    EXPECT_TRUE(ids.insert(op.value("operationId", "")).second) << "operationId not unique";
    if (r["role"] != "public") {
      EXPECT_EQ(op.value("x-cortex-role", ""), r["role"]);
    }
    ++described;
  }
  EXPECT_GT(described, 80u);
  size_t operations = 0;
  for (const auto& [path, ops] : paths.items()) operations += ops.size();
  EXPECT_EQ(operations, described) << "the document describes only routes the server has";
  // Roles as the access table gives them, and what they mean for security.
  EXPECT_EQ(paths["/registry/manifests"]["post"].value("x-cortex-role", ""), "admin");
  EXPECT_EQ(paths["/execute/tool"]["post"].value("x-cortex-role", ""), "operator");
  EXPECT_EQ(paths["/relics"]["get"].value("x-cortex-role", ""), "viewer");
  EXPECT_FALSE(paths["/health"]["get"].contains("x-cortex-role"));
  EXPECT_TRUE(paths["/audit"]["get"]["responses"].contains("403"));
  EXPECT_FALSE(paths["/health"]["get"]["responses"].contains("401"));
  // The manifest kinds' schemas are components, and the manifest routes point at them.
  for (const char* kind : {"Tool", "Agent", "Relic", "Workflow", "Monument"}) {
    EXPECT_TRUE(doc.json["components"]["schemas"].contains(kind)) << kind;
  }
  EXPECT_THAT(paths["/registry/manifests"]["post"].dump(), HasSubstr("#/components/schemas/"));
  // A path parameter is declared; a query parameter the handler reads is too.
  EXPECT_THAT(paths["/relics/{name}/logs"]["get"]["parameters"].dump(), HasSubstr("\"tail\""));

  // The real validator accepts it.
  CliResult v = RunCli({"/usr/bin/env", "node",
                        std::string(CORTEX_SOURCE_DIR) + "/tests/node/openapi_validate.mjs",
                        d.url() + "/openapi.json"});
  EXPECT_EQ(v.exit_code, 0) << v;
  json verdict = json::parse(v.out, nullptr, false);
  EXPECT_EQ(verdict.value("valid", false), true) << v;
}

}  // namespace
}  // namespace cortex::testing
