//! The operator console: a single-page browser app under `/console`, a
//! client of the `/v1` API (same login, tokens, permissions and scope).
//!
//! Its files (`control-plane/console/`: our own ES modules and the vendored
//! uPlot and Leaflet builds) are compiled into the binary with
//! `include_bytes!`, so `serve` needs nothing on disk. Every file is served
//! with its content type, a strong `ETag` (SHA-256 of the bytes) and
//! `Cache-Control: no-cache`: the browser keeps its copy but revalidates it,
//! and an unchanged file costs a `304` without a body. The names are not
//! hashed, so revalidation is what keeps an upgraded server from running
//! an old script against a new API.
//!
//! Besides the files there is one generated answer, `/console/config.json`:
//! the map tile template from the configuration and the permission each
//! action route needs (from the OpenAPI route list), so the browser shows
//! only the buttons the logged-in user may press without a second copy of
//! those rules in JavaScript. The server still checks every call.
//!
//! The Content-Security-Policy of the HTML pages and the body of
//! `config.json` depend only on the configuration, so both are built once
//! with the router.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::catalogue::Permission;
use crate::config::ControlPlaneConfig;
use crate::routes::ACTION_ROUTES;

/// One embedded file, by its path under `/console/`.
pub struct Asset {
    pub path: &'static str,
    pub bytes: &'static [u8],
}

/// Embeds files of a folder of `control-plane/` by their relative paths.
macro_rules! assets {
    ($dir:literal: $($path:literal),* $(,)?) => {
        &[$(Asset { path: $path, bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir, "/", $path)) }),*]
    };
}
pub(crate) use assets;

/// A list of embedded files with their ETags (computed on first use).
pub struct AssetSet {
    /// What a file is called in a 404 ("console file").
    what: &'static str,
    assets: &'static [Asset],
    etags: OnceLock<Vec<String>>,
}

impl AssetSet {
    pub const fn new(what: &'static str, assets: &'static [Asset]) -> Self {
        Self {
            what,
            assets,
            etags: OnceLock::new(),
        }
    }

    /// The embedded file at `path` and its quoted ETag.
    pub fn find(&self, path: &str) -> Option<(&'static Asset, &str)> {
        let etags = self.etags.get_or_init(|| {
            self.assets
                .iter()
                .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.bytes))[..32]))
                .collect()
        });
        let i = self.assets.iter().position(|a| a.path == path)?;
        Some((&self.assets[i], etags[i].as_str()))
    }

    /// The file at `path` (with `csp` on an HTML page), or a plain 404.
    pub fn respond(&self, headers: &HeaderMap, path: &str, csp: &HeaderValue) -> Response {
        match self.find(path) {
            Some((asset, etag)) => serve(headers, asset, etag, csp),
            None => (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("No {} '{path}'", self.what),
            )
                .into_response(),
        }
    }
}

/// Every file the console serves. A unit test fails when a file in
/// `control-plane/console/` (outside `e2e/`) is missing here.
pub const ASSETS: &[Asset] = assets![
    "console":
    "index.html",
    "app.js",
    "api.js",
    "dom.js",
    "pages.js",
    "charts.js",
    "map.js",
    "console.css",
    "vendor/VERSIONS",
    "vendor/uplot/LICENSE",
    "vendor/uplot/uPlot.esm.js",
    "vendor/uplot/uPlot.min.css",
    "vendor/leaflet/LICENSE",
    "vendor/leaflet/leaflet-src.esm.js",
    "vendor/leaflet/leaflet.css",
    "vendor/leaflet/images/layers-2x.png",
    "vendor/leaflet/images/layers.png",
    "vendor/leaflet/images/marker-icon-2x.png",
    "vendor/leaflet/images/marker-icon.png",
    "vendor/leaflet/images/marker-shadow.png",
];

/// `/console`, `/console/` (the app's page), `/console/config.json` and
/// `/console/<file>`, with the policy and settings of `config`.
pub fn router(config: &ControlPlaneConfig) -> Router<AppState> {
    let csp = content_security_policy(config.console_tile_url.as_deref());
    let settings = Bytes::from(
        serde_json::to_vec(&settings(
            config.console_tile_url.as_deref(),
            config.console_tile_attribution.as_deref(),
        ))
        .expect("the settings serialise"),
    );
    let page = {
        let csp = csp.clone();
        move |headers: HeaderMap| {
            let csp = csp.clone();
            async move { CONSOLE.respond(&headers, "index.html", &csp) }
        }
    };
    let file = move |headers: HeaderMap, Path(path): Path<String>| {
        let csp = csp.clone();
        async move { CONSOLE.respond(&headers, &path, &csp) }
    };
    let config_json = move || {
        let body = settings.clone();
        async move {
            (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                body,
            )
        }
    };
    Router::new()
        .route("/console", get(page.clone()))
        .route("/console/", get(page))
        .route("/console/config.json", get(config_json))
        .route("/console/{*path}", get(file))
}

/// The content type of a file, by its extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "text/plain; charset=utf-8",
    }
}

static CONSOLE: AssetSet = AssetSet::new("console file", ASSETS);

#[cfg(test)]
fn find(path: &str) -> Option<(&'static Asset, &'static str)> {
    CONSOLE.find(path)
}

/// Whether an `If-None-Match` header names `etag` (or is `*`).
fn matches_etag(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// The pages' Content-Security-Policy: scripts, styles and data from this
/// server only; images also from the configured tile server's origin.
/// Styles allow inline attributes because uPlot and Leaflet position
/// elements with them. A tile origin that cannot be part of the policy is
/// left out with a warning, so the policy itself always stands.
pub(crate) fn content_security_policy(tile_url: Option<&str>) -> HeaderValue {
    let policy = |tiles: &str| {
        format!(
            "default-src 'self'; img-src 'self' data: {tiles}; style-src 'self' 'unsafe-inline'; \
             script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    };
    let tiles = tile_url.and_then(tile_origin).unwrap_or_default();
    // Whitespace, `;` and `,` would end the source or the directive.
    let one_source = !tiles.contains(|c: char| c.is_whitespace() || c == ';' || c == ',');
    match HeaderValue::from_str(&policy(&tiles)) {
        Ok(value) if one_source => value,
        _ => {
            tracing::warn!(
                origin = %tiles.escape_debug(),
                "console tile origin is not a valid CSP source; map tiles will not load"
            );
            HeaderValue::from_str(&policy("")).expect("the policy without tiles is valid")
        }
    }
}

/// `scheme://host[:port]` of a tile URL template; a `{s}` (subdomain)
/// becomes the wildcard `*`.
fn tile_origin(template: &str) -> Option<String> {
    let (scheme, rest) = template.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{}", host.replace("{s}", "*")))
}

/// `asset` with its ETag, and `csp` when it is an HTML page.
fn serve(headers: &HeaderMap, asset: &Asset, etag: &str, csp: &HeaderValue) -> Response {
    let mut response = if matches_etag(headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(asset.path))],
            asset.bytes,
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if content_type(asset.path).starts_with("text/html") {
        h.insert(header::CONTENT_SECURITY_POLICY, csp.clone());
    }
    response
}

/// The browser's settings: map tiles, and the level each action route
/// needs (`"<METHOD> <path>"` -> level; `"none"` needs no login).
pub fn settings(tile_url: Option<&str>, tile_attribution: Option<&str>) -> Json {
    let mut permissions = Map::new();
    for (path, method, _, level) in ACTION_ROUTES {
        permissions.insert(format!("{} {path}", method.to_uppercase()), json!(level));
    }
    let levels = [
        Permission::Overview,
        Permission::Technical,
        Permission::Admin,
        Permission::Factory,
        Permission::System,
    ]
    .map(Permission::as_str);
    json!({
        "tile_url": tile_url,
        "tile_attribution": tile_attribution,
        "levels": levels,
        "permissions": permissions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file under `control-plane/console/` except the browser tests
    /// is embedded, so a new module cannot be forgotten in `ASSETS`.
    #[test]
    fn every_console_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut stack = vec![root.clone()];
        let mut missing = Vec::new();
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if path.is_dir() {
                    if rel != "e2e" {
                        stack.push(path);
                    }
                } else if find(&rel).is_none() {
                    missing.push(rel);
                }
            }
        }
        assert!(missing.is_empty(), "not in console::ASSETS: {missing:?}");
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("vendor/uplot/uPlot.esm.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("console.css"), "text/css; charset=utf-8");
        assert_eq!(
            content_type("vendor/leaflet/images/layers.png"),
            "image/png"
        );
        assert_eq!(
            content_type("vendor/uplot/LICENSE"),
            "text/plain; charset=utf-8"
        );
    }

    #[test]
    fn etags_differ_per_file_and_match_if_none_match_lists() {
        let (_, a) = find("app.js").unwrap();
        let (_, b) = find("index.html").unwrap();
        assert_ne!(a, b);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"other\", W/{a}")).unwrap(),
        );
        assert!(matches_etag(&headers, a));
        assert!(!matches_etag(&headers, b));
    }

    #[test]
    fn the_policy_admits_the_tile_server_only() {
        assert_eq!(
            tile_origin("https://tiles.example.org:8443/{z}/{x}/{y}.png").as_deref(),
            Some("https://tiles.example.org:8443")
        );
        assert_eq!(tile_origin("/{z}/{x}/{y}.png"), None);
        assert_eq!(
            tile_origin("https://{s}.tile.example.org/{z}/{x}/{y}.png").as_deref(),
            Some("https://*.tile.example.org")
        );
        let csp = |url| {
            content_security_policy(Some(url))
                .to_str()
                .unwrap()
                .to_string()
        };
        assert!(
            csp("http://t.local/{z}/{x}/{y}.png").contains("img-src 'self' data: http://t.local;")
        );
        // A tile origin that cannot be a source is left out; the policy stays.
        for bad in ["http://t.local\n/{z}.png", "http://a;script-src */{z}.png"] {
            let policy = csp(bad);
            assert!(policy.contains("img-src 'self' data: ;"), "{policy}");
            assert!(policy.contains("script-src 'self'"), "{policy}");
        }
    }
}
