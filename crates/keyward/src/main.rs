#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use keyward::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

// mimalloc instead of glibc malloc: the proxy path allocates and frees many small objects
// (header maps, body chunks, futures) per request; see docs/BENCHMARKS.md for the measurement.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(default: &str) {
    let filter = EnvFilter::try_from_env("KEYWARD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let json = match std::env::var("KEYWARD_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // The request's span (`request_id`) on every line logged while handling it.
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve | Command::CatFacts { .. } => "info",
        _ => "warn",
    };
    init_logging(default_level);
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
    match rt.block_on(keyward::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
