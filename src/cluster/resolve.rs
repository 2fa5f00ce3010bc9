//! Resolves the -o TYPE the way kubectl does: plural, singular, short name or Kind, optionally group-qualified.

use kube::Client;
use kube::core::{ApiResource, GroupVersionKind};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the server doesn't have a resource type \"{0}\"")]
    UnknownType(String),
    #[error("resource type \"{0}\" cannot be listed and watched")]
    NotWatchable(String),
    #[error("API discovery failed")]
    Discovery(#[source] kube::Error),
}

/// One resource of the API server's discovery documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub short_names: Vec<String>,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

/// The resource to watch.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// Asks the API server for every resource, retrying while it cannot be reached.
pub async fn resolve(client: &Client, query: &str) -> Result<Resolved, ResolveError> {
    let candidates = with_retry(|| discover(client)).await?;
    let found = pick(&candidates, query).ok_or_else(|| ResolveError::UnknownType(query.to_string()))?;
    if !["list", "watch"].iter().all(|v| found.verbs.iter().any(|x| x == v)) {
        return Err(ResolveError::NotWatchable(query.to_string()));
    }
    let gvk = GroupVersionKind::gvk(&found.group, &found.version, &found.kind);
    Ok(Resolved { resource: ApiResource::from_gvk_with_plural(&gvk, &found.plural), namespaced: found.namespaced })
}

/// kubectl's order: short names first, then plural and singular names, then Kind;
/// within each, the core group first, then groups in the server's order.
pub fn pick<'a>(candidates: &'a [Candidate], query: &str) -> Option<&'a Candidate> {
    let q = query.to_ascii_lowercase();
    let forms: [fn(&Candidate) -> Vec<String>; 3] = [
        |c| c.short_names.iter().map(|s| s.to_ascii_lowercase()).collect(),
        |c| vec![c.plural.to_ascii_lowercase(), c.singular.to_ascii_lowercase()],
        |c| vec![c.kind.to_ascii_lowercase()],
    ];
    forms.iter().find_map(|names| candidates.iter().find(|c| names(c).iter().any(|name| matches(c, name, &q))))
}

fn matches(c: &Candidate, name: &str, q: &str) -> bool {
    q == name
        || q == format!("{name}.{}", c.group)
        || q == format!("{name}.{}.{}", c.version, c.group)
        || (c.group.is_empty() && q == format!("{name}.{}", c.version))
}

async fn with_retry<T, F, Fut>(mut attempt: F) -> Result<T, ResolveError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(500);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if is_connection_error(&e) => {
                tracing::warn!("cannot reach the API server ({e}); retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(ResolveError::Discovery(e)),
        }
    }
}

/// Errors worth waiting out: the server is not there (yet), or is overloaded.
pub fn is_connection_error(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

async fn discover(client: &Client) -> Result<Vec<Candidate>, kube::Error> {
    let mut out = Vec::new();
    for version in client.list_core_api_versions().await?.versions {
        let list = client.list_core_api_resources(&version).await?;
        out.extend(candidates("", &version, list));
    }
    for group in client.list_api_groups().await?.groups {
        let preferred = group.preferred_version.as_ref().map(|v| v.version.clone());
        let mut versions: Vec<_> = group.versions.iter().map(|v| v.version.clone()).collect();
        versions.sort_by_key(|v| Some(v) != preferred.as_ref());
        for version in versions {
            let list = client.list_api_group_resources(&format!("{}/{version}", group.name)).await?;
            out.extend(candidates(&group.name, &version, list));
        }
    }
    Ok(out)
}

fn candidates(
    group: &str,
    version: &str,
    list: k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList,
) -> impl Iterator<Item = Candidate> {
    let (group, version) = (group.to_string(), version.to_string());
    list.resources.into_iter().filter(|r| !r.name.contains('/')).map(move |r| Candidate {
        group: group.clone(),
        version: version.clone(),
        singular: if r.singular_name.is_empty() { r.kind.to_ascii_lowercase() } else { r.singular_name },
        plural: r.name,
        kind: r.kind,
        short_names: r.short_names.unwrap_or_default(),
        namespaced: r.namespaced,
        verbs: r.verbs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(group: &str, plural: &str, kind: &str, shorts: &[&str]) -> Candidate {
        Candidate {
            group: group.into(),
            version: "v1".into(),
            plural: plural.into(),
            singular: kind.to_ascii_lowercase(),
            kind: kind.into(),
            short_names: shorts.iter().map(|s| s.to_string()).collect(),
            namespaced: true,
            verbs: vec!["list".into(), "watch".into()],
        }
    }

    fn table() -> Vec<Candidate> {
        vec![
            c("", "pods", "Pod", &["po"]),
            c("", "persistentvolumeclaims", "PersistentVolumeClaim", &["pvc"]),
            c("", "events", "Event", &["ev"]),
            c("apps", "deployments", "Deployment", &["deploy"]),
            c("events.k8s.io", "events", "Event", &["ev"]),
            c("zalando.org", "ephemeralvolumeclaims", "EphemeralVolumeClaim", &["evc", "evcs"]),
        ]
    }

    fn plural_of(q: &str) -> Option<String> {
        pick(&table(), q).map(|c| format!("{}.{}", c.plural, c.group))
    }

    #[test]
    fn plural_singular_short_and_kind_resolve() {
        for q in ["pods", "pod", "po", "Pod", "PODS"] {
            assert_eq!(plural_of(q).as_deref(), Some("pods."), "{q}");
        }
    }

    #[test]
    fn short_names_of_custom_resources_resolve() {
        assert_eq!(plural_of("evc").as_deref(), Some("ephemeralvolumeclaims.zalando.org"));
        assert_eq!(plural_of("pvc").as_deref(), Some("persistentvolumeclaims."));
    }

    #[test]
    fn group_qualified_names_resolve() {
        assert_eq!(plural_of("deployments.apps").as_deref(), Some("deployments.apps"));
        assert_eq!(plural_of("deployments.v1.apps").as_deref(), Some("deployments.apps"));
        assert_eq!(
            plural_of("ephemeralvolumeclaims.zalando.org").as_deref(),
            Some("ephemeralvolumeclaims.zalando.org")
        );
    }

    #[test]
    fn the_core_group_wins_a_shared_name() {
        assert_eq!(plural_of("events").as_deref(), Some("events."));
        assert_eq!(plural_of("events.events.k8s.io").as_deref(), Some("events.events.k8s.io"));
    }

    #[test]
    fn unknown_names_resolve_to_nothing() {
        assert_eq!(plural_of("frobnicators"), None);
        assert_eq!(plural_of("pods.apps"), None);
    }
}
