//! The process's allocator, and returning the memory it frees to the operating system.
//!
//! Rust allocations go to jemalloc: per-thread caches make the small allocations of every
//! request (bodies, tensors, tract's per-run state) cheaper than glibc's arenas, which also
//! contend when one thread frees what another allocated. A background thread gives pages
//! unused for a second back to the operating system, so memory used under load does not stay
//! in the process's RSS once the load is gone. C libraries (ONNX Runtime, OpenCL drivers)
//! still allocate through glibc.
//!
//! Under `cargo fuzz` (`cfg(fuzzing)`) the system allocator stays, for the sanitizers.

use std::ffi::CStr;

#[cfg(not(fuzzing))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, in `MALLOC_CONF` syntax (the `_RJEM_MALLOC_CONF` environment variable
/// overrides them): one background thread purges pages freed for a second (`dirty_decay_ms`),
/// returning them at once rather than as lazily-freed pages the RSS still counts
/// (`muzzy_decay_ms:0`). One arena (`narenas:1`, where jemalloc's default is four per core):
/// a request's tensors are allocated on an executor thread and freed on an inference thread,
/// and a single arena reuses those pages for the next request whichever thread asks, where
/// several each kept their own freed pages for that second (resnet at concurrency 16: peak
/// RSS 12 MiB lower, throughput unchanged; small allocations stay in per-thread caches).
// jemalloc reads this symbol at its initialisation; it lies beside the allocator so that the
// object file defining the allocator (always linked) defines it too.
#[used]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 95] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:1\0";

/// Returns the heap memory freed so far to the operating system, at once: jemalloc's freed
/// pages (else returned a second later) and glibc's (ONNX Runtime's and other C libraries'
/// allocations, which glibc otherwise keeps in each thread's arena for good). A model's load
/// frees several times the model's size (parsed protobuf, unoptimized graphs).
pub fn release_freed_memory() {
    purge(c"arena.4096.purge");
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it has no
    // preconditions and is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Returns the pages Rust allocations have freed (jemalloc's) to the operating system at
/// once, when they come to more than `bytes`. For the steps of a model's load: each frees
/// copies of the weights that the next step's allocations, of other sizes, do not reuse, and
/// jemalloc would return them a second later, after the load's peak.
pub fn release_freed_heap_over(bytes: usize) {
    if freed_heap_bytes().is_some_and(|freed| freed > bytes) {
        purge(c"arena.4096.purge");
    }
}

/// The bytes of the pages jemalloc holds freed (they count in the resident set until it
/// returns them), as of now; `None` where it cannot say.
fn freed_heap_bytes() -> Option<usize> {
    let mut epoch = 1u64;
    // SAFETY: `epoch` takes a u64 (any value) and refreshes the statistics read next.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            c"epoch".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            (&raw mut epoch).cast(),
            std::mem::size_of::<u64>(),
        );
    }
    let pages = read_size(c"stats.arenas.4096.pdirty")?;
    Some(pages.saturating_mul(read_size(c"arenas.page")?))
}

/// Reads a `size_t` jemalloc control; `None` if it has no such control.
fn read_size(name: &CStr) -> Option<usize> {
    let mut value = 0usize;
    let mut len = std::mem::size_of::<usize>();
    // SAFETY: the named controls read here are size_t values, written into `value` of `len`
    // bytes; an unknown name only returns an error code.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            (&raw mut value).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    (rc == 0).then_some(value)
}

/// Runs a jemalloc control that takes and returns nothing (`arena.<i>.purge`; 4096 is
/// `MALLCTL_ARENAS_ALL`); returns its error code (0: done).
fn purge(name: &CStr) -> i32 {
    // SAFETY: a void control: no value read or written, so null pointers and a zero length
    // are what it takes; an unknown name only returns an error code.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        tracing::debug!("jemalloc {name:?}: error {rc}");
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a `size_t`-sized or `bool` jemalloc option.
    fn read<T: Default>(name: &CStr) -> T {
        let mut value = T::default();
        let mut len = std::mem::size_of::<T>();
        // SAFETY: `value` is a T of `len` bytes, as the named control writes.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr(),
                (&mut value as *mut T).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "{name:?}");
        value
    }

    #[test]
    fn jemalloc_runs_with_the_options_set_here_and_purges() {
        assert!(read::<bool>(c"opt.background_thread"));
        assert_eq!(read::<isize>(c"opt.dirty_decay_ms"), 1000);
        assert_eq!(read::<isize>(c"opt.muzzy_decay_ms"), 0);
        assert_eq!(read::<u32>(c"opt.narenas"), 1);
        drop(vec![7u8; 1 << 20]);
        assert_eq!(purge(c"arena.4096.purge"), 0);
        assert_ne!(purge(c"arena.4096.no-such-control"), 0);
    }

    fn freed_bytes() -> usize {
        freed_heap_bytes().expect("jemalloc's freed pages")
    }

    #[test]
    fn freed_pages_over_the_bound_go_back_at_once() {
        // Blocks under jemalloc's oversize threshold (8 MiB), which the arena keeps once freed.
        let blocks: Vec<Vec<u8>> = (0..16).map(|i| vec![i; 2 << 20]).collect();
        drop(std::hint::black_box(blocks));
        assert!(freed_bytes() >= 24 << 20, "{} freed", freed_bytes());
        release_freed_heap_over(16 << 20);
        // Other tests' threads free meanwhile, but not 16 MiB.
        assert!(freed_bytes() < 16 << 20, "{} freed", freed_bytes());
    }
}
