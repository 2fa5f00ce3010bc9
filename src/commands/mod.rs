//! Layer 4: one module per subcommand; main.rs dispatches to them and hands them the
//! one validated [`crate::config::Config`] where they run the watch.
//!
//! [`run`] is the default command (the watch and its hooks), [`replay`] runs recorded
//! events through the same delivery, [`flatten`] prints an event's variables,
//! [`event`] and [`owner_ref`] are the helpers hooks call (both read the hook's object
//! through [`event_file`]), [`completions`] prints shell completions and the man page.
//!
//! May import: every layer below ([`crate::model`], [`crate::cli`], [`crate::config`],
//! [`crate::cluster`], [`crate::runtime`]); never another front such as [`crate::embed`].

pub mod completions;
pub mod event;
pub mod event_file;
pub mod flatten;
pub mod owner_ref;
pub mod replay;
pub mod run;
