//! A small client of the admin API, used by the management commands.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::error::{CliError, Result};

pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
    /// Sent as `X-Keyward-Actor` (a tool naming itself in the audit log, e.g. `apply`).
    actor: Option<&'static str>,
}

impl AdminClient {
    pub fn new(base: &str, token: &str) -> Result<AdminClient> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "the admin URL {base:?} must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::Io(e.to_string()))?;
        Ok(AdminClient {
            base,
            token: token.to_owned(),
            http,
            actor: None,
        })
    }

    /// The same client, its changes audited as made by `tool` (`X-Keyward-Actor`).
    pub fn as_tool(mut self, tool: &'static str) -> AdminClient {
        self.actor = Some(tool);
        self
    }

    /// One call; a paginated list (`GET` answering `next_cursor`, without an explicit `limit`;
    /// the audit log pages on its own) is followed to its end and returned as one `items` array.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let get = method == Method::GET && !path.contains("limit=") && !path.starts_with("/v1/audit");
        let mut v = self.call_once(method, path, body).await?;
        if !get {
            return Ok(v);
        }
        let mut pages = 0;
        while let Some(cursor) = v.get("next_cursor").and_then(Value::as_str).map(str::to_owned) {
            pages += 1;
            if pages > 10_000 {
                break;
            }
            let sep = if path.contains('?') { '&' } else { '?' };
            let next = self
                .call_once(
                    Method::GET,
                    &format!("{path}{sep}limit=500&cursor={}", seg(&cursor)),
                    None,
                )
                .await?;
            let more = next.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
            if let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) {
                items.extend(more);
            }
            v["next_cursor"] = next.get("next_cursor").cloned().unwrap_or(Value::Null);
        }
        if let Some(o) = v.as_object_mut() {
            o.remove("next_cursor");
        }
        Ok(v)
    }

    async fn call_once(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(a) = self.actor {
            req = req.header("x-keyward-actor", a);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| CliError::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| CliError::Io(e.to_string()))?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Err(CliError::Api {
            status: status.as_u16(),
            title: s("title").unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
            detail: s("detail").unwrap_or_else(|| match status {
                StatusCode::UNAUTHORIZED => "check KEYWARD_ADMIN_TOKEN".into(),
                _ => "the admin API refused the request".into(),
            }),
            code: s("code").unwrap_or_else(|| "http_error".into()),
        })
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Percent-encodes a path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prints rows as an aligned table.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}
