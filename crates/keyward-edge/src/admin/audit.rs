//! The audit log and usage counters.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use keyward_core::model::{AuditEvent, AuditFilter, UsageRow};
use keyward_core::when::{parse_duration, parse_instant};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{engine_err, AdminState};
use crate::problem::Problem;
use crate::strict::StrictQuery;

/// `since` as a duration back from now (`24h`) or an RFC 3339 instant.
fn parse_since(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, Problem> {
    let t = s.trim();
    if t.len() >= 10 && t.as_bytes().get(4) == Some(&b'-') {
        return parse_instant(t).map_err(|e| Problem::bad_request("invalid_query", format!("since: {e}")));
    }
    let d = parse_duration(t).map_err(|e| Problem::bad_request("invalid_query", format!("since: {e}")))?;
    now.checked_sub(d)
        .ok_or_else(|| Problem::bad_request("invalid_query", "since: too far back"))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// A duration back from now (`24h`) or an RFC 3339 instant.
    since: Option<String>,
    /// The object concerned (a key, app, client or admin token id).
    key: Option<String>,
    /// Same as `key`.
    target: Option<String>,
    /// Exact kind (`key.revoked`) or a prefix ending in `.` (`security.`).
    kind: Option<String>,
    /// Only events older than this sequence number (paging).
    before: Option<i64>,
    /// `next_cursor` of the previous page (same as `before`).
    cursor: Option<String>,
    /// Page size: 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize)]
pub(crate) struct AuditPage {
    items: Vec<AuditEvent>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<i64>,
    /// Pass as `cursor` to get the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

pub(crate) async fn list_audit(
    State(st): State<Arc<AdminState>>,
    StrictQuery(q): StrictQuery<AuditQuery>,
) -> Result<Json<AuditPage>, Problem> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::bad_request("invalid_query", "limit must be from 1 to 1000"));
    }
    if let Some(k) = &q.kind {
        if k.is_empty() || k.len() > 64 || !k.bytes().all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_') {
            return Err(Problem::bad_request(
                "invalid_query",
                "kind: lowercase letters, '.' and '_' only",
            ));
        }
    }
    let since = q
        .since
        .as_deref()
        .map(|s| parse_since(s, st.engine.now()))
        .transpose()?;
    let filter = AuditFilter {
        since,
        target: q.key.or(q.target),
        kind: q.kind,
        before_seq: match (&q.before, q.cursor.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(Problem::bad_request("invalid_query", "give before or cursor, not both"));
            }
            (Some(b), None) => Some(*b),
            (None, Some(c)) => Some(
                c.parse::<i64>()
                    .map_err(|_| Problem::bad_request("invalid_query", "cursor: not a cursor returned by this API"))?,
            ),
            (None, None) => None,
        },
        limit,
    };
    let items = st.engine.list_audit(&filter).await.map_err(engine_err)?;
    let next_before = if items.len() == limit as usize {
        items.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Json(AuditPage {
        items,
        next_before,
        next_cursor: next_before.map(|b| b.to_string()),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageQuery {
    /// Only this key (id).
    key: Option<String>,
    /// Only the keys of this app (id or name).
    app: Option<String>,
    /// A duration back from now (`24h`, the default) or an RFC 3339 instant.
    since: Option<String>,
    /// Width of the `series` buckets: `minute` (default) or `hour`.
    bucket: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct UsageReport {
    since: String,
    /// Totals per outcome over the whole period.
    totals: BTreeMap<String, u64>,
    /// Per-minute rows (key, minute start, outcome, count).
    items: Vec<UsageItem>,
    /// `minute` or `hour`.
    #[schema(value_type = String)]
    bucket: &'static str,
    /// Counts by outcome per bucket (oldest first; buckets without requests are absent).
    series: Vec<UsagePoint>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct UsagePoint {
    /// Start of the bucket (RFC 3339).
    start: String,
    counts: BTreeMap<String, u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct UsageItem {
    key_id: String,
    app_id: String,
    /// Start of the minute (RFC 3339).
    minute: String,
    outcome: String,
    count: u64,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub(crate) async fn usage(
    State(st): State<Arc<AdminState>>,
    StrictQuery(q): StrictQuery<UsageQuery>,
) -> Result<Json<UsageReport>, Problem> {
    let (bucket, width) = match q.bucket.as_deref() {
        None | Some("minute") => ("minute", 1),
        Some("hour") => ("hour", 60),
        Some(_) => return Err(Problem::bad_request("invalid_query", "bucket: minute or hour")),
    };
    let now = st.engine.now();
    let since = parse_since(q.since.as_deref().unwrap_or("24h"), now)?;
    let app_id = match &q.app {
        Some(a) => Some(st.engine.get_app(a).await.map_err(engine_err)?.id),
        None => None,
    };
    if let Some(k) = &q.key {
        st.engine.get_key(k).await.map_err(engine_err)?;
    }
    // Counts still in memory are written first, so the report is current.
    st.engine.flush_usage().await.map_err(engine_err)?;
    let rows: Vec<UsageRow> = st
        .engine
        .store()
        .usage(
            q.key.as_deref(),
            app_id.as_deref(),
            since.unix_timestamp().div_euclid(60),
        )
        .await
        .map_err(|e| crate::problem::store(&e))?;
    let mut totals = BTreeMap::new();
    let mut buckets: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
    for r in &rows {
        *totals.entry(r.outcome.clone()).or_insert(0) += r.count;
        *buckets
            .entry(r.minute.div_euclid(width) * width)
            .or_default()
            .entry(r.outcome.clone())
            .or_insert(0) += r.count;
    }
    let series = buckets
        .into_iter()
        .map(|(m, counts)| UsagePoint {
            start: OffsetDateTime::from_unix_timestamp(m.saturating_mul(60))
                .map(rfc3339)
                .unwrap_or_default(),
            counts,
        })
        .collect();
    let items = rows
        .into_iter()
        .map(|r| UsageItem {
            key_id: r.key_id,
            app_id: r.app_id,
            minute: OffsetDateTime::from_unix_timestamp(r.minute * 60)
                .map(rfc3339)
                .unwrap_or_default(),
            outcome: r.outcome,
            count: r.count,
        })
        .collect();
    Ok(Json(UsageReport {
        since: rfc3339(since),
        totals,
        items,
        bucket,
        series,
    }))
}
