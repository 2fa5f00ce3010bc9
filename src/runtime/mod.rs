//! Layer 3: the running operator, from the watch to a hook's exit and back.
//!
//! Owns the watch and its tracker ([`watch`]), the per-object queue ([`queue`]), the
//! durable queue ([`journal`]) and `--record` ([`record`]), batched passes
//! (`sync-all`, `snapshot`: [`batch`]), the delivery of one event ([`deliver`]), the
//! hooks directory and hook processes ([`hooks`]; only `hooks::spawn` starts
//! processes), leader election ([`leader`]), shard membership and ownership
//! (`--shards`: [`shard`]), and what an operator of the operator
//! sees: [`metrics`], the HTTP endpoint ([`listen`]) and the log ([`log`]).
//!
//! May import: [`crate::model`], [`crate::cli`], [`crate::config`], [`crate::cluster`].

pub mod batch;
pub mod deliver;
pub mod hooks;
pub mod journal;
pub mod leader;
pub mod listen;
pub mod log;
pub mod metrics;
pub mod queue;
pub mod record;
pub mod shard;
pub mod watch;
