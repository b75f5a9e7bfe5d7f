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
/// the configuration). Called before the runtime exists.
fn init_logging(
    default: &str,
    export: Option<keyward::telemetry::Export>,
) -> Result<Option<keyward::telemetry::Guard>, String> {
    let filter = EnvFilter::try_from_env("KEYWARD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let json = match std::env::var("KEYWARD_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = if json {
        // The request's span (`request_id`) on every line logged while handling it.
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
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
        Ok(guard)
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = export;
        registry.init();
        Ok(None)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve | Command::CatFacts { .. } => "info",
        _ => "warn",
    };
    let guard = match init_logging(default_level, keyward::commands::telemetry_export(&cli)) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let threads = keyward::commands::worker_threads(&cli);
    // One worker: a current-thread runtime does the same work without the multi-thread
    // scheduler's bookkeeping (work-stealing queues, cross-thread wake-ups).
    let mut rt = if threads == 1 {
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
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
