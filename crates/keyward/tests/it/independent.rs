//! The token service seen by clients keyward did not write (issue 5, point 9): the `oauth2`
//! crate here, and authlib + PyJWT in `tests/python`, driven by `python_clients`.
//!
//! The Python part runs when `KEYWARD_TEST_PYTHON` names an interpreter with the packages of
//! `tests/python/requirements.txt` (`.ci/run` makes one in a virtual environment). Unset, the
//! test says it is skipped and passes; set, a missing interpreter, a missing package or a
//! failing Python test fails it.

use std::path::PathBuf;
use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenType};
use oauth2::{AuthType, ClientId, ClientSecret, RequestTokenError, Scope, TokenResponse, TokenUrl};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

/// keyward with the token service, its `/fact` and `/facts` routes in front of the real
/// cat-facts upstream (so that a token buys an actual fact).
async fn boot_oauth() -> Kw {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let facts = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(keyward::catfacts::serve(l, std::future::pending()));
    boot_with(move |c| {
        c.oauth.enabled = true;
        for r in c.routes.iter_mut() {
            r.tokens = true;
            if r.path_prefix.starts_with("/fact") {
                r.upstream = facts.clone();
            }
        }
    })
    .await
}

/// Creates a client of the app `cats` through the admin API; returns (client_id, client_secret).
async fn client(kw: &Kw, body: Value) -> (String, String) {
    kw.admin(Method::POST, "/v1/apps", Some(json!({"name": "cats"}))).await;
    let mut b = json!({"app": "cats", "scopes": ["facts:read", "facts:write"]});
    if let Value::Object(m) = body {
        for (k, v) in m {
            b[k] = v;
        }
    }
    let (s, v) = kw.admin(Method::POST, "/v1/clients", Some(b)).await;
    assert_eq!(s, 201, "{v}");
    (
        v["client_id"].as_str().unwrap().to_owned(),
        v["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// The HTTP client the `oauth2` crate documents: no redirects (SSRF).
fn oauth_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn oauth2_crate_client_credentials() {
    let kw = boot_oauth().await;
    let http = oauth_http();
    let token_url = TokenUrl::new(format!("{}/oauth/token", kw.gw)).unwrap();

    // client_secret_basic (the crate's default).
    let (id, secret) = client(&kw, json!({"name": "basic", "token_ttl": "2m"})).await;
    let basic = BasicClient::new(ClientId::new(id.clone()))
        .set_client_secret(ClientSecret::new(secret.clone()))
        .set_token_uri(token_url.clone())
        .set_auth_type(AuthType::BasicAuth);
    let t = basic
        .exchange_client_credentials()
        .add_scope(Scope::new("facts:read".into()))
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(*t.token_type(), BasicTokenType::Bearer);
    assert_eq!(t.expires_in(), Some(Duration::from_secs(120)));
    assert_eq!(t.scopes(), Some(&vec![Scope::new("facts:read".into())]));
    assert!(t.refresh_token().is_none());
    let r = kw
        .http
        .get(format!("{}/fact", kw.gw))
        .bearer_auth(t.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["fact"].is_string(), "{v}");

    // No scope asked: every scope the client may have, parsed as a list.
    let t = basic.exchange_client_credentials().request_async(&http).await.unwrap();
    let mut scopes: Vec<String> = t.scopes().unwrap().iter().map(|s| s.to_string()).collect();
    scopes.sort();
    assert_eq!(scopes, ["facts:read", "facts:write"]);

    // invalid_scope reaches the crate as its standard error type.
    match basic
        .exchange_client_credentials()
        .add_scope(Scope::new("admin".into()))
        .request_async(&http)
        .await
    {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidScope, "{e:?}");
        }
        other => panic!("expected invalid_scope, got {other:?}"),
    }
    // A wrong secret: invalid_client.
    let wrong = BasicClient::new(ClientId::new(id.clone()))
        .set_client_secret(ClientSecret::new("wrong".into()))
        .set_token_uri(token_url.clone());
    match wrong.exchange_client_credentials().request_async(&http).await {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidClient, "{e:?}");
        }
        other => panic!("expected invalid_client, got {other:?}"),
    }

    // client_secret_post: the crate puts client_id and client_secret in the body.
    let (pid, psecret) = client(
        &kw,
        json!({"name": "post", "auth_method": "client_secret_post", "scopes": ["facts:read"]}),
    )
    .await;
    let post = BasicClient::new(ClientId::new(pid))
        .set_client_secret(ClientSecret::new(psecret))
        .set_token_uri(token_url.clone())
        .set_auth_type(AuthType::RequestBody);
    let t = post
        .exchange_client_credentials()
        .add_scope(Scope::new("facts:read".into()))
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(*t.token_type(), BasicTokenType::Bearer);
    assert_eq!(t.expires_in(), Some(Duration::from_secs(300)), "the default lifetime");
    assert_eq!(t.scopes(), Some(&vec![Scope::new("facts:read".into())]));
    let r = kw
        .http
        .get(format!("{}/fact", kw.gw))
        .bearer_auth(t.access_token().secret())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The same client through Basic: one method per client, so invalid_client.
    let (pid2, psecret2) = client(&kw, json!({"name": "post2", "auth_method": "client_secret_post"})).await;
    let as_basic = BasicClient::new(ClientId::new(pid2))
        .set_client_secret(ClientSecret::new(psecret2))
        .set_token_uri(token_url);
    match as_basic.exchange_client_credentials().request_async(&http).await {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidClient, "{e:?}");
        }
        other => panic!("expected invalid_client, got {other:?}"),
    }
}

/// The workspace root (`tests/python` lives there).
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn python_clients() {
    let Some(python) = std::env::var_os("KEYWARD_TEST_PYTHON").filter(|p| !p.is_empty()) else {
        eprintln!(
            "independent::python_clients skipped: set KEYWARD_TEST_PYTHON to a Python with \
             tests/python/requirements.txt installed (.ci/run does)"
        );
        return;
    };
    let kw = boot_oauth().await;
    let (id, secret) = client(&kw, json!({"name": "py-basic", "scopes": ["facts:read"]})).await;
    let (pid, psecret) = client(
        &kw,
        json!({"name": "py-post", "auth_method": "client_secret_post", "scopes": ["facts:read"]}),
    )
    .await;
    let root = workspace_root();
    let mut cmd = tokio::process::Command::new(&python);
    let args = [
        "-m",
        "pytest",
        "-q",
        "--tb=short",
        "-p",
        "no:cacheprovider",
        "tests/python",
    ];
    cmd.args(args)
        .current_dir(&root)
        .env("KEYWARD_GATEWAY", &kw.gw)
        .env("KEYWARD_CLIENT_ID", &id)
        .env("KEYWARD_CLIENT_SECRET", &secret)
        .env("KEYWARD_POST_CLIENT_ID", &pid)
        .env("KEYWARD_POST_CLIENT_SECRET", &psecret)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    // The server runs on this test's runtime: wait for Python without blocking it.
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("pytest took longer than 120 s")
        .unwrap_or_else(|e| panic!("cannot run KEYWARD_TEST_PYTHON={python:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pytest failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(stdout.contains(" passed"), "pytest ran no test:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
}
