//! The command line without a cluster: usage errors, help, and `operator flatten`.

mod support;

use std::process::Command;
use support::OPERATOR;

fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut cmd = Command::new(OPERATOR);
    cmd.args(args);
    support::status_and_text(support::output_with_stdin(cmd, stdin.as_bytes()))
}

#[test]
fn help_lists_the_flags_with_h_as_hooks() {
    let (code, out, _) = run(&["--help"], "");
    assert_eq!(code, 0);
    assert!(out.contains("-h, --hooks <DIR>"), "{out}");
    assert!(out.contains("-o, --object <TYPE>"), "{out}");
}

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    for (args, needle) in [
        (vec!["-o", "pods", "--resync", "soon"], "--resync"),
        (vec!["-o", "pods", "-L", "loud"], "--log-level"),
        (vec!["-o", "pods", "-E", "1X=2"], "--hook-env"),
        (vec!["-o", "pods", "-h", "/no/such/dir"], "/no/such/dir"),
        (vec!["-o", "pods", "--workers", "0"], "--workers"),
        (vec!["--no-such-flag"], "--no-such-flag"),
        (vec!["-h", "hooks"], "--object"),
    ] {
        let (code, _, err) = run(&args, "");
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?} should name {needle}: {err}");
        assert!(err.contains("--help"), "{args:?} should hint at --help: {err}");
    }
}

#[test]
fn flatten_prints_sorted_variables() {
    let (code, out, _) = run(&["flatten"], r#"{"type":"ADDED","object":{"metadata":{"name":"n"},"spec":{"b":true}}}"#);
    assert_eq!(code, 0);
    assert_eq!(out, "EVENT_OBJECT_METADATA_NAME=n\nEVENT_OBJECT_SPEC_B=1\nEVENT_TYPE=ADDED\n");
}

#[test]
fn flatten_honours_filters_and_prefix() {
    let (code, out, _) = run(&["flatten", "-s", "--prefix", "K"], r#"{"object":{"spec":{"a":1},"kind":"X"}}"#);
    assert_eq!(code, 0);
    assert_eq!(out, "K_OBJECT_KIND=X\n");
}

#[test]
fn flatten_rejects_non_json() {
    let (code, _, err) = run(&["flatten"], "not json");
    assert_eq!(code, 1);
    assert!(err.contains("not JSON"), "{err}");
}

#[test]
fn flatten_matches_operator_sh_on_the_shared_fixture() {
    let dir = support::repo().join("../shared/fixtures");
    let Ok(json) = std::fs::read_to_string(dir.join("operator-sh-pod-event.json")) else {
        eprintln!("skipped: {} is absent", dir.display());
        return;
    };
    let expected = std::fs::read_to_string(dir.join("operator-sh-pod-event.env")).unwrap();
    let (code, out, _) = run(&["flatten"], &json);
    assert_eq!(code, 0);
    let mut want: Vec<&str> = expected.lines().collect();
    want.sort_unstable();
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
}
