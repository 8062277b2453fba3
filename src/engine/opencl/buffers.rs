//! Device tensors and the per-instance buffer pool.
//!
//! Buffers are pooled by size and handed back as soon as the last step that reads their value
//! has been enqueued (liveness, computed at load) or, for the rest, after the run: a run
//! reuses buffers across its nodes, and steady-state requests of one shape allocate nothing
//! on the device. Constants (weights) live in their own buffers
//! for the engine's lifetime.

use opencl3::context::Context;
use opencl3::memory::{Buffer, CL_MEM_READ_WRITE};
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

/// Free buffers by element count (capacity).
pub struct Pool {
    free: BTreeMap<usize, Vec<Buffer<f32>>>,
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
    /// the smallest free one of at most twice that, else a new one.
    pub fn take(&mut self, context: &Context, len: usize) -> Result<(usize, Buffer<f32>), String> {
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
            .range_mut(len..=len.saturating_mul(2))
            .find_map(|(&cap, v)| v.pop().map(|b| (cap, b)));
        if let Some(found) = fit {
            return Ok(found);
        }
        // SAFETY: no host pointer is passed.
        unsafe { Buffer::<f32>::create(context, CL_MEM_READ_WRITE, len, ptr::null_mut()) }
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

    /// Returns the run's buffers that nothing holds any more.
    pub fn give_back(&mut self, used: Vec<(usize, Rc<Buffer<f32>>)>) {
        for (len, b) in used {
            if let Ok(b) = Rc::try_unwrap(b) {
                self.free.entry(len.max(1)).or_default().push(b);
            }
        }
    }
}
