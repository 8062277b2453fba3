//! `--max-inflight`: one server-wide bound on inference requests in flight, shared by every
//! front end (HTTP, gRPC calls and each request of a gRPC stream), refused at once beyond it
//! instead of queueing without bound.

use crate::tensor::ErrorKind;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The bound and the count of admitted requests. Unbounded by default, when admitting costs
/// nothing.
#[derive(Debug, Default)]
pub struct InflightLimit {
    limit: Option<usize>,
    admitted: AtomicUsize,
}

/// One admitted request: counts against the limit until dropped.
#[derive(Debug)]
pub struct Admitted(Arc<InflightLimit>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request refused because `limit` requests are in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtLimit {
    pub limit: usize,
}

impl fmt::Display for AtLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server is at its limit of {} inference requests in flight (--max-inflight); retry later",
            self.limit
        )
    }
}

impl std::error::Error for AtLimit {}

impl AtLimit {
    /// Always [`ErrorKind::Unavailable`]: the request was fine, the server is busy.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Unavailable
    }
}

impl InflightLimit {
    /// At most `limit` requests in flight at once; `None` admits everything.
    pub fn new(limit: Option<usize>) -> Arc<InflightLimit> {
        Arc::new(InflightLimit {
            limit,
            admitted: AtomicUsize::new(0),
        })
    }

    /// The bound, if any.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    /// Requests admitted and not yet dropped (always 0 when unbounded: nothing is counted).
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Admits one request: `Ok(None)` when unbounded, `Ok(Some(_))` to hold until the
    /// request is answered, or [`AtLimit`] when `limit` requests are already in flight.
    pub fn admit(self: &Arc<Self>) -> Result<Option<Admitted>, AtLimit> {
        let Some(limit) = self.limit else {
            return Ok(None);
        };
        let before = self.admitted.fetch_add(1, Ordering::Relaxed);
        let admitted = Admitted(Arc::clone(self));
        if before >= limit {
            drop(admitted);
            return Err(AtLimit { limit });
        }
        Ok(Some(admitted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        let limit = InflightLimit::new(Some(2));
        let a = limit.admit().unwrap();
        let b = limit.admit().unwrap();
        assert!(a.is_some() && b.is_some());
        let refused = limit.admit().unwrap_err();
        assert_eq!(refused, AtLimit { limit: 2 });
        assert_eq!(refused.kind(), ErrorKind::Unavailable);
        assert!(refused.to_string().contains("--max-inflight"));
        assert_eq!(limit.admitted(), 2, "a refusal holds nothing");
        drop(a);
        assert!(limit.admit().unwrap().is_some());
        drop(b);
        assert_eq!(limit.admitted(), 0);
    }

    #[test]
    fn unbounded_counts_nothing() {
        let limit = InflightLimit::new(None);
        let held: Vec<_> = (0..100).map(|_| limit.admit().unwrap()).collect();
        assert!(held.iter().all(Option::is_none));
        assert_eq!(limit.admitted(), 0);
    }
}
