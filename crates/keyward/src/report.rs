//! `keyward usage` and `keyward audit`: tables, and a sparkline on a terminal.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use reqwest::Method;
use serde_json::Value;

use crate::client::{print_table, seg, AdminClient};
use crate::error::{CliError, Result};

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A sparkline of `values` (one symbol each).
pub fn sparkline(values: &[u64]) -> String {
    let max = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|&v| {
            if max == 0 || v == 0 {
                ' '
            } else {
                let i = ((v - 1) * 8 / max) as usize;
                BARS[i.min(7)]
            }
        })
        .collect()
}

fn q(s: &str) -> String {
    seg(s)
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("-").to_owned()
}

pub async fn usage(c: &AdminClient, key: &Option<String>, app: &Option<String>, since: &str, json: bool) -> Result<()> {
    let mut path = format!("/v1/usage?since={}", q(since));
    if let Some(k) = key {
        path.push_str(&format!("&key={}", q(k)));
    }
    if let Some(a) = app {
        path.push_str(&format!("&app={}", q(a)));
    }
    let v = c.call(Method::GET, &path, None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let items = v.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    // Hourly buckets by outcome.
    let mut by_hour: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut outcomes: Vec<String> = Vec::new();
    for it in &items {
        let minute = str_of(it, "minute");
        let hour = format!("{}:00", minute.get(..13).unwrap_or(&minute));
        let outcome = str_of(it, "outcome");
        if !outcomes.contains(&outcome) {
            outcomes.push(outcome.clone());
        }
        *by_hour.entry(hour).or_default().entry(outcome).or_insert(0) +=
            it.get("count").and_then(Value::as_u64).unwrap_or(0);
    }
    outcomes.sort();
    let totals = v.get("totals").and_then(Value::as_object).cloned().unwrap_or_default();
    println!("usage since {}", str_of(&v, "since"));
    if items.is_empty() {
        println!("no requests recorded");
        return Ok(());
    }
    let mut headers = vec!["HOUR (UTC)"];
    headers.extend(outcomes.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = by_hour
        .iter()
        .map(|(h, m)| {
            let mut r = vec![h.replace('T', " ")];
            r.extend(outcomes.iter().map(|o| m.get(o).copied().unwrap_or(0).to_string()));
            r
        })
        .collect();
    print_table(&headers, &rows);
    let total_line: Vec<String> = totals
        .iter()
        .map(|(k, n)| format!("{k}={}", n.as_u64().unwrap_or(0)))
        .collect();
    println!("total: {}", total_line.join(" "));
    if std::io::stdout().is_terminal() {
        let series: Vec<u64> = by_hour.values().map(|m| m.values().sum()).collect();
        println!("requests per hour: {}", sparkline(&series));
    }
    Ok(())
}

pub async fn audit(
    c: &AdminClient,
    since: Option<&str>,
    key: Option<&str>,
    kind: Option<&str>,
    limit: u32,
    json: bool,
) -> Result<()> {
    if !(1..=1000).contains(&limit) {
        return Err(CliError::Usage("--limit: from 1 to 1000".into()));
    }
    let mut path = format!("/v1/audit?limit={limit}");
    for (k, v) in [("since", since), ("key", key), ("kind", kind)] {
        if let Some(v) = v {
            path.push_str(&format!("&{k}={}", q(v)));
        }
    }
    let v = c.call(Method::GET, &path, None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let items = v.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|e| {
            vec![
                e.get("seq").map(Value::to_string).unwrap_or_default(),
                str_of(e, "at"),
                str_of(e, "severity"),
                str_of(e, "kind"),
                str_of(e, "actor"),
                str_of(e, "target"),
                str_of(e, "source_ip"),
            ]
        })
        .collect();
    print_table(&["SEQ", "AT", "SEVERITY", "KIND", "ACTOR", "TARGET", "SOURCE"], &rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sparkline_scales_to_the_maximum() {
        assert_eq!(super::sparkline(&[0, 1, 7, 14]), " ▁▄█");
        assert_eq!(super::sparkline(&[]), "");
        assert_eq!(super::sparkline(&[0, 0]), "  ");
    }
}
