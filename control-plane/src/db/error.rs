//! Database failures, classified by the constraint that refused a write.

/// Database failures, classified so the HTTP layer can answer 400 for the
/// client's mistakes and 500 only for the server's.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A unique constraint rejected the write.
    #[error("{}", field_message("must be unique; the value is already used", .field))]
    Unique { field: Option<String> },
    /// A foreign key rejected the write (missing target, or still referenced).
    #[error("{}", field_message("refers to a row that does not exist, or the row is still referenced", .field))]
    ForeignKey { field: Option<String> },
    /// A not-null constraint rejected the write.
    #[error("{}", field_message("may not be null", .field))]
    NotNull { field: Option<String> },
    /// A check constraint (an `options` list) rejected the write.
    #[error("{}", field_message("has a value outside its allowed options", .field))]
    Check { field: Option<String> },
    /// PostgreSQL refused a text value (it cannot store the NUL character).
    #[error("{}", field_message("contains a character that cannot be stored (NUL)", .field))]
    Text { field: Option<String> },
    /// Anything else: connection loss, bad SQL. Logged, answered with 500.
    #[error("database error: {0}")]
    Other(#[from] sqlx::Error),
    /// A migration failed to apply.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL is not usable.
    #[error("bad database URL '{url}': {reason}")]
    Url { url: String, reason: String },
}

fn field_message(what: &str, field: &Option<String>) -> String {
    match field {
        Some(f) => format!("field '{f}' {what}"),
        None => format!("a field {what}"),
    }
}

impl DbError {
    /// `true` when the error is the client's doing (a constraint violation).
    pub fn is_constraint(&self) -> bool {
        matches!(
            self,
            Self::Unique { .. }
                | Self::ForeignKey { .. }
                | Self::NotNull { .. }
                | Self::Check { .. }
                | Self::Text { .. }
        )
    }

    pub(super) fn classify(err: sqlx::Error) -> Self {
        let sqlx::Error::Database(db) = &err else {
            return Self::Other(err);
        };
        let message = db.message().to_string();
        if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            let from_detail = || {
                // "Key (username)=(bob) already exists."
                pg.detail()
                    .and_then(|d| d.strip_prefix("Key ("))
                    .and_then(|d| d.split(')').next())
                    .map(str::to_string)
            };
            let column = pg.column().map(str::to_string).or_else(from_detail);
            return match pg.code() {
                "23505" => Self::Unique { field: column },
                "23503" => Self::ForeignKey { field: column },
                "23502" => Self::NotNull { field: column },
                "23514" => Self::Check {
                    field: column.or_else(|| check_column(&message)),
                },
                // character_not_in_repertoire: a NUL in a bound string.
                "22021" => Self::Text { field: column },
                _ => Self::Other(err),
            };
        }
        // SQLite: "UNIQUE constraint failed: user.username"
        let column_after = |prefix: &str| {
            message
                .strip_prefix(prefix)
                .and_then(|rest| rest.split(',').next())
                .and_then(|c| c.trim().rsplit('.').next())
                .map(str::to_string)
        };
        if message.starts_with("UNIQUE constraint failed") {
            Self::Unique {
                field: column_after("UNIQUE constraint failed: "),
            }
        } else if message.starts_with("NOT NULL constraint failed") {
            Self::NotNull {
                field: column_after("NOT NULL constraint failed: "),
            }
        } else if message.starts_with("FOREIGN KEY constraint failed") {
            Self::ForeignKey { field: None }
        } else if message.starts_with("CHECK constraint failed") {
            Self::Check {
                field: check_column(&message),
            }
        } else {
            Self::Other(err)
        }
    }
}

/// Finds the quoted column name in a CHECK failure message.
fn check_column(message: &str) -> Option<String> {
    let start = message.find('"')? + 1;
    let end = start + message[start..].find('"')?;
    Some(message[start..end].to_string())
}
