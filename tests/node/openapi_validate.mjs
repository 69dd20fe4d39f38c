// Validates an OpenAPI document with @apidevtools/swagger-parser (the OpenAPI 3.1 schema and
// its semantic checks: unique operationIds, path parameters declared, $refs resolving).
// Usage: node openapi_validate.mjs URL. Prints {"valid": true, "paths": N} or
// {"valid": false, "error": "..."}; exits 1 when invalid.
import SwaggerParser from "@apidevtools/swagger-parser";

const url = process.argv[2];
try {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  const doc = await res.json();
  const api = await SwaggerParser.validate(doc);
  console.log(JSON.stringify({ valid: true, openapi: api.openapi, paths: Object.keys(api.paths).length }));
} catch (e) {
  console.log(JSON.stringify({ valid: false, error: String(e && e.message ? e.message : e) }));
  process.exit(1);
}
