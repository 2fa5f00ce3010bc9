//! Leases: their timing and their names, shared by the settings that validate them
//! and the replicas that hold them.

use std::time::Duration;

/// `--lease-duration`, `--renew-deadline` and `--retry-period`, as client-go's leader
/// election names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// `operator-<resource>-<hooks dir name>`, as a valid Lease name: replicas of one
/// deployment agree on it, and a developer's checkout of the same hooks does too.
pub fn default_lease_name(resource: &str, hooks_dir: &std::path::Path) -> String {
    let keep = |dots: bool| move |c: char| if c.is_ascii_alphanumeric() || (dots && c == '.') { c } else { '-' };
    let dir = hooks_dir.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let dir: String = dir.chars().map(keep(false)).collect();
    let resource: String = resource.to_lowercase().chars().map(keep(true)).collect();
    let raw = format!("operator-{resource}-{dir}");
    // Every dot-separated label must start and end with a letter or digit.
    let labels: Vec<&str> = raw.split('.').map(|l| l.trim_matches('-')).filter(|l| !l.is_empty()).collect();
    let mut name = labels.join(".");
    name.truncate(253);
    name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string()
}

/// A Lease name must be a DNS subdomain.
pub fn valid_lease_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_lease_name_is_a_valid_name_from_type_and_hooks_directory() {
        let name = default_lease_name("persistentvolumeclaims", std::path::Path::new("/src/My Hooks/pvc_v2/"));
        assert_eq!(name, "operator-persistentvolumeclaims-pvc-v2");
        assert!(valid_lease_name(&name));
        for (resource, dir) in
            [("evcs.example.com", "/hooks/"), ("pods", "/tmp/.tmpAbC"), ("pods", "my.hooks-"), ("x", "/")]
        {
            let name = default_lease_name(resource, std::path::Path::new(dir));
            assert!(valid_lease_name(&name), "{resource} {dir}: {name}");
        }
        assert_eq!(default_lease_name("pods", std::path::Path::new("/tmp/.tmpAbC")), "operator-pods--tmpabc");
    }

    #[test]
    fn lease_names_must_be_dns_subdomains() {
        assert!(valid_lease_name("a.b-c"));
        assert!(!valid_lease_name("Upper"));
        assert!(!valid_lease_name("-a"));
        assert!(!valid_lease_name("a..b"));
        assert!(!valid_lease_name(""));
    }
}
