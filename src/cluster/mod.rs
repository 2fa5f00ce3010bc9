//! Layer 2: the Kubernetes API calls the runtime and the commands make, other than
//! the watch itself.
//!
//! Owns resolving `-o TYPE` to a resource ([`resolve`]), posting core/v1 Events
//! ([`report`]) and editing the runner's finalizer ([`finalizer`]). Each call turns an
//! API error into one readable sentence.
//!
//! May import: [`crate::model`], [`crate::config`], [`crate::cli`].

pub mod finalizer;
pub mod report;
pub mod resolve;
