//! `keyward upstream list`: the upstream groups in force (`GET /v1/upstreams`).

use super::*;

pub(super) async fn upstream(cli: &Cli, cmd: &UpstreamCommand) -> Result<()> {
    let c = admin_client(cli)?;
    match cmd {
        UpstreamCommand::List { out } => {
            let v = c.call(Method::GET, "/v1/upstreams", None).await?;
            if out.json {
                print_json(&v);
            } else {
                print_table(
                    &[
                        "GROUP",
                        "BALANCE",
                        "TARGET",
                        "HEALTHY",
                        "EJECTED UNTIL",
                        "FAILS",
                        "IN FLIGHT",
                        "PROTOCOL",
                    ],
                    &rows(&v),
                );
            }
        }
    }
    Ok(())
}

/// One row per target.
fn rows(v: &Value) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for g in items(v) {
        let targets = g.get("targets").and_then(Value::as_array).cloned().unwrap_or_default();
        for t in targets {
            let healthy = match (t.get("healthy").and_then(Value::as_bool), t.get("active_down")) {
                (Some(true), _) => "yes".to_owned(),
                (_, Some(Value::Bool(true))) => "no (active check)".to_owned(),
                (Some(false), _) => "no".to_owned(),
                (None, _) => "-".to_owned(),
            };
            rows.push(vec![
                s(&g, "name"),
                s(&g, "balance"),
                s(&t, "url"),
                healthy,
                s(&t, "ejected_until"),
                s(&t, "recent_fails"),
                s(&t, "in_flight"),
                s(&t, "protocol"),
            ]);
        }
    }
    rows
}
