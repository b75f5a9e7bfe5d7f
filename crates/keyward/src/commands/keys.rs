//! `keyward app …` and `keyward key …`.

use super::*;

pub(super) async fn app(cli: &Cli, cmd: &AppCommand) -> Result<()> {
    let c = admin_client(cli)?;
    match cmd {
        AppCommand::Create {
            name,
            limits,
            mtls,
            rules,
            out,
        } => {
            let mut body = json!({"name": name});
            limits_into(&mut body, limits, None)?;
            mtls_into(&mut body, mtls);
            rules_into(&mut body, rules, false)?;
            let v = c.call(Method::POST, "/v1/apps", Some(body)).await?;
            if out.json {
                print_json(&v);
            } else {
                println!(
                    "created app {} ({}); limits: {}",
                    s(&v, "name"),
                    s(&v, "id"),
                    policy_text(&v)
                );
            }
        }
        AppCommand::Update {
            app,
            limits,
            mtls,
            rules,
            clear,
            out,
        } => {
            let mut body = json!({});
            limits_into(&mut body, limits, Some(clear))?;
            mtls_into(&mut body, mtls);
            rules_into(&mut body, rules, true)?;
            let v = c
                .call(Method::PATCH, &format!("/v1/apps/{}", seg(app)), Some(body))
                .await?;
            if out.json {
                print_json(&v);
            } else {
                println!(
                    "updated app {} ({}); limits: {}",
                    s(&v, "name"),
                    s(&v, "id"),
                    policy_text(&v)
                );
            }
        }
        AppCommand::List { out } => {
            let v = c.call(Method::GET, "/v1/apps", None).await?;
            if out.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = items(&v)
                    .iter()
                    .map(|a| vec![s(a, "id"), s(a, "name"), s(a, "created_at")])
                    .collect();
                print_table(&["ID", "NAME", "CREATED"], &rows);
            }
        }
        AppCommand::Show { app, out } => {
            let v = c.call(Method::GET, &format!("/v1/apps/{}", seg(app)), None).await?;
            if out.json {
                print_json(&v);
            } else {
                for k in ["id", "name", "created_at"] {
                    println!("{k:<12} {}", s(&v, k));
                }
                println!("{:<12} {}", "limits", policy_text(&v));
            }
        }
    }
    Ok(())
}

pub(super) fn print_key(v: &Value) {
    for k in ["id", "app_name", "app_id", "name", "hint", "env", "state"] {
        println!("{:<12} {}", k, s(v, k));
    }
    println!("{:<12} {}", "scopes", scopes(v));
    println!("{:<12} {}", "limits", policy_text(v));
    for k in [
        "expires_at",
        "created_at",
        "revoked_at",
        "disabled_at",
        "rotated_from",
        "rotated_to",
        "last_used_at",
    ] {
        println!("{:<12} {}", k, s(v, k));
    }
    if v.get("canary").and_then(Value::as_bool) == Some(true) {
        println!("{:<12} yes (any use raises a security event)", "canary");
    }
    if let Some(u) = v.get("usage_24h").and_then(Value::as_object) {
        let parts: Vec<String> = u
            .iter()
            .map(|(k, n)| format!("{k}={}", n.as_u64().unwrap_or(0)))
            .collect();
        println!(
            "{:<12} {}",
            "usage 24h",
            if parts.is_empty() { "-".into() } else { parts.join(" ") }
        );
    }
}

pub(super) async fn key(cli: &Cli, cmd: &KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::Create {
            app,
            name,
            scopes: sc,
            expires,
            env,
            canary,
            exchange_only,
            publishable,
            origins,
            limits,
            mtls,
            out,
        } => {
            // Check what can be checked locally first: no request for a bad flag.
            check_scope_flags(sc)?;
            for o in origins {
                keyward_core::policy::Origin::parse(o).map_err(|e| CliError::Usage(format!("--origin: {e}")))?;
            }
            let mut body =
                json!({"app": app, "scopes": sc, "env": env, "canary": canary, "exchange_only": exchange_only});
            if *publishable {
                body["kind"] = json!("publishable");
                body["origins"] = json!(origins);
            }
            limits_into(&mut body, limits, None)?;
            mtls_into(&mut body, mtls);
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(x) = expires {
                let now = time::OffsetDateTime::now_utc();
                let at =
                    keyward_core::when::parse_expiry(x, now).map_err(|e| CliError::Usage(format!("--expires: {e}")))?;
                let at = at
                    .format(&time::format_description::well_known::Rfc3339)
                    .map_err(|e| CliError::Usage(format!("--expires: {e}")))?;
                body["expires_at"] = json!(at);
            }
            let c = admin_client(cli)?;
            let v = c.call(Method::POST, "/v1/keys", Some(body)).await?;
            if out.json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                println!(
                    "created key {} for app {} (scopes: {}; expires: {})",
                    s(&v, "id"),
                    s(&v, "app_name"),
                    scopes(&v),
                    match s(&v, "expires_at").as_str() {
                        "-" => "never".into(),
                        other => other.to_owned(),
                    }
                );
                println!();
                println!("    {}", s(&v, "key"));
                println!();
                println!("Store it now: keyward keeps only a digest and will never show it again.");
            }
        }
        KeyCommand::Update {
            id,
            scopes: sc,
            no_scopes,
            limits,
            mtls,
            clear,
            out,
        } => {
            check_scope_flags(sc)?;
            let mut body = json!({});
            if !sc.is_empty() || *no_scopes {
                body["scopes"] = json!(sc);
            }
            limits_into(&mut body, limits, Some(clear))?;
            mtls_into(&mut body, mtls);
            let c = admin_client(cli)?;
            let v = c
                .call(Method::PATCH, &format!("/v1/keys/{}", seg(id)), Some(body))
                .await?;
            if out.json {
                print_json(&v);
            } else {
                println!(
                    "updated key {} (scopes: {}; limits: {})",
                    s(&v, "id"),
                    scopes(&v),
                    policy_text(&v)
                );
            }
        }
        KeyCommand::Import {
            app,
            name,
            scopes: sc,
            sunset,
            limits,
            out,
        } => {
            check_scope_flags(sc)?;
            let mut body = json!({"app": app, "scopes": sc});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if sunset == "never" {
                body["expires_in"] = json!("never");
            } else {
                let at = instant_flag("--sunset", sunset)?;
                body["expires_at"] = json!(at);
            }
            limits_into(&mut body, limits, None)?;
            let secret = read_secret_stdin()?;
            body["secret"] = json!(secret);
            let c = admin_client(cli)?;
            let v = c.call(Method::POST, "/v1/keys/import", Some(body)).await?;
            if out.json {
                print_json(&v);
            } else {
                println!(
                    "imported legacy key {} for app {} (hint {}; sunset: {})",
                    s(&v, "id"),
                    s(&v, "app_name"),
                    s(&v, "hint"),
                    s(&v, "expires_at")
                );
                println!("Its responses now carry Deprecation and Sunset headers; issue real keys and rotate clients off it.");
            }
        }
        KeyCommand::List { app, out } => {
            let columns = [
                ("ID", "id"),
                ("APP", "app_name"),
                ("NAME", "name"),
                ("HINT", "hint"),
                ("SCOPES", "scopes"),
                ("STATE", "state"),
                ("EXPIRES", "expires_at"),
            ];
            list_by_app(cli, "/v1/keys", app.as_deref(), out.json, &columns).await?;
        }
        KeyCommand::Show { id, out } => {
            let c = admin_client(cli)?;
            let v = c.call(Method::GET, &format!("/v1/keys/{}", seg(id)), None).await?;
            if out.json {
                print_json(&v);
            } else {
                print_key(&v);
            }
        }
        KeyCommand::Revoke { id, reason, out } => {
            let c = admin_client(cli)?;
            let body = reason.as_ref().map(|r| json!({"reason": r}));
            let v = c
                .call(Method::POST, &format!("/v1/keys/{}/revoke", seg(id)), body)
                .await?;
            if out.json {
                print_json(&v);
            } else {
                println!("revoked key {} at {}", s(&v, "id"), s(&v, "revoked_at"));
            }
        }
        KeyCommand::Disable { id, out } | KeyCommand::Enable { id, out } => {
            let verb = if matches!(cmd, KeyCommand::Disable { .. }) {
                "disable"
            } else {
                "enable"
            };
            let c = admin_client(cli)?;
            let v = c
                .call(Method::POST, &format!("/v1/keys/{}/{verb}", seg(id)), None)
                .await?;
            if out.json {
                print_json(&v);
            } else {
                println!("{verb}d key {} (state: {})", s(&v, "id"), s(&v, "state"));
            }
        }
        KeyCommand::Rotate {
            id,
            grace,
            expires,
            no_expiry,
            out,
        } => {
            let g = grace.trim();
            if g.starts_with('-') {
                return Err(CliError::Usage("--grace: the grace period cannot be negative".into()));
            }
            let zero = g.trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0";
            if !zero {
                keyward_core::when::parse_duration(g).map_err(|e| CliError::Usage(format!("--grace: {e}")))?;
            }
            let mut body = json!({"grace": g, "no_expiry": no_expiry});
            if let Some(x) = expires {
                let at = instant_flag("--expires", x)?;
                body["expires_at"] = json!(at);
            }
            let c = admin_client(cli)?;
            let v = c
                .call(Method::POST, &format!("/v1/keys/{}/rotate", seg(id)), Some(body))
                .await?;
            if out.json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                let prev = v.get("previous").cloned().unwrap_or(Value::Null);
                println!(
                    "rotated {} → {} (the old key works until {}; the new one expires: {})",
                    s(&prev, "id"),
                    s(&v, "id"),
                    s(&prev, "expires_at"),
                    match s(&v, "expires_at").as_str() {
                        "-" => "never".into(),
                        other => other.to_owned(),
                    }
                );
                println!();
                println!("    {}", s(&v, "key"));
                println!();
                println!("Store it now: keyward keeps only a digest and will never show it again.");
            }
        }
    }
    Ok(())
}
