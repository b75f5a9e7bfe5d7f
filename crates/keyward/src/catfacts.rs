//! The built-in cat-facts upstream (`keyward cat-facts`), the API the demo protects.
//!
//! `GET /fact` → a random fact; `GET /facts?limit=N` → up to N facts (1–100, default 10);
//! `POST /facts {"fact": "..."}` → 201 with the stored fact.

use std::sync::{Arc, RwLock};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

const SEED: &[&str] = &[
    "A group of cats is called a clowder.",
    "Cats sleep for around 13 to 16 hours a day.",
    "A cat has 32 muscles in each ear.",
    "Cats can rotate their ears 180 degrees.",
    "A cat's nose print is unique, like a human fingerprint.",
    "Cats have five toes on their front paws but only four on the back.",
    "The oldest known pet cat was found in a 9,500-year-old grave on Cyprus.",
    "A house cat can run at about 48 km/h over short distances.",
    "Cats walk like camels and giraffes: both right feet, then both left feet.",
    "Adult cats meow mostly to talk to humans, not to other cats.",
];

/// Longest fact accepted by `POST /facts`.
pub const MAX_FACT_LEN: usize = 1000;
/// Most facts kept in memory; older added facts are dropped first.
const MAX_FACTS: usize = 10_000;

#[derive(Clone)]
pub struct Facts(Arc<RwLock<Vec<String>>>);

impl Default for Facts {
    fn default() -> Self {
        Facts(Arc::new(RwLock::new(SEED.iter().map(|s| s.to_string()).collect())))
    }
}

pub fn router() -> Router {
    Router::new()
        .route("/fact", get(fact))
        .route("/facts", get(facts).post(add_fact))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(Facts::default())
}

fn error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"error": msg}))).into_response()
}

fn pick(n: usize) -> usize {
    use rand::Rng;
    rand::thread_rng().gen_range(0..n.max(1))
}

async fn fact(State(f): State<Facts>) -> Response {
    let Ok(facts) = f.0.read() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "unavailable");
    };
    match facts.get(pick(facts.len())) {
        Some(fact) => Json(json!({"fact": fact})).into_response(),
        None => error(StatusCode::NOT_FOUND, "no facts"),
    }
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<String>,
}

async fn facts(State(f): State<Facts>, q: Result<Query<Limit>, axum::extract::rejection::QueryRejection>) -> Response {
    let limit = match q.ok().and_then(|Query(l)| l.limit) {
        None => 10,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return error(StatusCode::BAD_REQUEST, "limit must be an integer from 1 to 100"),
        },
    };
    let Ok(facts) = f.0.read() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "unavailable");
    };
    let out: Vec<&String> = facts.iter().take(limit).collect();
    Json(json!({"facts": out})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFact {
    fact: String,
}

async fn add_fact(
    State(f): State<Facts>,
    body: Result<Json<NewFact>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "send {\"fact\": \"...\"} as application/json");
    };
    let fact = body.fact.trim().to_owned();
    if fact.is_empty() || fact.chars().count() > MAX_FACT_LEN {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "a fact is 1 to 1000 characters");
    }
    let Ok(mut facts) = f.0.write() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "unavailable");
    };
    if facts.len() >= MAX_FACTS {
        facts.remove(SEED.len());
    }
    facts.push(fact.clone());
    (StatusCode::CREATED, Json(json!({"fact": fact}))).into_response()
}

/// Serves the cat-facts API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router()).with_graceful_shutdown(shutdown).await
}
