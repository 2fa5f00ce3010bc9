//! Layer 0: the pure types and transforms every other layer shares.
//!
//! Owns the watch event ([`event`]), flattening into EVENT_* variables ([`flatten`]),
//! field paths and diffs ([`fields`]), object filters and selectors ([`filter`],
//! [`selector`]), output formats ([`format`]), and the small shared vocabularies: how a
//! hook ended ([`outcome`]), retry timing ([`retry`]), lease timing and naming
//! ([`lease`]), which shard member owns an object and the record it publishes
//! ([`shard`]), and a hook's log-line levels ([`hook_line`]).
//!
//! May import: nothing from this crate outside `model`. No file, network or process
//! I/O and no tokio here, so that everything in it is tested with plain values.

pub mod event;
pub mod fields;
pub mod filter;
pub mod flatten;
pub mod format;
pub mod hook_line;
pub mod lease;
pub mod outcome;
pub mod retry;
pub mod selector;
pub mod shard;
