//! `operator`: parses the command line, runs, and maps every error to one exit status.

use clap::Parser;
use operator::commands::{completions, event as event_cmd, flatten, owner_ref, replay, run};
use operator::runtime::log;
use operator::{cli, config};
use std::io::Write;
use std::process::ExitCode;

/// Every way the program can end, and its exit status, in one place.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Log(#[from] log::LogError),
    #[error(transparent)]
    Run(#[from] run::RunError),
    #[error(transparent)]
    Flatten(#[from] flatten::FlattenCmdError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Event(#[from] event_cmd::EventCmdError),
    #[error(transparent)]
    OwnerRef(#[from] owner_ref::OwnerRefError),
    #[error(transparent)]
    Replay(#[from] replay::ReplayError),
    #[error("cannot write to stdout")]
    Stdout(#[source] std::io::Error),
}

impl Error {
    fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            Error::Event(e) if e.is_usage() => 2,
            Error::OwnerRef(e) if e.is_usage() => 2,
            Error::Replay(e) => e.exit_code(),
            _ => 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        Some(cli::Command::Flatten(args)) => flatten::run(args).map_err(Error::from).and_then(|out| stdout(&out)),
        Some(cli::Command::Event(args)) => event_cmd::run(args).map_err(Error::from),
        Some(cli::Command::OwnerRef) => owner_ref::run().map_err(Error::from),
        Some(cli::Command::Replay(args)) => match replay::replay(*args) {
            Ok(status) => return ExitCode::from(status),
            Err(e) => Err(Error::from(e)),
        },
        Some(cli::Command::Completions(args)) => stdout(&completions::completions(args.shell)),
        Some(cli::Command::Man) => completions::man_page().map_err(Error::Stdout).and_then(|page| stdout(&page)),
        None => config::Config::from_args(cli.run).map_err(Error::from).and_then(start),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            if e.exit_code() == 2 {
                eprintln!("\nFor more information, try '--help'.");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs, then runs; the log guard lives until the runtime is done, so nothing is lost.
fn start(cfg: config::Config) -> Result<(), Error> {
    let guard = log::init(&cfg.log)?;
    let runtime = tokio::runtime::Runtime::new().map_err(Error::Runtime)?;
    let result = runtime.block_on(run::run(cfg)).map_err(Error::from);
    if let Err(e) = &result {
        tracing::error!("{}", chain(e));
    }
    drop(runtime);
    drop(guard);
    result
}

fn stdout(bytes: &[u8]) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush()).map_err(Error::Stdout)
}

/// The error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
