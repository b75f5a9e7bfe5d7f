use thiserror::Error;

/// The store layer's error enum; `code()` is stable.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached or refused the operation. The message never contains
    /// query parameters (no digests, no names).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store holds a record it cannot read: {0}")]
    Corrupt(String),
    #[error("the store could not be opened: {0}")]
    Open(String),
}

impl StoreError {
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not_found",
            StoreError::Conflict(_) => "conflict",
            StoreError::Unavailable(_) => "store_unavailable",
            StoreError::Corrupt(_) => "store_corrupt",
            StoreError::Open(_) => "store_open_failed",
        }
    }

    /// Maps a driver error without copying anything user-supplied into the message.
    pub(crate) fn from_sqlx(e: sqlx::Error) -> StoreError {
        match &e {
            sqlx::Error::Database(db) => {
                if db.is_unique_violation() {
                    StoreError::Conflict("an object with the same unique value exists".into())
                } else if db.is_foreign_key_violation() {
                    StoreError::NotFound("referenced object")
                } else {
                    StoreError::Unavailable(format!("database error {}", db.code().unwrap_or_default()))
                }
            }
            sqlx::Error::RowNotFound => StoreError::NotFound("row"),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
                StoreError::Corrupt("a column could not be decoded".into())
            }
            sqlx::Error::PoolTimedOut => StoreError::Unavailable("timed out waiting for a connection".into()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}
