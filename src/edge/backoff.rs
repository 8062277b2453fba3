//! The wait between retries, shared by reconnecting to the broker ([`super::driver`]) and
//! republishing records the broker refused ([`super::delivery`]).

use std::time::Duration;

/// Exponential backoff with jitter: each wait is drawn uniformly from the upper half of the
/// current step (`[step/2, step]`), and the step doubles from `min` up to `max` with every
/// wait taken until [`Backoff::reset`]. The jitter spreads out the retries of many modules
/// that lost the same broker at once; no wait is ever longer than the step.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    /// Starts at `min`; `max` caps the step (and is raised to `min` if lower).
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            step: min,
        }
    }

    /// The next wait; the step after it is twice as long, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(unit_random())
    }

    /// Back to the shortest step, after a success.
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

/// A number in [0, 1) from the OS random number generator; 1/2 if it cannot be read (the
/// wait then has no jitter, which is still correct).
fn unit_random() -> f64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(350));
        for step in [100, 200, 350, 350] {
            let d = b.next_delay();
            assert!(d >= ms(step) / 2 && d <= ms(step), "{d:?} for step {step}");
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
        // Jitter: a run of waits at the same step is not all one value.
        let waits: Vec<Duration> = (0..16)
            .map(|_| Backoff::new(ms(1000), ms(1000)).next_delay())
            .collect();
        assert!(waits.iter().any(|w| *w != waits[0]), "{waits:?}");
    }
}
