//! The audit log and usage counters.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::Json;
use keyward_core::model::{AuditEvent, AuditFilter, UsageRow};
use keyward_core::when::{parse_duration, parse_instant};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{engine_err, AdminState};
use crate::problem::Problem;

/// `since` as a duration back from now (`24h`) or an RFC 3339 instant.
fn parse_since(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime, Problem> {
    let t = s.trim();
    if t.len() >= 10 && t.as_bytes().get(4) == Some(&b'-') {
        return parse_instant(t).map_err(|e| Problem::bad_request("invalid_query", format!("since: {e}")));
    }
    let d = parse_duration(t).map_err(|e| Problem::bad_request("invalid_query", format!("since: {e}")))?;
    Ok(now - d)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    since: Option<String>,
    /// The object concerned (a key or app id).
    key: Option<String>,
    target: Option<String>,
    /// Exact kind (`key.revoked`) or a prefix ending in `.` (`security.`).
    kind: Option<String>,
    /// Only events older than this sequence number (paging).
    before: Option<i64>,
    limit: Option<u32>,
}

#[derive(Serialize)]
pub(crate) struct AuditPage {
    items: Vec<AuditEvent>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<i64>,
}

pub(crate) async fn list_audit(
    State(st): State<Arc<AdminState>>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, Problem> {
    let Query(q) = q.map_err(|e| Problem::bad_request("invalid_query", e.body_text()))?;
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
        before_seq: q.before,
        limit,
    };
    let items = st.engine.list_audit(&filter).await.map_err(engine_err)?;
    let next_before = if items.len() == limit as usize {
        items.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_before }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    key: Option<String>,
    app: Option<String>,
    /// Default `24h`.
    since: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct UsageReport {
    since: String,
    /// Totals per outcome over the whole period.
    totals: BTreeMap<String, u64>,
    /// Per-minute rows (key, minute start, outcome, count).
    items: Vec<UsageItem>,
}

#[derive(Serialize)]
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
    q: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsageReport>, Problem> {
    let Query(q) = q.map_err(|e| Problem::bad_request("invalid_query", e.body_text()))?;
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
    for r in &rows {
        *totals.entry(r.outcome.clone()).or_insert(0) += r.count;
    }
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
    }))
}
