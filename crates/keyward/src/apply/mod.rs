//! `keyward apply -f FILE [--dry-run] [--prune]` and `keyward export` (configuration as code).
//!
//! Both talk to the admin API, like every other management command: `apply` reads the current
//! state (`GET /v1/apps`, `/v1/keys`, `/v1/clients`, `/v1/admin-tokens`, `/v1/webhooks`),
//! compares it with the file ([`plan::plan`]), prints the plan as a diff, and makes each change
//! with one admin call sent with `X-Keyward-Actor: apply` (so the audit log names `apply`), in
//! order: apps, their keys and clients, admin tokens, webhooks, then what `--prune` removes.
//! Whatever the API refuses stops the run at that call; what was applied before it stays, and
//! a second run plans only what is left. The server checks every call as it checks the CLI's
//! and the console's (the same validation, roles and audit), which a direct store access would
//! have bypassed.

use std::io::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::client::AdminClient;
use crate::error::{CliError, Result};

pub mod plan;
pub mod state;

/// How `apply` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub dry_run: bool,
    pub prune: bool,
    pub json: bool,
}

/// Runs `keyward apply`.
pub async fn apply(client: &AdminClient, file: &Path, opts: Options) -> Result<()> {
    let desired = state::read(file)?;
    let current = plan::Current::read(
        client,
        desired.admin_tokens.is_some(),
        plan::Scope::For(&desired, opts.prune),
    )
    .await?;
    let plan = plan::plan(&desired, &current, opts.prune, file)?;
    let name = file.display();
    if !plan.conflicts.is_empty() {
        if opts.json {
            println!("{}", json!({"conflicts": plan.conflicts, "applied": 0}));
        } else {
            for c in &plan.conflicts {
                println!("! {c}");
            }
        }
        return Err(CliError::Api {
            status: 409,
            title: "Conflict".into(),
            detail: format!(
                "{name}: {} conflict{} with the current state; nothing was applied",
                plan.conflicts.len(),
                if plan.conflicts.len() == 1 { "" } else { "s" }
            ),
            code: "apply_conflict".into(),
        });
    }
    let count = |sign: char| plan.steps.iter().filter(|s| s.sign == sign).count();
    let summary = format!(
        "{} to create, {} to change, {} to remove (disable, revoke or delete)",
        count('+'),
        count('~'),
        count('-')
    );
    if opts.json {
        if opts.dry_run || plan.steps.is_empty() {
            println!(
                "{}",
                json!({"plan": plan.steps.iter().map(step_json).collect::<Vec<_>>(), "notes": plan.notes, "applied": 0})
            );
            return Ok(());
        }
    } else {
        for s in &plan.steps {
            println!("{}", s.headline());
            for f in &s.fields {
                println!("    {f}");
            }
        }
        for n in &plan.notes {
            println!("note: {n}");
        }
        if plan.steps.is_empty() {
            println!("No changes: the store matches {name}.");
            return Ok(());
        }
        println!("Plan: {summary}.");
        if opts.dry_run {
            println!("Dry run: nothing was changed.");
            return Ok(());
        }
    }
    let total = plan.steps.len();
    let mut results = Vec::new();
    for (i, s) in plan.steps.iter().enumerate() {
        let outcome = match client.call(s.method.clone(), &s.path, s.body.clone()).await {
            Ok(answer) => {
                report(s, &answer, opts.json, &mut results);
                // Created, then disabled as the file says (its secret was printed above).
                match (s.disable_after, answer.get("id").and_then(Value::as_str)) {
                    (Some(base), Some(id)) => {
                        let path = format!("{base}/{}/disable", crate::client::seg(id));
                        client.call(reqwest::Method::POST, &path, None).await.map(drop)
                    }
                    _ => Ok(()),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            if opts.json {
                println!(
                    "{}",
                    json!({"applied": results, "failed": step_json(s), "error": e.to_string(), "not_applied": total - i})
                );
            } else {
                println!(
                    "stopped at {} {} after {i} of {total} changes: the rest was not applied (what was \
                     applied stays; run apply again to finish)",
                    s.kind, s.label
                );
            }
            return Err(e);
        }
    }
    if opts.json {
        println!("{}", json!({"applied": results, "notes": plan.notes}));
    } else {
        println!("Applied {total} change{}.", if total == 1 { "" } else { "s" });
    }
    Ok(())
}

/// Prints (or collects, for `--json`) what one call did, its secret included once.
fn report(s: &plan::Step, answer: &Value, json_out: bool, results: &mut Vec<Value>) {
    let secret = s.secret.and_then(|k| answer.get(k)).and_then(Value::as_str);
    let id = answer
        .get("id")
        .or_else(|| answer.get("app_id"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if json_out {
        let mut r = step_json(s);
        r["id"] = json!(id);
        if let (Some(k), Some(v)) = (s.secret, secret) {
            r[k] = json!(v);
        }
        results.push(r);
        return;
    }
    let done = match s.sign {
        '+' => "created",
        '~' => "changed",
        _ => "removed",
    };
    let id_part = if id.is_empty() || s.label.contains(id) {
        String::new()
    } else {
        format!(" ({id})")
    };
    match secret {
        Some(v) => println!(
            "{done} {} {}{id_part}: {v}   <- shown once, store it now",
            s.kind, s.label
        ),
        None => println!("{done} {} {}{id_part}", s.kind, s.label),
    }
    let _ = std::io::stdout().flush();
}

fn step_json(s: &plan::Step) -> Value {
    json!({
        "op": match s.sign { '+' => "create", '~' => "change", _ => "remove" },
        "kind": s.kind,
        "name": s.label,
        "action": s.action,
        "fields": s.fields,
    })
}

/// Runs `keyward export`: the current state as a state file.
pub async fn export(client: &AdminClient, out: Option<&Path>, tokens: bool) -> Result<()> {
    let current = plan::Current::read(client, tokens, plan::Scope::All).await?;
    let (file, warnings) = export_state(&current);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let body = toml::to_string_pretty(&file).map_err(|e| CliError::Io(format!("cannot write TOML: {e}")))?;
    let text = format!(
        "# keyward state (keyward export). Apply with: keyward apply -f FILE [--dry-run] [--prune]\n\
         # Never a secret here: keys, client secrets and admin tokens exist only where they were\n\
         # shown once; webhooks name where each node reads their secret.\n\n{body}"
    );
    match out {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(p) => {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts
                .open(p)
                .map_err(|e| CliError::Io(format!("{}: {e}", p.display())))?;
            f.write_all(text.as_bytes())
                .map_err(|e| CliError::Io(format!("{}: {e}", p.display())))?;
            eprintln!("wrote {}", p.display());
            Ok(())
        }
    }
}

fn span<T>(v: T) -> toml::Spanned<T> {
    toml::Spanned::new(0..0, v)
}

fn rate_parts(r: &Option<keyward_core::policy::RateSpec>) -> (Option<state::Rate>, Option<u64>) {
    match r {
        None => (None, None),
        Some(r) => (
            Some(state::Rate(r.to_string())),
            (r.burst != r.count).then_some(r.burst),
        ),
    }
}

fn cidrs(ips: &keyward_core::policy::IpAllowlist) -> Vec<state::Cidr> {
    ips.nets().iter().map(|n| state::Cidr(n.to_string())).collect()
}

fn dur_text(d: std::time::Duration) -> String {
    plan::ms_text(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The current state as a file, and what could not be written (and why).
pub fn export_state(cur: &plan::Current) -> (state::StateFile, Vec<String>) {
    let mut warnings = Vec::new();
    let mut apps = Vec::new();
    for a in &cur.apps {
        let (rate, burst) = rate_parts(&a.policy.rate);
        let rules = &a.policy.key_rules;
        // Keys: the current ones (not revoked, expired or rotated away), by name.
        let current: Vec<&plan::KeyView> = cur
            .keys
            .iter()
            .filter(|k| {
                k.record.app_id == a.id
                    && (k.state == "active" || k.state == "disabled")
                    && k.record.lifecycle.rotated_to.is_none()
            })
            .collect();
        let unnamed = current.iter().filter(|k| k.record.name.is_none()).count();
        let mut names: Vec<&str> = current.iter().filter_map(|k| k.record.name.as_deref()).collect();
        names.sort_unstable();
        let dup = names.windows(2).any(|w| w[0] == w[1]);
        let keys = if unnamed > 0 || dup {
            warnings.push(format!(
                "app {:?}: its keys are left out of the file (not managed by apply) because {}",
                a.name,
                if unnamed > 0 {
                    format!("{unnamed} of them have no name (name them: keyward key update ID --name N)")
                } else {
                    "two of them have the same name".into()
                }
            ));
            None
        } else {
            Some(
                current
                    .iter()
                    .filter_map(|k| {
                        let r = &k.record;
                        let name = state::Name(r.name.clone()?);
                        let (rate, burst) = rate_parts(&r.policy.rate);
                        let kind = r.kind();
                        Some(state::KeyState {
                            name: span(name),
                            scopes: r.scopes.iter().map(|s| state::ScopeText(s.to_string())).collect(),
                            env: (r.env != keyward_core::KeyEnv::Live).then_some(r.env),
                            kind: (kind != keyward_core::KeyKind::Secret).then_some(kind),
                            origins: r
                                .policy
                                .origins
                                .iter()
                                .map(|o| state::OriginText(o.to_string()))
                                .collect(),
                            ips: cidrs(&r.policy.ips),
                            rate,
                            burst,
                            quota: r.policy.quota.map(|q| state::Quota(q.to_string())),
                            require_mtls: r.policy.require_mtls,
                            exchange_only: r.lifecycle.exchange_only,
                            canary: r.lifecycle.canary,
                            legacy: r.lifecycle.legacy,
                            expires: r.expires_at.and_then(|t| {
                                t.format(&time::format_description::well_known::Rfc3339)
                                    .ok()
                                    .map(state::Expiry)
                            }),
                            disabled: (k.state == "disabled").then_some(true),
                        })
                    })
                    .collect(),
            )
        };
        let of_app: Vec<&keyward_core::model::ClientRecord> = cur.clients.iter().filter(|c| c.app_id == a.id).collect();
        let mut cnames: Vec<&str> = of_app.iter().filter_map(|c| c.name.as_deref()).collect();
        cnames.sort_unstable();
        let unnamed = of_app.iter().filter(|c| c.name.is_none()).count();
        let dup = cnames.windows(2).any(|w| w[0] == w[1]);
        let clients: Option<Vec<state::ClientState>> = if unnamed > 0 || dup {
            warnings.push(format!(
                "app {:?}: its clients are left out of the file (not managed by apply) because {}",
                a.name,
                if unnamed > 0 {
                    format!("{unnamed} of them have no name")
                } else {
                    "two of them have the same name".into()
                }
            ));
            None
        } else {
            let mut out = Vec::new();
            let mut ok = true;
            for c in &of_app {
                let jwks = match &c.jwks {
                    None => None,
                    Some(j) => match toml::Table::try_from(j) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            warnings.push(format!(
                                "app {:?}: its clients are left out: the JWK Set of {} cannot be written as TOML ({e})",
                                a.name, c.id
                            ));
                            ok = false;
                            break;
                        }
                    },
                };
                let (rate, burst) = rate_parts(&c.policy.rate);
                let o = &c.options;
                out.push(state::ClientState {
                    name: span(state::Name(c.name.clone().unwrap_or_default())),
                    auth: (c.auth_method != keyward_core::model::ClientAuthMethod::ClientSecretBasic)
                        .then_some(c.auth_method),
                    scopes: c.scopes.iter().map(|s| state::ScopeText(s.to_string())).collect(),
                    jwks,
                    jwks_file: None,
                    cert_file: None,
                    tls_subject_dn: o.tls_client_auth_subject_dn.clone(),
                    tls_san_dns: o.tls_client_auth_san_dns.clone(),
                    tls_san_uri: o.tls_client_auth_san_uri.clone(),
                    tls_san_ip: o.tls_client_auth_san_ip.clone(),
                    tls_san_email: o.tls_client_auth_san_email.clone(),
                    token_ttl: (c.token_ttl != keyward_engine::oauth::DEFAULT_TOKEN_TTL)
                        .then(|| state::Dur(dur_text(std::time::Duration::from_secs(u64::from(c.token_ttl))))),
                    dpop_bound: o.dpop_bound_access_tokens,
                    ips: cidrs(&c.policy.ips),
                    rate,
                    burst,
                    quota: c.policy.quota.map(|q| state::Quota(q.to_string())),
                    disabled: c.disabled_at.is_some().then_some(true),
                });
            }
            ok.then_some(out)
        };
        apps.push(state::AppState {
            name: span(state::Name(a.name.clone())),
            ips: cidrs(&a.policy.ips),
            rate,
            burst,
            quota: a.policy.quota.map(|q| state::Quota(q.to_string())),
            require_mtls: a.policy.require_mtls,
            max_key_lifetime: rules
                .max_lifetime_secs
                .map(|s| state::Dur(dur_text(std::time::Duration::from_secs(s)))),
            require_expiry: rules.require_expiry,
            allowed_kinds: rules.allowed_kinds.clone(),
            keys,
            clients,
        });
    }
    let admin_tokens = cur.tokens.as_ref().map(|ts| {
        ts.iter()
            .filter(|t| t.state == "active")
            .map(|t| state::AdminTokenState {
                name: span(state::Name(t.name.clone())),
                role: if t.role == "write" {
                    state::Role::Write
                } else {
                    state::Role::Read
                },
                expires: None,
            })
            .collect()
    });
    let defaults = keyward_engine::managed_webhooks::WebhookSpec::new("", "");
    let webhooks = cur
        .webhooks
        .iter()
        .map(|w| {
            let spec = keyward_engine::managed_webhooks::WebhookSpec::of(w);
            state::WebhookState {
                name: span(state::Name(w.name.clone())),
                url: w.url.clone(),
                secret_env: w.secret_env.clone().map(state::EnvVar),
                secret_file: w.secret_file.clone(),
                events: (spec.events != defaults.events).then(|| spec.events.clone()),
                timeout: (spec.timeout != defaults.timeout).then(|| state::Dur(dur_text(spec.timeout))),
                max_attempts: (spec.max_attempts != defaults.max_attempts).then_some(spec.max_attempts),
                backoff: (spec.backoff != defaults.backoff).then(|| {
                    state::Dur0(if spec.backoff.is_zero() {
                        "0s".into()
                    } else {
                        dur_text(spec.backoff)
                    })
                }),
            }
        })
        .collect();
    (
        state::StateFile {
            version: state::VERSION,
            apps: Some(apps),
            admin_tokens,
            webhooks: Some(webhooks),
        },
        warnings,
    )
}
