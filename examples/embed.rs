//! Watches ConfigMaps with a Rust closure as the hook: the library's embedding API.
//!
//!   cargo run --example embed -- [NAMESPACE]     (all namespaces without one)
//!
//! Prints one line per event on stdout (`ADDED ns/name (N keys)`); the runner's own
//! log goes to stderr (RUST_LOG adds library lines). Stops on Ctrl-C or SIGTERM.

use operator::config::LogLevel;
use operator::embed::{Event, Runner};
use std::convert::Infallible;
use std::process::ExitCode;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> ExitCode {
    let filter = match operator::runtime::log::filter(LogLevel::Info, std::env::var("RUST_LOG").ok().as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runner = match std::env::args().nth(1) {
        Some(ns) => Runner::new("configmaps").namespace(ns),
        None => Runner::new("configmaps").all_namespaces(),
    };
    let stop = runner.stop_token();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        stop.cancel();
    });
    let hook = |event: Event| async move {
        println!("{} {} ({} keys)", event.kind.as_str(), event.key, event.data_len("data"));
        Ok::<(), Infallible>(())
    };
    match runner.run(hook).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
