//! `operator flatten`: reads one watch event on stdin and prints the variables a hook
//! would get for it, in the chosen format.

use crate::cli::FlattenArgs;
use crate::model::flatten::{self, FlattenError};
use crate::model::format::{self, FormatError};
use std::io::Read;

#[derive(Debug, thiserror::Error)]
pub enum FlattenCmdError {
    #[error("cannot read an event from stdin")]
    Stdin(#[source] std::io::Error),
    #[error("the event on stdin is not JSON")]
    EventJson(#[source] serde_json::Error),
    #[error(transparent)]
    Flatten(#[from] FlattenError),
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// The rendered variables; what was left out goes to stderr, one line each.
pub fn run(args: FlattenArgs) -> Result<Vec<u8>, FlattenCmdError> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(FlattenCmdError::Stdin)?;
    let event: serde_json::Value = serde_json::from_str(&text).map_err(FlattenCmdError::EventJson)?;
    let opts = flatten::Options {
        prefix: args.filter.prefix,
        filter_spec: args.filter.filter_spec,
        filter_status: args.filter.filter_status,
    };
    let flat = flatten::flatten(&event, &opts)?;
    for r in &flat.rejected {
        eprintln!("left out {}: {}", r.name, r.reason);
    }
    Ok(format::render(&flat.vars, args.format)?)
}
