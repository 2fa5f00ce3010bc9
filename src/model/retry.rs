//! How failed hooks are retried: `--retries`, `--backoff-min`, `--backoff-max`.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retries: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// Exponential backoff with jitter: between half and all of min·2^attempt, capped at max.
pub fn backoff(policy: &RetryPolicy, attempt: u32, random: f64) -> Duration {
    let full = policy.backoff_min.saturating_mul(2u32.saturating_pow(attempt)).min(policy.backoff_max);
    full.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { retries: 5, backoff_min: Duration::from_secs(1), backoff_max: Duration::from_secs(10) }
    }

    #[test]
    fn backoff_doubles_each_attempt() {
        assert_eq!(backoff(&policy(), 0, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&policy(), 2, 1.0), Duration::from_secs(4));
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(&policy(), 20, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(&policy(), 200, 1.0), Duration::from_secs(10));
    }

    #[test]
    fn jitter_never_goes_below_half() {
        assert_eq!(backoff(&policy(), 1, 0.0), Duration::from_secs(1));
    }
}
