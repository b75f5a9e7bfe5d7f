//! `keyward client …`, `keyward signing-key …` and `keyward admin-token …`.

use super::*;

pub(super) fn print_client(v: &Value) {
    for k in [
        "client_id",
        "app_name",
        "app_id",
        "name",
        "auth_method",
        "state",
        "token_ttl",
        "created_at",
        "disabled_at",
    ] {
        println!("{k:<12} {}", s(v, k));
    }
    println!("{:<12} {}", "scopes", scopes(v));
    println!("{:<12} {}", "limits", policy_text(v));
    if let Some(secrets) = v.get("secrets").and_then(Value::as_array) {
        for sec in secrets {
            println!(
                "{:<12} {} (expires: {})",
                "secret",
                s(sec, "hint"),
                s(sec, "expires_at")
            );
        }
    }
}

/// A JWK Set holding the public key of a PEM certificate, with the certificate as `x5c`
/// (RFC 8705 §2.2: self-signed client certificates are registered in the client's JWKS).
pub(crate) fn jwks_of_certificate(f: &std::path::Path) -> Result<Value> {
    use base64::Engine as _;
    use rustls_pki_types::pem::PemObject;
    let bad = |m: String| CliError::Usage(format!("--cert-file {}: {m}", f.display()));
    let der = rustls_pki_types::CertificateDer::from_pem_file(f).map_err(|e| bad(e.to_string()))?;
    let cert = keyward_token::ClientCert::parse(der.as_ref()).map_err(|e| bad(e.to_string()))?;
    let jwk = cert
        .public_key
        .ok_or_else(|| bad("the certificate's key type is not one JOSE knows (EC, Ed25519, RSA)".into()))?;
    let mut jwk = serde_json::to_value(jwk).map_err(|e| bad(e.to_string()))?;
    jwk["x5c"] = json!([base64::engine::general_purpose::STANDARD.encode(der.as_ref())]);
    Ok(json!({"keys": [jwk]}))
}

pub(super) async fn client(cli: &Cli, cmd: &ClientCommand) -> Result<()> {
    match cmd {
        ClientCommand::Create {
            app,
            name,
            scopes: sc,
            auth,
            jwks_file,
            cert_file,
            tls_subject_dn,
            tls_san_dns,
            tls_san_uri,
            tls_san_ip,
            tls_san_email,
            token_ttl,
            dpop_bound,
            limits,
            out,
        } => {
            check_scope_flags(sc)?;
            let mut body = json!({"app": app, "scopes": sc, "auth_method": auth, "token_ttl": token_ttl,
                                  "dpop_bound_access_tokens": dpop_bound});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            let keyed = matches!(auth.as_str(), "private_key_jwt" | "self_signed_tls_client_auth");
            match (keyed, jwks_file, cert_file) {
                (true, Some(f), _) => {
                    let text = std::fs::read_to_string(f)
                        .map_err(|e| CliError::Usage(format!("--jwks-file {}: {e}", f.display())))?;
                    let jwks: Value = serde_json::from_str(&text)
                        .map_err(|e| CliError::Usage(format!("--jwks-file {}: not JSON: {e}", f.display())))?;
                    keyward_engine::oauth::validate_jwks(&jwks)
                        .map_err(|e| CliError::Usage(format!("--jwks-file: {e}")))?;
                    body["jwks"] = jwks;
                }
                (true, None, Some(f)) if auth == "self_signed_tls_client_auth" => {
                    body["jwks"] = jwks_of_certificate(f)?;
                }
                (true, None, _) => {
                    return Err(CliError::Usage(format!(
                        "--auth {auth} needs --jwks-file{}",
                        if auth == "self_signed_tls_client_auth" {
                            " or --cert-file"
                        } else {
                            ""
                        }
                    )));
                }
                (false, Some(_), _) | (false, _, Some(_)) => {
                    return Err(CliError::Usage(
                        "--jwks-file goes with --auth private_key_jwt or self_signed_tls_client_auth, \
                         --cert-file with self_signed_tls_client_auth"
                            .into(),
                    ))
                }
                (false, None, None) => {}
            }
            let names = [
                ("tls_client_auth_subject_dn", tls_subject_dn),
                ("tls_client_auth_san_dns", tls_san_dns),
                ("tls_client_auth_san_uri", tls_san_uri),
                ("tls_client_auth_san_ip", tls_san_ip),
                ("tls_client_auth_san_email", tls_san_email),
            ];
            let given: Vec<_> = names.iter().filter_map(|(k, v)| v.as_ref().map(|v| (*k, v))).collect();
            match (auth.as_str(), given.as_slice()) {
                ("tls_client_auth", [(k, v)]) => body[*k] = json!(v),
                ("tls_client_auth", _) => {
                    return Err(CliError::Usage(
                        "--auth tls_client_auth needs one of --tls-subject-dn, --tls-san-dns, --tls-san-uri, \
                         --tls-san-ip, --tls-san-email"
                            .into(),
                    ))
                }
                (_, []) => {}
                (_, _) => {
                    return Err(CliError::Usage(
                        "--tls-subject-dn and --tls-san-* go with --auth tls_client_auth".into(),
                    ))
                }
            }
            limits_into(&mut body, limits, None)?;
            let c = admin_client(cli)?;
            let v = c.call(Method::POST, "/v1/clients", Some(body)).await?;
            if out.json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                println!(
                    "created client {} for app {} ({})",
                    s(&v, "client_id"),
                    s(&v, "app_name"),
                    s(&v, "auth_method")
                );
                if let Some(secret) = v.get("client_secret").and_then(Value::as_str) {
                    println!();
                    println!("    client_id:     {}", s(&v, "client_id"));
                    println!("    client_secret: {secret}");
                    println!();
                    println!("Store the secret now: keyward keeps only a digest and will never show it again.");
                }
            }
        }
        ClientCommand::List { app, out } => {
            let columns = [
                ("CLIENT_ID", "client_id"),
                ("APP", "app_name"),
                ("NAME", "name"),
                ("AUTH", "auth_method"),
                ("SCOPES", "scopes"),
                ("STATE", "state"),
            ];
            list_by_app(cli, "/v1/clients", app.as_deref(), out.json, &columns).await?;
        }
        ClientCommand::Show { id, out } | ClientCommand::Disable { id, out } | ClientCommand::Enable { id, out } => {
            let c = admin_client(cli)?;
            let (method, path) = match cmd {
                ClientCommand::Disable { .. } => (Method::POST, format!("/v1/clients/{}/disable", seg(id))),
                ClientCommand::Enable { .. } => (Method::POST, format!("/v1/clients/{}/enable", seg(id))),
                _ => (Method::GET, format!("/v1/clients/{}", seg(id))),
            };
            let v = c.call(method, &path, None).await?;
            if out.json {
                print_json(&v);
            } else {
                print_client(&v);
            }
        }
        ClientCommand::Delete { id } => {
            let c = admin_client(cli)?;
            c.call(Method::DELETE, &format!("/v1/clients/{}", seg(id)), None)
                .await?;
            println!("deleted client {id}");
        }
        ClientCommand::RotateSecret { id, grace, out } => {
            let g = grace.trim();
            if g.starts_with('-') {
                return Err(CliError::Usage("--grace: the grace period cannot be negative".into()));
            }
            let c = admin_client(cli)?;
            let v = c
                .call(
                    Method::POST,
                    &format!("/v1/clients/{}/rotate-secret", seg(id)),
                    Some(json!({"grace": g})),
                )
                .await?;
            if out.json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                println!(
                    "new secret for client {} (the previous one keeps working for {g}):",
                    s(&v, "client_id")
                );
                println!();
                println!("    client_secret: {}", s(&v, "client_secret"));
                println!();
                println!("Store it now: keyward keeps only a digest and will never show it again.");
            }
        }
    }
    Ok(())
}

pub(super) async fn signing_key(cli: &Cli, cmd: &SigningKeyCommand) -> Result<()> {
    let c = admin_client(cli)?;
    match cmd {
        SigningKeyCommand::List { out } => {
            let v = c.call(Method::GET, "/v1/signing-keys", None).await?;
            if out.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = items(&v)
                    .iter()
                    .map(|k| {
                        vec![
                            s(k, "kid"),
                            s(k, "alg"),
                            s(k, "state"),
                            s(k, "active_at"),
                            s(k, "remove_after"),
                        ]
                    })
                    .collect();
                print_table(&["KID", "ALG", "STATE", "SIGNS FROM", "LEAVES JWKS"], &rows);
            }
        }
        SigningKeyCommand::Rotate { alg, out } => {
            let body = alg.as_ref().map(|a| json!({"alg": a}));
            let v = c.call(Method::POST, "/v1/signing-keys/rotate", body).await?;
            if out.json {
                print_json(&v);
            } else {
                println!(
                    "new signing key {} ({}), published now, signing from {}",
                    s(&v, "kid"),
                    s(&v, "alg"),
                    s(&v, "active_at")
                );
            }
        }
        SigningKeyCommand::Retire { kid } => {
            c.call(Method::POST, &format!("/v1/signing-keys/{}/retire", seg(kid)), None)
                .await?;
            println!("retired signing key {kid}; it stays in the JWKS until its last token has expired");
        }
    }
    Ok(())
}

pub(super) async fn admin_token(cli: &Cli, cmd: &AdminTokenCommand) -> Result<()> {
    let c = admin_client(cli)?;
    match cmd {
        AdminTokenCommand::Create {
            name,
            role,
            expires,
            out,
        } => {
            let mut body = json!({"name": name, "role": role});
            if let Some(e) = expires {
                body["expires_in"] = json!(e);
            }
            let v = c.call(Method::POST, "/v1/admin-tokens", Some(body)).await?;
            if out.json {
                print_json(&v);
            } else {
                println!("{}", s(&v, "token"));
                eprintln!(
                    "admin token {} ({}, role {}): shown once, store it now",
                    s(&v, "id"),
                    s(&v, "name"),
                    s(&v, "role")
                );
            }
        }
        AdminTokenCommand::List { out } => {
            let v = c.call(Method::GET, "/v1/admin-tokens", None).await?;
            if out.json {
                print_json(&v);
            } else {
                let rows: Vec<Vec<String>> = items(&v)
                    .iter()
                    .map(|t| {
                        vec![
                            s(t, "id"),
                            s(t, "name"),
                            s(t, "role"),
                            s(t, "hint"),
                            s(t, "state"),
                            s(t, "expires_at"),
                        ]
                    })
                    .collect();
                print_table(&["ID", "NAME", "ROLE", "HINT", "STATE", "EXPIRES"], &rows);
            }
        }
        AdminTokenCommand::Revoke { id } => {
            let v = c
                .call(Method::POST, &format!("/v1/admin-tokens/{}/revoke", seg(id)), None)
                .await?;
            println!("revoked admin token {} ({})", s(&v, "id"), s(&v, "name"));
        }
    }
    Ok(())
}
