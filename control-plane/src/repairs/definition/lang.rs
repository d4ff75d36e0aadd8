//! The languages of the API, and user-visible texts given in each of them.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The languages every user-visible text must be given in; the first is
/// the default (spec: "Internationalization").
pub const LANGUAGES: [&str; 2] = ["en", "fr"];

/// A language the API answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English, the default.
    #[default]
    En,
    /// French.
    Fr,
}

impl Lang {
    /// The language code (`"en"`, `"fr"`).
    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Fr => "fr",
        }
    }

    /// The best supported language of an `Accept-Language` header
    /// (`fr-FR,fr;q=0.9,en;q=0.8`); English when none is supported.
    pub fn from_accept_language(header: Option<&str>) -> Self {
        let Some(header) = header else {
            return Self::En;
        };
        let mut best: Option<(f32, Self)> = None;
        for part in header.split(',') {
            let mut pieces = part.split(';');
            let tag = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = pieces
                .find_map(|p| p.trim().strip_prefix("q=").map(str::to_string))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or("");
            let lang = match primary {
                "fr" => Self::Fr,
                "en" => Self::En,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l).unwrap_or_default()
    }
}

/// A user-visible text in every supported language.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Text(pub(super) BTreeMap<String, String>);

impl Text {
    /// The text in `lang` (validation guarantees it exists).
    pub fn get(&self, lang: Lang) -> &str {
        self.0
            .get(lang.code())
            .or_else(|| self.0.get(LANGUAGES[0]))
            .map(String::as_str)
            .unwrap_or_default()
    }
}
