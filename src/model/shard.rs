//! Sharding (`--shards`): which member owns an object, and the record each member
//! publishes in its membership Lease.
//!
//! Ownership is rendezvous (highest-random-weight) hashing: every member scores every
//! object key and the highest score owns it. Adding or removing one member moves only
//! the objects that member wins or held (about 1/N), and every member computes the same
//! answer from the same member list, with no coordination. The hash is fixed (FNV-1a
//! with a 64-bit finaliser), never std's per-process `RandomState`, so members in
//! different processes agree; [`HASH_VERSION`] names it, and members with another
//! version refuse to share a group.

/// The version of the ownership function; bumped whenever [`owner`] would answer
/// differently for the same members and key.
pub const HASH_VERSION: u32 = 1;

/// The annotation of a membership Lease that holds its [`Record`] as JSON.
pub const RECORD_ANNOTATION: &str = "operator-sh/shard";
/// The label that names a membership Lease's group (the value of `--lease-name`).
pub const GROUP_LABEL: &str = "operator-sh/shard-group";

/// What a member publishes: the hashing version, and the member list under which it
/// runs hooks now. Publishing a view promises that no hook runs on this member for
/// an object the view gives to another member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub version: u32,
    pub view: Vec<String>,
}

/// A membership Lease's record as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Member(Record),
    /// Written by a member with another hashing version.
    Incompatible(u32),
    /// Missing or unreadable; the reason.
    Garbage(String),
}

impl Record {
    pub fn new(view: Vec<String>) -> Record {
        Record { version: HASH_VERSION, view }
    }

    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the annotation's text; the version is read first so that a future
    /// record of another shape is reported as a version, not as garbage.
    pub fn parse(text: Option<&str>) -> Parsed {
        let Some(text) = text else { return Parsed::Garbage(format!("no {RECORD_ANNOTATION} annotation")) };
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return Parsed::Garbage(format!("{RECORD_ANNOTATION} is not JSON: {e}")),
        };
        match value.get("version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(HASH_VERSION) => {}
            Some(v) => return Parsed::Incompatible(u32::try_from(v).unwrap_or(u32::MAX)),
            None => return Parsed::Garbage(format!("{RECORD_ANNOTATION} has no numeric version")),
        }
        match serde_json::from_value::<Record>(value) {
            Ok(r) => Parsed::Member(r),
            Err(e) => Parsed::Garbage(format!("{RECORD_ANNOTATION}: {e}")),
        }
    }
}

/// FNV-1a, 64 bits: small, fixed, the same in every process.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator no key or identity contains, so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: FNV's low bits depend mostly on the last bytes, and
/// rendezvous compares whole scores, so they are mixed.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The score of `member` for `key`.
pub fn weight(member: &str, key: &str) -> u64 {
    mix(fnv1a(&[member.as_bytes(), key.as_bytes()]))
}

/// The member that owns `key` among `members`: the highest score, ties to the
/// smaller identity. None when there are no members.
pub fn owner<'a, S: AsRef<str>>(members: &'a [S], key: &str) -> Option<&'a str> {
    members.iter().map(AsRef::as_ref).max_by(|a, b| weight(a, key).cmp(&weight(b, key)).then_with(|| b.cmp(a)))
}

/// Whether `me` owns `key` among `members`.
pub fn owns<S: AsRef<str>>(members: &[S], me: &str, key: &str) -> bool {
    owner(members, key) == Some(me)
}

/// A short, stable, name-safe digest of an identity, for the member's Lease name.
pub fn identity_hash(identity: &str) -> String {
    format!("{:08x}", mix(fnv1a(&[identity.as_bytes()])) as u32)
}

/// `<group>-<identity hash>`, kept within a Lease name's 253 characters.
pub fn member_lease_name(group: &str, identity: &str) -> String {
    let mut group = group.to_string();
    group.truncate(253 - 9);
    let group = group.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{group}-{}", identity_hash(identity))
}

/// The group label's value: the group name when it fits a label value (63
/// characters), else its start and a hash of the whole.
pub fn group_label_value(group: &str) -> String {
    if group.len() <= 63 {
        return group.to_string();
    }
    let head = group[..54].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{}", identity_hash(group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("operator-7d9f{i}-x_1_{i:08x}")).collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("default/object-{i}")).collect()
    }

    #[test]
    fn shares_are_equal_within_20_percent_at_3_to_10_members() {
        let keys = keys(3000);
        for n in 3..=10 {
            let m = members(n);
            let mut counts = std::collections::HashMap::new();
            for k in &keys {
                *counts.entry(owner(&m, k).unwrap()).or_insert(0usize) += 1;
            }
            let fair = keys.len() as f64 / n as f64;
            for id in &m {
                let got = *counts.get(id.as_str()).unwrap_or(&0) as f64;
                assert!((got - fair).abs() <= 0.2 * fair, "{n} members: {id} owns {got}, fair {fair}");
            }
        }
    }

    fn moved(a: &[String], b: &[String], keys: &[String]) -> usize {
        keys.iter().filter(|k| owner(a, k) != owner(b, k)).count()
    }

    #[test]
    fn adding_or_removing_one_member_moves_about_one_nth_and_only_to_or_from_it() {
        let keys = keys(3000);
        for n in 3..=9 {
            let before = members(n);
            let after = members(n + 1);
            let joined = after[n].as_str();
            let moved_keys: Vec<_> = keys.iter().filter(|k| owner(&before, k) != owner(&after, k)).collect();
            assert!(moved_keys.iter().all(|k| owner(&after, k) == Some(joined)), "moves only to the new member");
            let expected = keys.len() as f64 / (n + 1) as f64;
            let got = moved(&before, &after, &keys) as f64;
            assert!((got - expected).abs() <= 0.2 * expected, "{n}->{}: {got} moved, ~{expected}", n + 1);
            let without_first: Vec<String> = before[1..].to_vec();
            let gone = keys.iter().filter(|k| owner(&before, k) != owner(&without_first, k));
            assert!(gone.clone().all(|k| owner(&before, k) == Some(before[0].as_str())), "only its objects move");
        }
    }

    #[test]
    fn the_owner_does_not_depend_on_the_order_of_members() {
        let m = members(5);
        let mut reversed = m.clone();
        reversed.reverse();
        for k in keys(200) {
            assert_eq!(owner(&m, &k), owner(&reversed, &k));
        }
        assert_eq!(owner::<String>(&[], "x"), None);
        assert!(owns(&m, owner(&m, "x").unwrap(), "x"));
    }

    #[test]
    fn the_hash_is_fixed_across_processes_and_releases() {
        // Changing these numbers changes every owner: bump HASH_VERSION with them.
        assert_eq!(fnv1a(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(format!("{:016x}", weight("member-a", "default/x")), FIXED_WEIGHT);
    }

    const FIXED_WEIGHT: &str = "e4c4d71dd56355fa";

    #[test]
    fn a_record_reads_back_and_bad_ones_are_named() {
        let r = Record::new(vec!["a".into(), "b".into()]);
        assert_eq!(Record::parse(Some(&r.to_text())), Parsed::Member(r));
        assert_eq!(Record::parse(Some(r#"{"version":2,"anything":1}"#)), Parsed::Incompatible(2));
        for bad in [None, Some("garbage"), Some(r#"{"view":[]}"#), Some(r#"{"version":1,"view":7}"#)] {
            assert!(matches!(Record::parse(bad), Parsed::Garbage(_)), "{bad:?}");
        }
    }

    #[test]
    fn member_lease_names_are_valid_and_differ_per_identity() {
        let a = member_lease_name("operator-configmaps-hooks", "host_1_0000abcd");
        let b = member_lease_name("operator-configmaps-hooks", "host_1_0000abce");
        assert_ne!(a, b);
        assert!(crate::model::lease::valid_lease_name(&a), "{a}");
        assert!(crate::model::lease::valid_lease_name(&member_lease_name(&"x".repeat(300), "i")));
        assert_eq!(group_label_value("short.group"), "short.group");
        let long = group_label_value(&format!("{}.b", "a".repeat(100)));
        assert!(long.len() <= 63 && long != group_label_value(&format!("{}.c", "a".repeat(100))), "{long}");
    }
}
