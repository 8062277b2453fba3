//! Room for request bodies: a version reads a request's body only when the bodies it holds
//! (read, decoded, queued or running) leave room for it, so that its memory under load is
//! bounded by what its engine runs at once, not by how many clients send at once. A request
//! without room waits before its body is read: its bytes stay with the client and the
//! kernel's socket buffers, and a front end that reads bodies itself (HTTP) takes the room
//! first.
//!
//! A version whose config shapes its queue (`max_queue_size`, priority levels, a queue
//! timeout) keeps the queue it asked for and has no room to wait for: a wait ahead of the
//! queue would bypass its bound, its priorities and its timeouts.

use crate::engine::{Dim, TensorSpec};
use crate::registry::ModelConfig;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bodies the engine's runs at once may hold, over what those runs take: the running
/// batches, the next ones ready behind them, and as much again for bodies being read and
/// decoded (a JSON body is 2–3 times its tensors).
const ROOM_PER_RUN: usize = 4;

/// The least room a version has: small models admit thousands of requests.
pub const MIN_ROOM_BYTES: usize = 4 << 20;

/// The room of a version whose input sizes are not known before a request (dynamic
/// dimensions besides the batch, or BYTES tensors).
pub const UNKNOWN_ROOM_BYTES: usize = 64 << 20;

/// Bodies of at most this many bytes take no room: a connection's own buffers (hyper's read
/// buffer starts at 8 KiB and grows to `http`'s cap of 16 KiB) hold as much, so counting them
/// bounds nothing, and it would cost every small request a lock.
pub const SMALL_BODY_BYTES: u64 = 16 << 10;

/// A version's room for request bodies, in bytes; unbounded where it has none.
#[derive(Debug)]
pub struct Intake {
    room: Option<(Arc<Semaphore>, u32)>,
}

/// Room held for one request's body: given back when dropped, once the request is answered.
#[derive(Debug)]
pub struct Room(Option<OwnedSemaphorePermit>);

impl Room {
    /// Gives back all but `bytes` of the room: what a request holds once its body is
    /// decoded into tensors (a JSON body takes 2–3 times the bytes of its tensors).
    pub fn shrink_to(&mut self, bytes: usize) {
        if let Some(permit) = &mut self.0 {
            let keep = bytes.max(1);
            if permit.num_permits() > keep {
                drop(permit.split(permit.num_permits() - keep));
            }
        }
    }

    /// The bytes of room held.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

impl Intake {
    /// Room for `bytes` of bodies at once (at most 4 GiB); `None` admits everything.
    pub fn new(bytes: Option<usize>) -> Intake {
        Intake {
            room: bytes.map(|b| {
                let b = u32::try_from(b.max(1)).unwrap_or(u32::MAX);
                (Arc::new(Semaphore::new(b as usize)), b)
            }),
        }
    }

    /// The room, in bytes; `None` when unbounded.
    pub fn bytes(&self) -> Option<usize> {
        self.room.as_ref().map(|(_, b)| *b as usize)
    }

    /// Room for a body of `declared` bytes, waiting until bodies already admitted leave it
    /// (first come, first served). A body larger than the whole room waits for all of it
    /// and then runs alone; one of unknown length (chunked, or compressed) is counted as a
    /// quarter of the room; one of at most [`SMALL_BODY_BYTES`] goes ahead at once.
    pub async fn admit(&self, declared: Option<u64>) -> Room {
        let Some((semaphore, room)) = &self.room else {
            return Room(None);
        };
        if declared.is_some_and(|n| n <= SMALL_BODY_BYTES) {
            return Room(None);
        }
        let weight = declared
            .map_or(room / 4, |n| u32::try_from(n).unwrap_or(u32::MAX))
            .clamp(1, *room);
        // The semaphore is never closed, so this only fails if that invariant breaks; the
        // request then goes ahead without room rather than failing.
        Room(Arc::clone(semaphore).acquire_many_owned(weight).await.ok())
    }
}

/// The room of a version with `config` (auto-completed), `inputs`, run on `threads` threads
/// whose dynamic batches take at most `batch_rows` rows ([`crate::batch::batch_rows`]):
/// [`ROOM_PER_RUN`] times the inputs of the rows its threads run at once, at least
/// [`MIN_ROOM_BYTES`]; `None` (unbounded) where the config shapes the queue.
pub fn room_bytes(
    config: &ModelConfig,
    inputs: &[TensorSpec],
    threads: usize,
    batch_rows: usize,
) -> Option<usize> {
    let max_batch = config.max_batch_size.unwrap_or(0) as usize;
    let rows = match &config.dynamic_batching {
        Some(b) if b.shapes_queue() => return None,
        Some(_) => batch_rows.max(1),
        // One request per run; its own rows are counted by its body's size.
        None => 1,
    };
    let room = match row_bytes(inputs, max_batch > 0) {
        Some(row) => ROOM_PER_RUN
            .saturating_mul(threads.max(1))
            .saturating_mul(rows)
            .saturating_mul(row),
        None => UNKNOWN_ROOM_BYTES,
    };
    Some(room.max(MIN_ROOM_BYTES))
}

/// The bytes of one row of every input (without the batch dimension where `batched`);
/// `None` where a dimension or an element size is only known from a request.
fn row_bytes(inputs: &[TensorSpec], batched: bool) -> Option<usize> {
    inputs.iter().try_fold(0usize, |total, spec| {
        let dims = spec.shape.get(usize::from(batched)..).unwrap_or(&[]);
        let elements = dims.iter().try_fold(1usize, |n, d| match d {
            Dim::Fixed(k) => n.checked_mul(*k),
            Dim::Dynamic => None,
        })?;
        total.checked_add(elements.checked_mul(spec.dtype.size()?)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::config::DynamicBatching;
    use crate::tensor::DataType;
    use std::time::Duration;

    fn spec(dtype: DataType, shape: &[Dim]) -> TensorSpec {
        TensorSpec {
            name: "x".into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    fn image() -> Vec<TensorSpec> {
        use Dim::{Dynamic, Fixed};
        vec![spec(
            DataType::F32,
            &[Dynamic, Fixed(3), Fixed(224), Fixed(224)],
        )]
    }

    fn batching(max_batch_size: u32) -> ModelConfig {
        ModelConfig {
            max_batch_size: Some(max_batch_size),
            dynamic_batching: Some(DynamicBatching::default()),
            ..ModelConfig::default()
        }
    }

    #[test]
    fn room_follows_what_runs_at_once() {
        let row = 3 * 224 * 224 * 4;
        let config = batching(4);
        // Two threads, batches of up to 4 rows.
        assert_eq!(room_bytes(&config, &image(), 2, 4), Some(4 * 2 * 4 * row));
        // Runs of at most one row (tract with only batch 1's plan).
        assert_eq!(room_bytes(&config, &image(), 2, 1), Some(4 * 2 * row));
        // No batcher: one request per run, on each thread.
        let direct = ModelConfig {
            max_batch_size: Some(4),
            ..ModelConfig::default()
        };
        assert_eq!(room_bytes(&direct, &image(), 1, 4), Some(MIN_ROOM_BYTES));
        assert_eq!(room_bytes(&direct, &image(), 3, 4), Some(4 * 3 * row));
        // Without a batch dimension every dimension is the row's.
        let fixed = vec![spec(DataType::F32, &[Dim::Fixed(8), Dim::Fixed(1 << 20)])];
        let unbatched = ModelConfig {
            max_batch_size: Some(0),
            ..ModelConfig::default()
        };
        assert_eq!(
            room_bytes(&unbatched, &fixed, 1, 1),
            Some(4 * 8 * (1 << 20) * 4)
        );
        // Small models get the floor.
        let digits = vec![spec(DataType::F32, &[Dim::Dynamic, Dim::Fixed(64)])];
        assert_eq!(room_bytes(&config, &digits, 2, 4), Some(MIN_ROOM_BYTES));
    }

    #[test]
    fn unknown_sizes_get_the_fixed_room() {
        let config = batching(4);
        let any_image = vec![spec(
            DataType::F32,
            &[Dim::Dynamic, Dim::Fixed(3), Dim::Dynamic, Dim::Dynamic],
        )];
        assert_eq!(
            room_bytes(&config, &any_image, 2, 4),
            Some(UNKNOWN_ROOM_BYTES)
        );
        let text = vec![spec(DataType::Bytes, &[Dim::Dynamic, Dim::Fixed(1)])];
        assert_eq!(room_bytes(&config, &text, 2, 4), Some(UNKNOWN_ROOM_BYTES));
    }

    #[test]
    fn a_shaped_queue_keeps_its_own_bound() {
        let shaped = |f: fn(&mut DynamicBatching)| {
            let mut config = batching(4);
            f(config.dynamic_batching.as_mut().unwrap());
            room_bytes(&config, &image(), 2, 4)
        };
        assert_eq!(shaped(|b| b.max_queue_size = 8), None);
        assert_eq!(shaped(|b| b.priority_levels = 2), None);
        assert_eq!(shaped(|b| b.queue_policy.default_timeout_us = 1000), None);
        assert_eq!(
            shaped(|b| b.queue_policy.allow_timeout_override = true),
            None
        );
        assert!(shaped(|_| {}).is_some());
    }

    #[tokio::test]
    async fn waits_for_room_first_come_first_served() {
        const K: u64 = SMALL_BODY_BYTES;
        let intake = Arc::new(Intake::new(Some(10 * K as usize)));
        assert_eq!(intake.bytes(), Some(10 * K as usize));
        let a = intake.admit(Some(6 * K)).await;
        let b = intake.admit(Some(4 * K)).await;
        // Small bodies take no room, even when it is full.
        let small = tokio::time::timeout(Duration::from_secs(5), intake.admit(Some(K)));
        drop(small.await.expect("a small body waited for room"));
        // Full: the next body waits until an admitted one is answered.
        let waiting = {
            let intake = Arc::clone(&intake);
            tokio::spawn(async move { intake.admit(Some(3 * K)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "admitted beyond the room");
        drop(b);
        let c = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room given back on drop")
            .unwrap();
        // A body larger than the room waits for all of it.
        let whole = {
            let intake = Arc::clone(&intake);
            tokio::spawn(async move { intake.admit(Some(1 << 40)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!whole.is_finished());
        drop((a, c));
        let whole = tokio::time::timeout(Duration::from_secs(5), whole)
            .await
            .expect("a body over the room runs alone")
            .unwrap();
        drop(whole);
        // Unknown lengths count a quarter of the room: four fit at once.
        let mut quarters = Vec::new();
        for _ in 0..4 {
            quarters.push(intake.admit(None).await);
        }
        let fifth = {
            let intake = Arc::clone(&intake);
            tokio::spawn(async move { intake.admit(None).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!fifth.is_finished(), "a fifth unknown-length body fit");
        drop(quarters);
        tokio::time::timeout(Duration::from_secs(5), fifth)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_decoded_body_gives_back_the_rest() {
        const K: u64 = SMALL_BODY_BYTES;
        let intake = Arc::new(Intake::new(Some(10 * K as usize)));
        let mut json = intake.admit(Some(10 * K)).await;
        assert_eq!(json.bytes(), 10 * K as usize);
        let waiting = {
            let intake = Arc::clone(&intake);
            tokio::spawn(async move { intake.admit(Some(6 * K)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        // Decoded into tensors of a third of its size: the rest is room for the next.
        json.shrink_to(3 * K as usize);
        assert_eq!(json.bytes(), 3 * K as usize);
        let next = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room given back by a shrink")
            .unwrap();
        assert_eq!(next.bytes(), 6 * K as usize);
        // Growing is not shrinking.
        json.shrink_to(usize::MAX);
        assert_eq!(json.bytes(), 3 * K as usize);
        // Unbounded and small rooms hold nothing.
        let mut none = Intake::new(None).admit(Some(u64::MAX)).await;
        none.shrink_to(1);
        assert_eq!(none.bytes(), 0);
        assert_eq!(intake.admit(Some(1)).await.bytes(), 0);
    }

    #[tokio::test]
    async fn unbounded_admits_everything() {
        let intake = Intake::new(None);
        assert_eq!(intake.bytes(), None);
        let mut held = Vec::new();
        for _ in 0..100 {
            let room = tokio::time::timeout(Duration::from_secs(5), intake.admit(Some(u64::MAX)));
            held.push(room.await.expect("unbounded never waits"));
        }
    }
}
