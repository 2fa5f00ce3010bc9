//! How a hook run ended, and what its exit status means to the runner.
//!
//! Shared by the process that runs a hook, the retry policy that reads its outcome,
//! and the metrics that count it: it lives here so none of them imports another.

/// A hook exiting with this status has failed for good: it is not retried, and the
/// event's remaining handlers are not run.
pub const PERMANENT_FAILURE: i32 = 100;

/// How a hook run ended.
#[derive(Debug)]
pub enum Outcome {
    Succeeded,
    Failed(i32),
    Killed(i32),
    TimedOut,
    /// The runner is shutting down and the hook was ended after the grace period.
    Interrupted,
    NotStarted(std::io::Error),
}

impl Outcome {
    pub fn describe(&self) -> String {
        match self {
            Outcome::Succeeded => "succeeded".into(),
            Outcome::Failed(code) => format!("exited with status {code}"),
            Outcome::Killed(sig) => format!("was killed by signal {sig}"),
            Outcome::TimedOut => "timed out".into(),
            Outcome::Interrupted => "was interrupted by shutdown".into(),
            Outcome::NotStarted(e) => format!("could not be started: {e}"),
        }
    }

    /// Retrying cannot help: the hook said so (exit 100) or it cannot be started.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Outcome::Failed(PERMANENT_FAILURE) | Outcome::NotStarted(_))
    }

    /// A failed run's exit status as a shell reports it: the code, or 128 + the signal.
    pub fn shell_status(&self) -> Option<i32> {
        match self {
            Outcome::Failed(code) => Some(*code),
            Outcome::Killed(signal) => Some(128 + signal),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_reports_its_status_as_a_shell_would() {
        assert_eq!(Outcome::Failed(7).shell_status(), Some(7));
        assert_eq!(Outcome::Killed(9).shell_status(), Some(137));
        assert_eq!(Outcome::TimedOut.shell_status(), None);
    }

    #[test]
    fn exit_100_and_a_hook_that_cannot_start_are_permanent() {
        assert!(Outcome::Failed(PERMANENT_FAILURE).is_permanent());
        assert!(Outcome::NotStarted(std::io::Error::other("gone")).is_permanent());
        assert!(!Outcome::Failed(1).is_permanent());
        assert!(!Outcome::TimedOut.is_permanent());
    }

    #[test]
    fn a_timeout_is_described_in_words() {
        assert_eq!(Outcome::TimedOut.describe(), "timed out");
        assert_eq!(Outcome::Killed(15).describe(), "was killed by signal 15");
    }
}
