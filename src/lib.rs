//! `operator`: watch one kind of Kubernetes object and run a shell hook for every event.
//!
//! The crate is laid out in layers, each importing only from the layers below it
//! (docs/ARCHITECTURE.md has the map; `tests/layers.rs` fails the build's tests when an
//! import points upward):
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | 4 fronts | [`commands`], [`embed`] | one module per subcommand; the library's closure-as-hook API |
//! | 3 runtime | [`runtime`] | the watch, queues, delivery, hook processes, replicas, metrics, the log |
//! | 2 cluster | [`cluster`] | Kubernetes API calls other than the watch: kinds, Events, finalizers |
//! | 1 settings | [`cli`], [`config`] | the command line as parsed, and the settings validated once |
//! | 0 model | [`model`] | pure types and transforms: no I/O, no async runtime |
//!
//! The binary (src/main.rs) sits on top and only dispatches. The library exists so
//! that benchmarks reach the same code the binary runs, and so that Rust programs can
//! run the watch with a closure as the hook: see [`embed`].

pub mod model;

pub mod cli;
pub mod config;

pub mod cluster;

pub mod runtime;

pub mod commands;
pub mod embed;
