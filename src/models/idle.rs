//! Returning memory freed by a burst of requests to the operating system once the server is
//! idle again ([`crate::alloc::release_freed_memory`]): jemalloc would return its pages a
//! second later anyway, but glibc, through which ONNX Runtime and other C libraries allocate,
//! keeps what their threads free in per-thread arenas for good.

use super::stats::now_ms;
use super::ModelManager;
use std::sync::Arc;
use std::time::Duration;

/// How long the server must have answered nothing before freed memory is returned.
pub const IDLE_AFTER: Duration = Duration::from_secs(2);

/// Watches `models` on a background thread, for as long as the manager lives: once no
/// version has answered (or failed) a request for [`IDLE_AFTER`] since requests were last
/// answered, freed heap memory is returned to the operating system, once per such burst.
pub fn spawn_trim(models: &Arc<ModelManager>) -> std::io::Result<()> {
    let weak = Arc::downgrade(models);
    std::thread::Builder::new()
        .name("idle-trim".into())
        .spawn(move || {
            let mut trimmed_at = 0;
            loop {
                std::thread::sleep(IDLE_AFTER / 2);
                let Some(models) = weak.upgrade() else { return };
                let last = models.last_inference_ms();
                let idle_ms = now_ms().saturating_sub(last);
                if last > trimmed_at && u128::from(idle_ms) >= IDLE_AFTER.as_millis() {
                    crate::alloc::release_freed_memory();
                    trimmed_at = last;
                }
            }
        })?;
    Ok(())
}

impl ModelManager {
    /// When a served version last answered or failed a request, in milliseconds since the
    /// Unix epoch (0 if none has).
    pub fn last_inference_ms(&self) -> u64 {
        self.read()
            .values()
            .flat_map(|m| m.versions.values())
            .filter_map(|v| match v {
                super::VersionState::Ready(served) => {
                    Some(served.model.stats().last_inference_ms())
                }
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }
}
