//! --finalizer mode: adds the runner's finalizer to watched objects and removes it once the deleted hook succeeded.

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use serde_json::json;

/// Conflicting writers are retried this many times.
const ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct Finalizers {
    pub client: Client,
    pub resource: ApiResource,
    pub namespaced: bool,
    pub name: String,
}

impl Finalizers {
    /// Adds (`add`) or removes the finalizer on the object `name` in `ns`.
    /// Read-modify-write with the resourceVersion as precondition, so other
    /// finalizers changed meanwhile are never lost.
    pub async fn edit(&self, ns: Option<&str>, name: &str, add: bool) -> Result<(), kube::Error> {
        let api: Api<DynamicObject> = match ns {
            Some(ns) if self.namespaced => Api::namespaced_with(self.client.clone(), ns, &self.resource),
            _ => Api::all_with(self.client.clone(), &self.resource),
        };
        for attempt in 1..=ATTEMPTS {
            let Some(current) = api.get_opt(name).await? else { return Ok(()) };
            let list = current.metadata.finalizers.clone().unwrap_or_default();
            if add && current.metadata.deletion_timestamp.is_some() {
                return Ok(());
            }
            let Some(list) = edited(&list, &self.name, add) else { return Ok(()) };
            let patch = json!({"metadata": {"finalizers": list, "resourceVersion": current.metadata.resource_version}});
            match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < ATTEMPTS => continue,
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                other => return other.map(|_| ()),
            }
        }
        Ok(())
    }
}

/// The finalizer list with `name` added or removed; None when nothing changes.
pub fn edited(current: &[String], name: &str, add: bool) -> Option<Vec<String>> {
    let has = current.iter().any(|f| f == name);
    match (add, has) {
        (true, false) => Some(current.iter().cloned().chain([name.to_string()]).collect()),
        (false, true) => Some(current.iter().filter(|f| *f != name).cloned().collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn adding_keeps_other_finalizers() {
        assert_eq!(edited(&v(&["x/a"]), "op.io/f", true), Some(v(&["x/a", "op.io/f"])));
    }

    #[test]
    fn removing_keeps_other_finalizers() {
        assert_eq!(edited(&v(&["x/a", "op.io/f"]), "op.io/f", false), Some(v(&["x/a"])));
    }

    #[test]
    fn nothing_to_do_is_none() {
        assert_eq!(edited(&v(&["op.io/f"]), "op.io/f", true), None);
        assert_eq!(edited(&v(&[]), "op.io/f", false), None);
    }
}
