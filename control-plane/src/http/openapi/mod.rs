//! `GET /v1/openapi.json`: an OpenAPI 3.0 document generated from the
//! catalogue and the list of action routes (the original API had none).
//!
//! Table operations take their schemas from the catalogue columns, with the
//! constraints `values::coerce` and `generic::validate_body` enforce; action
//! routes take theirs from [`action_contract`], next to the constants of the
//! handlers they describe. `tests/openapi.rs` validates the document with a
//! standard validator, fuzzes the server from it (schemathesis) and drives a
//! client generated from it, so the document and the server cannot drift
//! apart unnoticed.

mod actions;
mod schemas;
#[cfg(test)]
mod tests;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value as Json};

use crate::app::AppState;
use crate::catalogue::Catalogue;
use crate::catalogue::ColumnType;
use crate::console::{assets, Asset, AssetSet};
use crate::routes::ACTION_ROUTES;
use actions::{action_contract, action_schemas};
pub(super) use schemas::datetime_read_schema;
use schemas::*;

pub(super) fn router() -> Router<AppState> {
    let csp = crate::console::content_security_policy(None);
    let page = {
        let csp = csp.clone();
        move |headers: HeaderMap| {
            let csp = csp.clone();
            async move { DOCS.respond(&headers, "index.html", &csp) }
        }
    };
    let file = move |headers: HeaderMap, Path(path): Path<String>| {
        let csp = csp.clone();
        async move { DOCS.respond(&headers, &path, &csp) }
    };
    Router::new()
        .route("/openapi.json", get(document))
        .route("/docs", get(page))
        .route("/docs/{*path}", get(file))
}

/// The browsable reference at `/v1/docs`: Swagger UI (vendored by
/// `scripts/vendor-console.sh`, with its licence) started on this server's
/// document by `init.js`; served like the console's files, under the same
/// Content-Security-Policy.
const DOCS_ASSETS: &[Asset] = assets![
    "docs-ui":
    "index.html",
    "init.js",
    "vendor/VERSIONS",
    "vendor/swagger-ui/LICENSE",
    "vendor/swagger-ui/NOTICE",
    "vendor/swagger-ui/swagger-ui-bundle.js",
    "vendor/swagger-ui/swagger-ui-bundle.js.LICENSE.txt",
    "vendor/swagger-ui/swagger-ui.css",
];

static DOCS: AssetSet = AssetSet::new("reference file", DOCS_ASSETS);

async fn document(State(state): State<AppState>) -> axum::Json<Json> {
    axum::Json(build(&state.catalogue))
}

const PERMISSIONS: [&str; 5] = ["OVERVIEW", "TECHNICAL", "ADMIN", "FACTORY", "SYSTEM"];

/// `listStateTypes`-style ids from the method and path.
pub(super) fn operation_id(verb: &str, path: &str) -> String {
    let mut out = verb.to_string();
    if path.ends_with('/') {
        out.push_str("Index");
    }
    for part in path
        .split(['/', '_', '{', '}', '.'])
        .filter(|p| !p.is_empty())
    {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.push(first.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    out
}

/// The document for a catalogue.
pub(crate) fn build(cat: &Catalogue) -> Json {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "title": "Error", "required": ["status", "message"], "properties": {
            "status": {"type": "string", "enum": ["error", "validation-error"]},
            "message": {"type": "string"},
            "data": {"nullable": true},
            "validation_errors": {"type": "object", "nullable": true, "additionalProperties": {"type": "string"}}}}),
    );
    for (name, schema) in action_schemas(cat) {
        schemas.insert(name.into(), schema);
    }
    for t in cat.tables() {
        schemas.insert(t.name.clone(), table_schema(t, Shape::Read));
        schemas.insert(format!("{}_create", t.name), table_schema(t, Shape::Create));
        schemas.insert(format!("{}_update", t.name), table_schema(t, Shape::Update));
        let obj = schema_ref(&t.name);
        let list = object_schema(
            &["num_results", "page", "total_pages", "objects"],
            json!({"num_results": {"type": "integer"}, "page": {"type": "integer"},
                   "total_pages": {"type": "integer"}, "objects": {"type": "array", "items": obj}}),
        );
        let id = t
            .id_param
            .clone()
            .unwrap_or_else(|| t.primary_key().name.clone());
        let pk = t.primary_key();
        let id_schema = match pk.ty {
            ColumnType::Int => json!({"type": "integer", "format": "int64"}),
            _ => {
                let mut s = json!({"type": "string", "minLength": 1});
                if let Some(m) = pk.max_len {
                    s["maxLength"] = json!(m);
                }
                s
            }
        };
        let id_param = json!({"name": id, "in": "path", "required": true, "schema": id_schema});
        for path in &t.paths {
            let item_path = format!("{path}/{{{id}}}");
            let tag = &t.name;
            let mut coll = Map::new();
            let mut item = Map::new();
            if let Some(p) = t.methods.get {
                let mut q = vec![q_param()];
                q.extend(paging_params());
                let c = Contract::new("200", Some(list.clone())).query(q);
                coll.insert(
                    "get".into(),
                    operation(
                        operation_id("list", path),
                        tag,
                        format!("List {} (q, page, results_per_page)", t.name),
                        p.as_str(),
                        vec![],
                        c,
                    ),
                );
                let c = Contract::new("200", Some(obj.clone()));
                item.insert(
                    "get".into(),
                    operation(
                        operation_id("get", &item_path),
                        tag,
                        format!("Get one {}", t.name),
                        p.as_str(),
                        vec![id_param.clone()],
                        c,
                    ),
                );
            }
            if let Some(p) = t.methods.post {
                let c = Contract::new("201", Some(obj.clone()))
                    .body(schema_ref(&format!("{}_create", t.name)));
                coll.insert(
                    "post".into(),
                    operation(
                        operation_id("create", path),
                        tag,
                        format!("Create a {}", t.name),
                        p.as_str(),
                        vec![],
                        c,
                    ),
                );
            }
            if let Some(p) = t.methods.put {
                let c = Contract::new("200", Some(obj.clone()))
                    .body(schema_ref(&format!("{}_update", t.name)));
                item.insert(
                    "put".into(),
                    operation(
                        operation_id("update", &item_path),
                        tag,
                        format!("Change a {}", t.name),
                        p.as_str(),
                        vec![id_param.clone()],
                        c,
                    ),
                );
            }
            if let Some(p) = t.methods.delete {
                item.insert(
                    "delete".into(),
                    operation(
                        operation_id("delete", &item_path),
                        tag,
                        format!("Delete a {}", t.name),
                        p.as_str(),
                        vec![id_param.clone()],
                        Contract::new("204", None),
                    ),
                );
            }
            paths.insert(format!("/v1{path}"), Json::Object(coll));
            paths.insert(format!("/v1{item_path}"), Json::Object(item));
        }
    }
    for (path, method, summary, permission) in ACTION_ROUTES {
        // Probes and the console live outside the versioned API.
        let full = if matches!(*path, "/health" | "/ready") || path.starts_with("/console") {
            (*path).to_string()
        } else {
            format!("/v1{path}")
        };
        let tag = path
            .split('/')
            .find(|s| !s.is_empty())
            .unwrap_or("api")
            .trim_end_matches(".json");
        let o = operation(
            operation_id(method, path),
            tag,
            (*summary).to_string(),
            permission,
            path_params(cat, path),
            action_contract(cat, method, path),
        );
        let entry = paths.entry(full).or_insert_with(|| json!({}));
        entry[*method] = o;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "SMARTSolar API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "The relational API of SMARTSolar. Log in with `POST /v1/auth/login`, then send \
                                 `Authorization: Token token=<API_token>` with every call. Each operation's description \
                                 names the permission level it needs (`x-permission`)."},
        "servers": [{"url": "/"}],
        "security": [{"ApiToken": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"ApiToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Token token=<API_token>`, the token from /v1/auth/login"}},
            "responses": {"Error": {"description": "The error envelope; validation errors name each field",
                "content": {"application/json": {"schema": schema_ref("Error")}}}},
        },
    })
}
