//! `operator`: watch one kind of Kubernetes object and run a shell hook for every event.
//!
//! The binary (src/main.rs) is a thin shell over these modules; the library exists so
//! that benchmarks reach the same code the binary runs, and so that Rust programs can
//! run the watch with a closure as the hook: see [`embed`].

pub mod batch;
pub mod cli;
pub mod completions;
pub mod config;
pub mod deliver;
pub mod embed;
pub mod event;
pub mod event_cmd;
pub mod event_file;
pub mod fields;
pub mod filter;
pub mod finalizer;
pub mod flatten;
pub mod format;
pub mod hooks;
pub mod journal;
pub mod leader;
pub mod listen;
pub mod log;
pub mod malloc;
pub mod metrics;
pub mod owner_ref;
pub mod queue;
pub mod record;
pub mod replay;
pub mod report;
pub mod resolve;
pub mod run;
pub mod selector;
pub mod watch;
