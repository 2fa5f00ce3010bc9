//! `operator`: watch one kind of Kubernetes object and run a shell hook for every event.
//!
//! The binary (src/main.rs) is a thin shell over these modules; the library exists so
//! that benchmarks reach the same code the binary runs.

pub mod batch;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod finalizer;
pub mod flatten;
pub mod hooks;
pub mod journal;
pub mod log;
pub mod queue;
pub mod report;
pub mod resolve;
pub mod run;
pub mod watch;
