//! Tests of the generated document.

use super::*;
use crate::values::DATETIME_PATTERN;

/// Every file under `control-plane/docs-ui/` is embedded, so a file
/// added by `scripts/vendor-console.sh` cannot be left out.
#[test]
fn every_reference_file_is_embedded() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs-ui");
    let mut stack = vec![root.clone()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().to_string_lossy();
            assert!(DOCS.find(&rel).is_some(), "{rel} is not in DOCS_ASSETS");
            seen += 1;
        }
    }
    assert_eq!(seen, DOCS_ASSETS.len());
}

/// Whether a schema says what its value is: a type, a reference, a
/// choice, an enum, or null (`nullable` with nothing else to be).
fn is_typed(schema: &Json) -> bool {
    ["type", "$ref", "oneOf", "anyOf", "allOf", "enum"]
        .iter()
        .any(|k| schema.get(k).is_some())
        || (schema["nullable"] == json!(true) && schema["description"].is_string())
}

/// A request body schema that names its fields (or its variants), not
/// just "some object".
fn describes_fields(schema: &Json) -> bool {
    let named = |key: &str| {
        schema
            .get(key)
            .is_some_and(|v| v.as_object().is_some_and(|o| !o.is_empty()) || v.is_array())
    };
    schema.get("$ref").is_some()
        || named("oneOf")
        || named("properties")
        || schema["additionalProperties"].is_object()
}

/// The crate's source files but this one (whose text names routes in
/// its tests), with their text.
fn source_files() -> Vec<(std::path::PathBuf, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.to_string_lossy().contains("http/openapi/") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((path, text));
            }
        }
    }
    files
}

/// A path without `/v1` and with every parameter written `{}`, so the
/// router's names (`{id}`, `{*path}`) match the document's.
fn normalise(path: &str) -> String {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let mut out = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    out.push_str("{}");
                }
            }
            '}' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The `.route("…", …)` calls with a literal path in `text`: the path
/// and the call's text up to its closing parenthesis.
fn routes_in(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // `.route("/path", methods)` and the entries of a route table,
    // `("/path", get(handler))` (`web::route_table`).
    for opening in [".route(", "(\"/"] {
        let mut rest = text;
        while let Some(at) = rest.find(opening) {
            // Just after the opening parenthesis.
            rest = &rest[at + opening.find('(').unwrap() + 1..];
            let Some(literal) = rest.trim_start().strip_prefix('"') else {
                continue;
            };
            let route = literal[..literal.find('"').unwrap()].to_string();
            let after = literal[route.len() + 1..].trim_start_matches([',', ' ', '\n']);
            let is_table_entry = opening != ".route(";
            if is_table_entry
                && !["get(", "post(", "put(", "patch(", "delete("]
                    .iter()
                    .any(|verb| after.starts_with(verb))
            {
                continue;
            }
            let mut depth = 1;
            let call: String = rest
                .chars()
                .take_while(|c| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth > 0
                })
                .collect();
            out.push((route, call));
        }
    }
    // A `const X_ROUTES` table whose methods are named where it is folded into a router
    // (`("/path", Switch::Enable, true)`): its paths are routes all the same; no method
    // is read from them.
    let mut rest = text;
    while let Some(at) = rest.find("_ROUTES: [") {
        rest = &rest[at..];
        let table = &rest[..rest.find("\n];").unwrap_or(rest.len())];
        for entry in table.split("(\"/").skip(1) {
            let route = format!("/{}", &entry[..entry.find('"').unwrap()]);
            if !out.iter().any(|(known, _)| *known == route) {
                out.push((route, String::new()));
            }
        }
        rest = &rest[table.len()..];
    }
    out
}

/// The (method, route) pairs whose handler reads a body (`JsonBody`,
/// `GetArgs`): `post(name)` in a route call, then `fn name` in the
/// router's own file first (a service function elsewhere may share its
/// name), then anywhere.
fn handlers_reading_a_body() -> Vec<(String, String)> {
    let files = source_files();
    let body_of = |name: &str, home: &str| -> Option<String> {
        let needle = format!("fn {name}(");
        std::iter::once(home)
            .chain(files.iter().map(|(_, t)| t.as_str()))
            .find_map(|text| {
                let at = text.find(&needle)?;
                let end = text[at..].find("\n}\n").map_or(text.len(), |e| at + e);
                Some(text[at..end].to_string())
            })
    };
    let mut out = Vec::new();
    for (_, text) in &files {
        for (route, call) in routes_in(text) {
            for method in ["post", "put", "delete", "patch"] {
                let needle = format!("{method}(");
                let mut rest = call.as_str();
                while let Some(m) = rest.find(&needle) {
                    let before = rest[..m].chars().last();
                    rest = &rest[m + needle.len()..];
                    if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        continue;
                    }
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let name = name.rsplit("::").next().unwrap_or_default();
                    if body_of(name, text)
                        .is_some_and(|f| f.contains("JsonBody") || f.contains("GetArgs"))
                    {
                        out.push((method.to_string(), route.clone()));
                    }
                }
            }
        }
    }
    out
}

/// Every operation states its success answer with a schema, the
/// envelope's `data` included (or is one of the few that answer with a
/// page, a file or nothing), every body it takes names its fields, and
/// every handler that reads a body has one documented.
#[test]
fn every_operation_is_typed() {
    let doc = build(&Catalogue::builtin());
    // HTML, files, plain text, and 204 No Content.
    let not_json = |path: &str, method: &str| {
        path.starts_with("/console")
            || path.starts_with("/v1/docs")
            || matches!(path, "/v1/home" | "/health" | "/ready")
            || method == "delete"
    };
    let mut faults = Vec::new();
    let mut with_body = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{method} {path}");
            let success: Vec<&Json> = op["responses"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(code, _)| code.starts_with('2'))
                .map(|(_, r)| r)
                .collect();
            if success.is_empty() {
                faults.push(format!("{what}: no success response"));
            }
            if !not_json(path, method) {
                for r in &success {
                    let schema = &r["content"]["application/json"]["schema"];
                    if !is_typed(schema) {
                        faults.push(format!("{what}: success response without a schema"));
                    }
                    // The envelope's `data` says what it holds, too.
                    if let Some(data) = schema["properties"].get("data") {
                        if !is_typed(data) {
                            faults.push(format!("{what}: `data` without a schema"));
                        }
                    }
                }
            }
            for (code, r) in op["responses"].as_object().unwrap() {
                if !code.starts_with('2') && r.get("$ref").is_none() {
                    let schema = &r["content"]["application/json"]["schema"];
                    if !is_typed(schema) {
                        faults.push(format!("{what}: {code} without a schema"));
                    }
                }
            }
            if let Some(body) = op.get("requestBody") {
                let schema = &body["content"]["application/json"]["schema"];
                if !describes_fields(schema) {
                    faults.push(format!("{what}: a body schema that names no field"));
                }
                with_body.push((method.clone(), path.clone()));
            }
        }
    }
    let documented: Vec<(String, String)> = with_body
        .iter()
        .map(|(m, p)| (m.clone(), normalise(p)))
        .collect();
    let reading = handlers_reading_a_body();
    assert!(reading.len() > 20, "the source scan found only {reading:?}");
    for (method, route) in reading {
        if !documented.contains(&(method.clone(), normalise(&route))) {
            faults.push(format!(
                "{method} {route}: the handler reads a body the document does not describe"
            ));
        }
    }
    assert!(faults.is_empty(), "{}", faults.join("\n"));
}

/// `value`'s object keys, at every depth, are the properties `schema`
/// states (references resolved in `doc`), and the required ones are
/// there.
fn same_fields(doc: &Json, schema: &Json, value: &Json, at: &str) -> Vec<String> {
    let schema = match schema["$ref"].as_str() {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => match schema["allOf"].get(0) {
            Some(inner) => return same_fields(doc, inner, value, at),
            None => schema,
        },
    };
    let mut faults = Vec::new();
    match value {
        Json::Object(o) => {
            if let Some(props) = schema["properties"].as_object() {
                for k in o.keys() {
                    match props.get(k) {
                        Some(p) => faults.extend(same_fields(doc, p, &o[k], &format!("{at}.{k}"))),
                        None => faults.push(format!("{at}.{k}: sent, not documented")),
                    }
                }
                for k in props.keys().filter(|k| !o.contains_key(*k)) {
                    faults.push(format!("{at}.{k}: documented, not sent"));
                }
            } else if schema["additionalProperties"].is_object() {
                for (k, v) in o {
                    faults.extend(same_fields(
                        doc,
                        &schema["additionalProperties"],
                        v,
                        &format!("{at}.{k}"),
                    ));
                }
            }
            for r in schema["required"].as_array().into_iter().flatten() {
                if !o.contains_key(r.as_str().unwrap()) {
                    faults.push(format!("{at}.{r}: required, not sent"));
                }
            }
        }
        Json::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                faults.extend(same_fields(doc, &schema["items"], v, &format!("{at}[{i}]")));
            }
        }
        _ => {}
    }
    faults
}

/// The handlers that build their `data` from a struct answer with the
/// fields the document states for them, no more and no fewer.
#[test]
fn typed_data_has_the_documented_fields() {
    let doc = build(&Catalogue::builtin());
    let data = |path: &str| {
        doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            ["properties"]["data"]
            .clone()
    };
    let examples = [
        (
            "/v1/products/{product_imei}/balance_and_pending_payments",
            serde_json::to_value(super::super::dcm::BalanceAndPending::example()).unwrap(),
        ),
        (
            "/v1/current_enable_status",
            json!([crate::actions::dashboard::EnableStatus::example()]),
        ),
    ];
    for (path, value) in examples {
        let faults = same_fields(&doc, &data(path), &value, path);
        assert!(faults.is_empty(), "{}", faults.join("\n"));
    }
    // Not blind: a field the document lacks is found.
    let mut extra = serde_json::to_value(super::super::dcm::BalanceAndPending::example()).unwrap();
    extra["pending_payment_commands"][0]["transaction_id"] = json!("t");
    let path = "/v1/products/{product_imei}/balance_and_pending_payments";
    assert_eq!(
        same_fields(&doc, &data(path), &extra, "b"),
        ["b.pending_payment_commands[0].transaction_id: sent, not documented"]
    );
}

/// Rows document their timestamps as the server writes them, and
/// request bodies as it reads them (RFC 3339 among other forms).
#[test]
fn timestamps_are_documented_as_written_and_as_read() {
    let doc = build(&Catalogue::builtin());
    let schemas = &doc["components"]["schemas"];
    let row = &schemas["enable_history"]["properties"]["date"];
    assert_eq!(row["pattern"], json!(DATETIME_PATTERN), "{row}");
    assert!(row.get("format").is_none(), "{row}");
    let written = regex::Regex::new(DATETIME_PATTERN).unwrap();
    assert!(written.is_match(row["example"].as_str().unwrap()));
    let nullable = &schemas["product"]["properties"]["disable_date"];
    assert_eq!(nullable["nullable"], json!(true), "{nullable}");
    assert_eq!(nullable["pattern"], json!(DATETIME_PATTERN), "{nullable}");
    let body = &schemas["product_update"]["properties"]["disable_date"];
    assert_eq!(body["format"], json!("date-time"), "{body}");
    assert!(body.get("pattern").is_none(), "{body}");
}

/// Every path a router in this crate registers (found in the source)
/// appears in the document, so new endpoints cannot be forgotten.
#[test]
fn every_route_in_the_source_is_documented() {
    let doc = build(&Catalogue::builtin());
    let documented: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|p| normalise(p.as_str()))
        .collect();
    let mut missing = Vec::new();
    for (path, text) in source_files() {
        for (route, _) in routes_in(&text) {
            if !documented.contains(&normalise(&route)) {
                missing.push(format!("{route} ({})", path.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from ACTION_ROUTES in routes.rs: {missing:?}"
    );
}
