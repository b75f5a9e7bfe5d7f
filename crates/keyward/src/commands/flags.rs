//! Flag checks, request bodies from flags, and printing helpers shared by the management
//! commands.

use super::*;

/// Checks `--scope` values locally (a clear error and exit status 2, no request).
pub(super) fn check_scope_flags(scopes: &[String]) -> Result<()> {
    for scope in scopes {
        keyward_core::Scope::new(scope).map_err(|e| CliError::Usage(format!("--scope: {e}")))?;
    }
    Ok(())
}

/// An expiry flag (`90d` or RFC 3339, in the future) as an RFC 3339 instant.
pub(super) fn instant_flag(flag: &str, value: &str) -> Result<String> {
    let at = keyward_core::when::parse_expiry(value, time::OffsetDateTime::now_utc())
        .map_err(|e| CliError::Usage(format!("{flag}: {e}")))?;
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| CliError::Usage(format!("{flag}: {e}")))
}

/// Reads a secret from standard input: one line, trailing newline removed.
pub(super) fn read_secret_stdin() -> Result<String> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("paste the secret, then press Enter and Ctrl-D:");
    }
    let mut buf = String::new();
    stdin
        .lock()
        .take(64 * 1024)
        .read_to_string(&mut buf)
        .map_err(|e| CliError::Usage(format!("cannot read the secret from standard input: {e}")))?;
    let secret = buf.trim().to_owned();
    if secret.is_empty() {
        return Err(CliError::Usage(
            "no secret on standard input (e.g. `keyward key import --app X < secret.txt`)".into(),
        ));
    }
    if secret.contains('\n') {
        return Err(CliError::Usage(
            "standard input holds more than one line; import one secret at a time".into(),
        ));
    }
    if !keyward_engine::admin::plausible_legacy(&secret) {
        return Err(CliError::Usage(format!(
            "a legacy secret is {} to {} visible ASCII characters",
            keyward_engine::admin::LEGACY_MIN_LEN,
            keyward_engine::admin::LEGACY_MAX_LEN
        )));
    }
    Ok(secret)
}

/// Checks limit flags locally (a clear error and exit status 2, no request) and adds them to
/// a request body.
pub(super) fn limits_into(body: &mut Value, l: &LimitFlags, clear: Option<&ClearFlags>) -> Result<()> {
    use keyward_core::policy::{IpAllowlist, QuotaSpec, RateSpec};
    let usage = |flag: &str, e: keyward_core::CoreError| CliError::Usage(format!("{flag}: {e}"));
    if !l.ips.is_empty() {
        IpAllowlist::parse(&l.ips).map_err(|e| usage("--ip", e))?;
        body["ips"] = json!(l.ips);
    }
    if let Some(r) = &l.rate {
        RateSpec::parse(r, l.burst).map_err(|e| usage("--rate", e))?;
        body["rate"] = json!({"limit": r, "burst": l.burst});
    }
    if let Some(q) = &l.quota {
        QuotaSpec::parse(q).map_err(|e| usage("--quota", e))?;
        body["quota"] = json!(q);
    }
    if let Some(c) = clear {
        if c.no_ips {
            body["ips"] = json!([]);
        }
        if c.no_rate {
            body["rate"] = Value::Null;
        }
        if c.no_quota {
            body["quota"] = Value::Null;
        }
    }
    Ok(())
}

pub(super) fn rules_into(body: &mut Value, r: &crate::cli::KeyRuleFlags, update: bool) -> Result<()> {
    match r.max_key_lifetime.as_deref() {
        None => {}
        Some("none") if update => body["max_key_lifetime"] = Value::Null,
        Some(d) => {
            keyward_core::when::parse_duration(d).map_err(|e| CliError::Usage(format!("--max-key-lifetime: {e}")))?;
            body["max_key_lifetime"] = json!(d);
        }
    }
    if r.require_expiry {
        body["require_expiry"] = json!(true);
    } else if r.no_require_expiry {
        body["require_expiry"] = json!(false);
    }
    if !r.allowed_kinds.is_empty() {
        body["allowed_kinds"] = json!(r.allowed_kinds);
    }
    Ok(())
}

pub(super) fn mtls_into(body: &mut Value, m: &crate::cli::MtlsFlags) {
    if m.require_mtls {
        body["require_mtls"] = json!(true);
    } else if m.no_require_mtls {
        body["require_mtls"] = json!(false);
    }
}

pub(super) fn policy_text(v: &Value) -> String {
    let p = v.get("policy").cloned().unwrap_or(Value::Null);
    let mut parts = Vec::new();
    if let Some(ips) = p.get("ips").and_then(Value::as_array) {
        let list: Vec<&str> = ips.iter().filter_map(Value::as_str).collect();
        parts.push(format!("ips {}", list.join(",")));
    }
    if let Some(r) = p.get("rate") {
        parts.push(format!("rate {} burst {}", s(r, "limit"), s(r, "burst")));
    }
    if let Some(q) = p.get("quota").and_then(Value::as_str) {
        parts.push(format!("quota {q}"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

pub(super) fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

pub(super) fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

pub(super) fn scopes(v: &Value) -> String {
    let list: Vec<String> = v
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(" ")
    }
}

pub(super) fn items(v: &Value) -> Vec<Value> {
    v.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
}

/// `keyward key list` and `client list`: `GET base` (with `?app=` when given), printed as JSON
/// or as a table of `(header, field)` columns (`scopes` joined with spaces).
pub(super) async fn list_by_app(
    cli: &Cli,
    base: &str,
    app: Option<&str>,
    json: bool,
    columns: &[(&str, &str)],
) -> Result<()> {
    let c = admin_client(cli)?;
    let path = match app {
        Some(a) => format!("{base}?app={}", seg(a)),
        None => base.to_owned(),
    };
    let v = c.call(Method::GET, &path, None).await?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items(&v)
        .iter()
        .map(|k| {
            columns
                .iter()
                .map(|(_, f)| if *f == "scopes" { scopes(k) } else { s(k, f) })
                .collect()
        })
        .collect();
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    print_table(&headers, &rows);
    Ok(())
}
