//! `operator owner-ref`: the ownerReferences that make an object a child of the hook's object.

use crate::commands::event_file::{self, EventFileError};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum OwnerRefError {
    #[error(transparent)]
    EventFile(#[from] EventFileError),
    #[error("the object of EVENT_FILE has no {0}, which an owner reference needs")]
    MissingField(&'static str),
}

impl OwnerRefError {
    /// Run outside a hook: a usage error.
    pub fn is_usage(&self) -> bool {
        matches!(self, OwnerRefError::EventFile(EventFileError::NotInHook))
    }
}

/// Prints the ownerReferences array, one line of JSON.
pub fn run() -> Result<(), OwnerRefError> {
    let refs = owner_references(&event_file::object()?)?;
    println!("{refs}");
    Ok(())
}

/// `[{apiVersion, kind, name, uid, controller: true, blockOwnerDeletion: true}]`:
/// the garbage collector deletes the child with its owner, and a foreground
/// deletion of the owner waits for the child.
pub fn owner_references(object: &Value) -> Result<Value, OwnerRefError> {
    let field = |path: &str, name: &'static str| {
        object.pointer(path).and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or(OwnerRefError::MissingField(name))
    };
    Ok(json!([{
        "apiVersion": field("/apiVersion", "apiVersion")?,
        "kind": field("/kind", "kind")?,
        "name": field("/metadata/name", "metadata.name")?,
        "uid": field("/metadata/uid", "metadata.uid")?,
        "controller": true,
        "blockOwnerDeletion": true,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_names_the_owner_as_controller() {
        let obj = json!({"apiVersion": "zalando.org/v1", "kind": "KopfExample",
            "metadata": {"name": "x", "namespace": "ns", "uid": "u-1"}});
        assert_eq!(
            owner_references(&obj).unwrap(),
            json!([{"apiVersion": "zalando.org/v1", "kind": "KopfExample", "name": "x", "uid": "u-1",
                    "controller": true, "blockOwnerDeletion": true}])
        );
    }

    #[test]
    fn an_object_without_uid_is_refused_naming_the_field() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}});
        assert_eq!(
            owner_references(&obj).unwrap_err().to_string(),
            "the object of EVENT_FILE has no metadata.uid, which an owner reference needs"
        );
    }
}
