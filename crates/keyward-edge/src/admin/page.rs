//! Pagination of the admin lists: `limit` (default 50, at most 500) and an opaque `cursor`
//! (`next_cursor` of the previous page). Lists are ordered by creation time then id, so a
//! cursor names the last item seen and stays valid while items are added or removed.

use base64::Engine as _;
use serde::Serialize;

use crate::problem::Problem;

pub(crate) const DEFAULT_LIMIT: u32 = 50;
pub(crate) const MAX_LIMIT: u32 = 500;

/// A page of a list: `items`, and `next_cursor` when there are more.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next_cursor: Option<String>,
}

pub(crate) fn bad_query(detail: impl Into<String>) -> Problem {
    Problem::bad_request("invalid_query", detail)
}

/// Checks `limit`.
pub(crate) fn limit_of(limit: Option<u32>) -> Result<usize, Problem> {
    let l = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&l) {
        return Err(bad_query(format!("limit must be from 1 to {MAX_LIMIT}")));
    }
    Ok(l as usize)
}

fn encode(at: i64, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{at}:{id}"))
}

fn decode(cursor: &str) -> Result<(i64, String), Problem> {
    let err = || bad_query("cursor: not a cursor returned by this API");
    if cursor.len() > 512 {
        return Err(err());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| err())?;
    let text = String::from_utf8(bytes).map_err(|_| err())?;
    let (at, id) = text.split_once(':').ok_or_else(err)?;
    Ok((at.parse().map_err(|_| err())?, id.to_owned()))
}

/// One page of `items` (already filtered and ordered by `(created_at, id)`).
pub(crate) fn paginate<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> (i64, String),
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<Page<T>, Problem> {
    let limit = limit_of(limit)?;
    let after = cursor.map(decode).transpose()?;
    let mut rest: Vec<T> = match &after {
        Some(c) => items.into_iter().filter(|t| key(t) > *c).collect(),
        None => items,
    };
    let next_cursor = if rest.len() > limit {
        rest.truncate(limit);
        rest.last().map(|t| {
            let (at, id) = key(t);
            encode(at, &id)
        })
    } else {
        None
    };
    Ok(Page {
        items: rest,
        next_cursor,
    })
}

/// Case-insensitive substring search (`q`), at most 128 characters.
pub(crate) fn query_text(q: Option<&str>) -> Result<Option<String>, Problem> {
    match q {
        None => Ok(None),
        Some(q) if q.chars().count() > 128 || q.chars().any(char::is_control) => {
            Err(bad_query("q: at most 128 characters, no control characters"))
        }
        Some(q) => Ok(Some(q.to_lowercase())),
    }
}

pub(crate) fn matches(q: &Option<String>, fields: &[Option<&str>]) -> bool {
    match q {
        None => true,
        Some(q) => fields.iter().flatten().any(|f| f.to_lowercase().contains(q.as_str())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pages_follow_the_cursor_to_the_end() {
        let items: Vec<(i64, String)> = (0..7).map(|i| (i / 2, format!("id{i}"))).collect();
        let mut seen = vec![];
        let mut cursor = None;
        loop {
            let p = paginate(items.clone(), |t| t.clone(), Some(3), cursor.as_deref()).unwrap();
            seen.extend(p.items);
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, items);
        assert!(paginate(items.clone(), |t| t.clone(), Some(0), None).is_err());
        assert!(paginate(items.clone(), |t| t.clone(), Some(501), None).is_err());
        assert!(paginate(items, |t| t.clone(), None, Some("!!")).is_err());
    }
}
