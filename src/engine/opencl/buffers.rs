//! Device tensors and the per-instance buffer pool.
//!
//! Buffers are pooled by size and handed back as soon as the last step that reads their value
//! has been enqueued (liveness, computed at load) or, for the rest, after the run: a run
//! reuses buffers across its nodes, and steady-state requests of one shape allocate nothing
//! on the device. Constants (weights) live in their own buffers
//! for the engine's lifetime.
//!
//! Buffers that cross to the host (a run's inputs, written by the host; the outputs of the
//! steps whose value the host reads: graph outputs and CPU-segment inputs) come from a second,
//! host-visible free list: allocated with `CL_MEM_ALLOC_HOST_PTR` (pinned host memory the
//! device reads and writes; the same memory on CPU devices and integrated GPUs) and accessed
//! by mapping them, so the host writes inputs and reads outputs in place instead of through
//! a driver staging copy. (Every buffer such a step takes is host-visible, its scratch too,
//! e.g. a Conv's im2col columns; they go back to the host-visible list.)

use opencl3::context::Context;
use opencl3::memory::{Buffer, CL_MEM_ALLOC_HOST_PTR, CL_MEM_READ_WRITE};
use std::collections::BTreeMap;
use std::ptr;
use std::rc::Rc;

/// A buffer a run reads or writes: a constant owned by the engine, or one from the pool.
#[derive(Clone)]
pub enum Buf<'a> {
    Const(&'a Buffer<f32>),
    Pool(Rc<Buffer<f32>>),
}

impl Buf<'_> {
    pub fn get(&self) -> &Buffer<f32> {
        match self {
            Buf::Const(b) => b,
            Buf::Pool(b) => b,
        }
    }
}

/// An FP32 tensor in device memory (row-major, contiguous).
#[derive(Clone)]
pub struct DevTensor<'a> {
    pub buf: Buf<'a>,
    pub shape: Vec<usize>,
}

impl DevTensor<'_> {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A buffer a run took from the pool: its capacity, whether it is host-visible, the buffer.
pub type Taken = (usize, bool, Rc<Buffer<f32>>);

/// Free buffers by (host-visible, element count (capacity)).
pub struct Pool {
    free: BTreeMap<(bool, usize), Vec<Buffer<f32>>>,
    /// The device's largest single allocation (CL_DEVICE_MAX_MEM_ALLOC_SIZE), in bytes.
    max_alloc: u64,
}

impl Pool {
    pub fn new(max_alloc: u64) -> Pool {
        Pool {
            free: BTreeMap::new(),
            max_alloc,
        }
    }

    /// A buffer of at least `len` elements (OpenCL has no empty buffers) and its capacity:
    /// the smallest free one of at most twice that, else a new one; `host`: a host-visible
    /// one (`CL_MEM_ALLOC_HOST_PTR`), for values that cross to or from the host.
    pub fn take(
        &mut self,
        context: &Context,
        len: usize,
        host: bool,
    ) -> Result<(usize, Buffer<f32>), String> {
        let len = len.max(1);
        let bytes = len as u64 * 4;
        if bytes > self.max_alloc {
            return Err(format!(
                "a {bytes}-byte tensor exceeds the OpenCL device's largest allocation ({} bytes); send smaller batches",
                self.max_alloc
            ));
        }
        let fit = self
            .free
            .range_mut((host, len)..=(host, len.saturating_mul(2)))
            .find_map(|(&(_, cap), v)| v.pop().map(|b| (cap, b)));
        if let Some(found) = fit {
            return Ok(found);
        }
        let flags = if host {
            CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR
        } else {
            CL_MEM_READ_WRITE
        };
        // SAFETY: no host pointer is passed.
        unsafe { Buffer::<f32>::create(context, flags, len, ptr::null_mut()) }
            .map(|b| (len, b))
            .map_err(|e| {
                format!(
                    "the OpenCL device could not allocate {} bytes ({e}): out of device memory?",
                    len * 4
                )
            })
    }

    /// How many free buffers the pool holds.
    pub fn buffers(&self) -> usize {
        self.free.values().map(Vec::len).sum()
    }

    /// How many of them are host-visible (`CL_MEM_ALLOC_HOST_PTR`).
    pub fn host_buffers(&self) -> usize {
        self.free
            .iter()
            .filter(|((host, _), _)| *host)
            .map(|(_, v)| v.len())
            .sum()
    }

    /// Returns the run's buffers that nothing holds any more.
    pub fn give_back(&mut self, used: Vec<Taken>) {
        for (len, host, b) in used {
            if let Ok(b) = Rc::try_unwrap(b) {
                self.free.entry((host, len.max(1))).or_default().push(b);
            }
        }
    }
}
