//! The query string of a request and the page a list request asks for: one
//! parser, one set of error texts, one offset and one list body, so every
//! list endpoint answers a bad `page` the same way.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::{json, Value as Json};

use crate::db::Row;
use crate::error::ApiError;
use crate::query::Page;

/// A request's query string, parsed once into its pairs in order (a name
/// may repeat). As an extractor it answers 400 `Malformed query string: ...`
/// for a query string that is not form-urlencoded.
#[derive(Debug, Default)]
pub(crate) struct QueryPairs(Vec<(String, String)>);

impl QueryPairs {
    /// Parses a raw query string (`None`: there is none).
    pub(crate) fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        serde_urlencoded::from_str(raw.unwrap_or(""))
            .map(Self)
            .map_err(|e| ApiError::BadRequest(format!("Malformed query string: {e}")))
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` as a positive integer; a 400 that names the
    /// parameter and the value for anything else (0, negative, not a number).
    pub(crate) fn positive(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(ApiError::BadRequest(format!(
                    "'{name}' must be a positive integer, got '{v}'"
                ))),
            },
        }
    }

    /// The page asked for by `page` (default 1) and `results_per_page`
    /// (default `default_per_page`, at most `max_per_page`).
    pub(crate) fn page(&self, default_per_page: u64, max_per_page: u64) -> Result<Page, ApiError> {
        Ok(Page {
            page: self.positive("page")?.unwrap_or(1),
            per_page: self
                .positive("results_per_page")?
                .unwrap_or(default_per_page)
                .min(max_per_page),
        })
    }
}

impl IntoIterator for QueryPairs {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::parse(parts.uri.query())
    }
}

/// The list body of the spec: `{"num_results", "objects", "page", "total_pages"}`.
pub(crate) fn list_body(objects: Vec<Row>, total: i64, page: Page) -> Json {
    json!({
        "num_results": total,
        "objects": objects,
        "page": page.page,
        "total_pages": page.total_pages(total),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(err: ApiError) -> String {
        match err {
            ApiError::BadRequest(m) => m,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn a_page_defaults_and_is_capped() {
        let none = QueryPairs::parse(None).unwrap();
        assert_eq!(
            none.page(10, 100).unwrap(),
            Page {
                page: 1,
                per_page: 10
            }
        );
        let big = QueryPairs::parse(Some("page=3&results_per_page=500")).unwrap();
        assert_eq!(
            big.page(10, 100).unwrap(),
            Page {
                page: 3,
                per_page: 100
            }
        );
    }

    #[test]
    fn bad_paging_values_are_named_in_a_400() {
        for (raw, text) in [
            ("page=0", "'page' must be a positive integer, got '0'"),
            ("page=-1", "'page' must be a positive integer, got '-1'"),
            (
                "results_per_page=x",
                "'results_per_page' must be a positive integer, got 'x'",
            ),
            (
                "page=99999999999999999999999",
                "'page' must be a positive integer, got '99999999999999999999999'",
            ),
        ] {
            let pairs = QueryPairs::parse(Some(raw)).unwrap();
            assert_eq!(message(pairs.page(10, 100).unwrap_err()), text, "{raw}");
        }
    }

    #[test]
    fn a_far_page_is_an_offset_past_the_end_not_an_overflow() {
        let far = Page {
            page: u64::MAX,
            per_page: u64::MAX,
        };
        assert_eq!(far.offset(), i64::MAX as u64);
        let third = Page {
            page: 3,
            per_page: 10,
        };
        assert_eq!(third.offset(), 20);
    }

    #[test]
    fn the_list_body_counts_pages() {
        let page = Page {
            page: 2,
            per_page: 10,
        };
        let body = list_body(Vec::new(), 21, page);
        assert_eq!(
            body,
            json!({"num_results": 21, "objects": [], "page": 2, "total_pages": 3})
        );
        assert_eq!(list_body(Vec::new(), 0, page)["total_pages"], 0);
    }
}
