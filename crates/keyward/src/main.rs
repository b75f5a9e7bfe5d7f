#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use keyward::cli::{Cli, Command};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

// mimalloc instead of glibc malloc: the proxy path allocates and frees many small objects
// (header maps, body chunks, futures) per request; see docs/BENCHMARKS.md for the measurement.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Logs on stderr (KEYWARD_LOG filter, KEYWARD_LOG_FORMAT), plus the OpenTelemetry layer when
/// `serve` is configured to export and the `otel` feature is built (without it, `serve` refuses
/// the configuration). Called before the runtime exists. Returns whether the lines are JSON.
fn init_logging(
    default: &str,
    export: Option<keyward::telemetry::Export>,
) -> Result<(Option<keyward::telemetry::Guard>, bool), String> {
    let json = match std::env::var("KEYWARD_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let filter = log_filter(std::env::var("KEYWARD_LOG").ok().as_deref(), default);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = if json {
        // The request's span (`request_id`) on every line logged while handling it.
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(keyward::span_json::SpanJsonFields)
            .with_filter(filter)
            .boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let registry = tracing_subscriber::registry().with(fmt);
    #[cfg(feature = "otel")]
    {
        let (otel, guard) = match export {
            Some(export) => {
                let (layer, guard) = keyward::telemetry::layer(&export)?;
                (Some(layer), Some(guard))
            }
            None => (None, None),
        };
        registry.with(otel).init();
        Ok((guard, json))
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = export;
        registry.init();
        Ok((None, json))
    }
}

/// The log filter: `KEYWARD_LOG` when set and valid, else `default`; then two directives of
/// keyward's own. The listening addresses ([`keyward::LISTENING`]) and a fatal error
/// ([`keyward::EXIT`]) are always logged, whatever the level. PostgreSQL notices (sqlx logs
/// them at INFO: `relation "_sqlx_migrations" already exists, skipping` on every start) are
/// debug material: shown only when the filter asks for `debug` or names sqlx itself.
fn log_filter(env: Option<&str>, default: &str) -> EnvFilter {
    let spec = env.filter(|s| EnvFilter::try_new(s).is_ok()).unwrap_or(default);
    let mut filter = EnvFilter::new(spec);
    let verbose = filter
        .max_level_hint()
        .is_some_and(|l| l >= tracing_subscriber::filter::LevelFilter::DEBUG);
    let mut extra = vec![
        format!("{}=info", keyward::LISTENING),
        format!("{}=error", keyward::EXIT),
    ];
    if !verbose && !spec.contains("sqlx") {
        extra.push("sqlx::postgres::notice=warn".into());
    }
    for d in extra {
        if let Ok(d) = d.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve | Command::CatFacts { .. } => "info",
        _ => "warn",
    };
    // A server's output is its log: with JSON logs, a fatal error is a JSON line too.
    let server = matches!(cli.command, Command::Serve | Command::CatFacts { .. });
    let (guard, json) = match init_logging(default_level, keyward::commands::telemetry_export(&cli)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let threads = keyward::commands::worker_threads(&cli);
    // `serve`: a current-thread runtime; its gateway workers beyond the first run event loops
    // of their own (keyward::server::start). One thread per event loop does the same work
    // without the multi-thread scheduler's bookkeeping (work-stealing queues, cross-thread
    // wake-ups).
    let mut rt = if threads == 1 || matches!(cli.command, Command::Serve) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    rt.enable_all();
    if threads > 1 {
        rt.worker_threads(threads);
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(keyward::run(cli));
    drop(rt);
    // Flush the spans still queued for export.
    if let Some(guard) = guard {
        guard.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if server && json {
                tracing::error!(target: keyward::EXIT, error = %e, "keyward stopped");
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_notices_are_debug_material() {
        let quiet = log_filter(None, "info").to_string();
        assert!(quiet.contains("sqlx::postgres::notice=warn"), "{quiet}");
        assert!(quiet.contains(&format!("{}=info", keyward::LISTENING)), "{quiet}");
        for spec in ["info", "warn", "keyward=info,keyward_edge=info"] {
            let f = log_filter(Some(spec), "info").to_string();
            assert!(f.contains("sqlx::postgres::notice=warn"), "{spec}: {f}");
        }
        for spec in ["debug", "info,keyward_store=debug", "trace", "info,sqlx=info"] {
            let f = log_filter(Some(spec), "info").to_string();
            assert!(!f.contains("sqlx::postgres::notice"), "{spec}: {f}");
        }
        // A filter that does not parse falls back on the default, with the directives.
        let f = log_filter(Some("info,[=bogus"), "warn").to_string();
        assert!(f.contains("warn") && f.contains("sqlx::postgres::notice=warn"), "{f}");
    }
}
