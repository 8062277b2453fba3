//! Running device ops: shapes computed from the actual inputs (any dimension may vary
//! between requests), kernels enqueued on the instance's in-order queue.

use super::buffers::{Buf, DevTensor, Pool, Taken};
use super::ops::{Act, Op};
use super::shapes::{axis_index, bcast_strides, broadcast, reshape};
use super::tiling::Tiling;
use opencl3::command_queue::CommandQueue;
use opencl3::context::Context;
use opencl3::kernel::Kernel;
use opencl3::memory::{
    Buffer, ClMem, CL_MAP_READ, CL_MAP_WRITE_INVALIDATE_REGION, CL_MEM_COPY_HOST_PTR,
    CL_MEM_READ_ONLY,
};
use opencl3::types::{cl_mem, CL_BLOCKING};
use std::collections::HashMap;
use std::rc::Rc;

/// The program's kernels, created once per instance. A kernel's arguments are state, so the
/// engine uses them from one run at a time.
pub struct Kernels {
    by_name: HashMap<&'static str, Kernel>,
}

impl Kernels {
    pub fn create(program: &opencl3::program::Program) -> Result<Kernels, String> {
        let mut by_name = HashMap::new();
        for &(name, _) in super::program::KERNELS {
            let k = Kernel::create(program, name)
                .map_err(|e| format!("creating kernel '{name}': {e}"))?;
            by_name.insert(name, k);
        }
        Ok(Kernels { by_name })
    }

    pub fn get(&self, name: &str) -> Result<&Kernel, String> {
        self.by_name
            .get(name)
            .ok_or_else(|| format!("kernel '{name}' is missing (this is a bug)"))
    }
}

/// A kernel argument.
pub enum Arg<'b> {
    B(&'b Buffer<f32>),
    /// An `int` buffer (metadata such as broadcast strides).
    Ints(&'b Buffer<i32>),
    I(i32),
    F(f32),
}

/// What one run needs to enqueue work.
pub struct Ctx<'r> {
    pub context: &'r Context,
    pub queue: &'r CommandQueue,
    pub kernels: &'r Kernels,
    pub pool: &'r mut Pool,
    /// Every pooled buffer this run took (with its capacity), to give back at the end.
    pub used: Vec<Taken>,
    /// Metadata buffers of this run's kernels, kept until the run has finished.
    pub meta: Vec<Buffer<i32>>,
    /// A one-element buffer passed where a kernel's optional operand is absent.
    pub dummy: &'r Buffer<f32>,
    /// The tiled GEMM's parameters for this program and device.
    pub tiling: Tiling,
    /// The step being enqueued computes a value the host reads: its buffers are host-visible
    /// (`CL_MEM_ALLOC_HOST_PTR`), so reading it back maps it in place.
    pub host_out: bool,
}

pub(super) fn int(v: usize) -> Result<i32, String> {
    i32::try_from(v).map_err(|_| format!("size {v} is beyond what the kernels index (2^31)"))
}

impl<'r> Ctx<'r> {
    pub fn alloc<'a>(&mut self, shape: Vec<usize>) -> Result<DevTensor<'a>, String> {
        let len: usize = shape.iter().product();
        int(len)?;
        let (cap, b) = self.pool.take(self.context, len, self.host_out)?;
        let b = Rc::new(b);
        self.used.push((cap, self.host_out, Rc::clone(&b)));
        Ok(DevTensor {
            buf: Buf::Pool(b),
            shape,
        })
    }

    /// Hands `t`'s buffer back to the pool for the rest of the run when nothing else holds
    /// it (a Reshape or Flatten of it may still be alive); kernels enqueued later may then
    /// write it, which the in-order queue runs after every earlier reader.
    pub fn recycle(&mut self, t: DevTensor) {
        let Buf::Pool(rc) = t.buf else {
            return;
        };
        // This tensor's and the run's own reference.
        if Rc::strong_count(&rc) != 2 {
            return;
        }
        let Some(at) = self.used.iter().position(|(_, _, b)| Rc::ptr_eq(b, &rc)) else {
            return;
        };
        let taken = self.used.swap_remove(at);
        drop(rc);
        self.pool.give_back(vec![taken]);
    }

    /// Calls `f` with `t`'s values, read in place through a blocking map of its buffer (no
    /// staging copy where the buffer is host-visible), then unmaps it.
    pub fn with_mapped<R>(&self, t: &DevTensor, f: impl FnOnce(&[f32]) -> R) -> Result<R, String> {
        let len = t.len();
        if len == 0 {
            return Ok(f(&[]));
        }
        let buf = t.buf.get();
        let mut p: cl_mem = std::ptr::null_mut();
        // SAFETY: a blocking map of the tensor's `len` elements, which its buffer holds.
        unsafe {
            self.queue
                .enqueue_map_buffer(buf, CL_BLOCKING, CL_MAP_READ, 0, len * 4, &mut p, &[])
        }
        .map_err(|e| format!("OpenCL: mapping {} bytes for reading: {e}", len * 4))?;
        let out = if p.is_null() || !(p as usize).is_multiple_of(std::mem::align_of::<f32>()) {
            Err(format!("OpenCL: the driver mapped the buffer at {p:?}"))
        } else {
            // SAFETY: the blocking map succeeded: `p` points to `len` aligned floats, valid
            // until the unmap below.
            Ok(f(unsafe {
                std::slice::from_raw_parts(p.cast::<f32>().cast_const(), len)
            }))
        };
        // SAFETY: `p` is this buffer's live mapping; nothing reads it after this.
        unsafe { self.queue.enqueue_unmap_mem_object(buf.get(), p, &[]) }
            .map_err(|e| format!("OpenCL: unmapping a buffer: {e}"))?;
        out
    }

    /// A host-visible pooled buffer holding a copy of `data`, written in place through a
    /// blocking map (no staging copy in the driver).
    pub fn upload<'a>(&mut self, shape: Vec<usize>, data: &[f32]) -> Result<DevTensor<'a>, String> {
        let len: usize = shape.iter().product();
        if len != data.len() {
            return Err(format!(
                "{} elements for shape {shape:?} (this is a bug)",
                data.len()
            ));
        }
        int(len)?;
        let (cap, b) = self.pool.take(self.context, len, true)?;
        if !data.is_empty() {
            let mut p: cl_mem = std::ptr::null_mut();
            // SAFETY: a blocking map of `len` elements, which the buffer holds.
            unsafe {
                self.queue.enqueue_map_buffer(
                    &b,
                    CL_BLOCKING,
                    CL_MAP_WRITE_INVALIDATE_REGION,
                    0,
                    len * 4,
                    &mut p,
                    &[],
                )
            }
            .map_err(|e| format!("OpenCL: mapping {} bytes for writing: {e}", len * 4))?;
            let aligned = !p.is_null() && (p as usize).is_multiple_of(std::mem::align_of::<f32>());
            if aligned {
                // SAFETY: the map succeeded: `p` points to `len` aligned floats of the buffer,
                // which `data` (of `len` elements) does not overlap.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p.cast::<f32>(), len) };
            }
            // SAFETY: `p` is this buffer's live mapping; nothing writes it after this.
            unsafe { self.queue.enqueue_unmap_mem_object(b.get(), p, &[]) }
                .map_err(|e| format!("OpenCL: unmapping a buffer: {e}"))?;
            if !aligned {
                return Err(format!("OpenCL: the driver mapped the buffer at {p:?}"));
            }
        }
        let b = Rc::new(b);
        self.used.push((cap, true, Rc::clone(&b)));
        Ok(DevTensor {
            buf: Buf::Pool(b),
            shape,
        })
    }

    pub(super) fn launch(
        &self,
        name: &str,
        args: &[Arg],
        global: &[usize],
        local: Option<&[usize]>,
    ) -> Result<(), String> {
        if global.contains(&0) {
            return Ok(());
        }
        let k = self.kernels.get(name)?;
        for (i, a) in args.iter().enumerate() {
            let i = i as u32;
            // SAFETY: each argument matches the kernel's declared parameter type and size.
            let r = unsafe {
                match a {
                    Arg::B(b) => {
                        let m: cl_mem = b.get();
                        k.set_arg(i, &m)
                    }
                    Arg::Ints(b) => {
                        let m: cl_mem = b.get();
                        k.set_arg(i, &m)
                    }
                    Arg::I(v) => k.set_arg(i, v),
                    Arg::F(v) => k.set_arg(i, v),
                }
            };
            r.map_err(|e| format!("kernel '{name}' argument {i}: {e}"))?;
        }
        // SAFETY: every argument is set, buffers outlive the queued command (the run ends
        // with a blocking read or finish before buffers go back to the pool).
        unsafe {
            self.queue.enqueue_nd_range_kernel(
                k.get(),
                global.len() as u32,
                std::ptr::null(),
                global.as_ptr(),
                local.map_or(std::ptr::null(), <[usize]>::as_ptr),
                &[],
            )
        }
        .map(|_| ())
        .map_err(|e| format!("running kernel '{name}': {e}"))
    }

    /// Runs `op` on `inputs` (absent optional inputs are `None`).
    pub fn run<'a>(
        &mut self,
        op: &Op,
        inputs: &[Option<DevTensor<'a>>],
    ) -> Result<DevTensor<'a>, String> {
        let x = inputs
            .first()
            .and_then(Option::as_ref)
            .ok_or("the op has no input")?;
        let input = |i: usize| -> Result<&DevTensor<'a>, String> {
            inputs
                .get(i)
                .and_then(Option::as_ref)
                .ok_or_else(|| format!("input {i} is missing"))
        };
        match op {
            Op::Conv {
                win,
                group,
                act,
                wt,
                residual,
                half,
            } => {
                let w = input(1)?;
                let res = if *residual { Some(input(3)?) } else { None };
                self.conv(
                    x,
                    w,
                    inputs.get(2).and_then(Option::as_ref),
                    res,
                    win,
                    *group,
                    *act,
                    *wt,
                    *half,
                )
            }
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
                act,
                half,
            } => {
                let b = input(1)?;
                let c = inputs.get(2).and_then(Option::as_ref);
                self.gemm(x, b, c, *alpha, *beta, *trans_a, *trans_b, *act, *half)
            }
            Op::MatMul { half } => self.matmul(x, input(1)?, *half),
            Op::Binary { code, relu } => self.binary(x, input(1)?, *code, *relu),
            Op::Unary { code: 4, .. } => Ok(x.clone()),
            Op::Unary { code, lo, hi } => {
                let y = self.alloc(x.shape.clone())?;
                let n = int(x.len())?;
                self.launch(
                    "unary",
                    &[
                        Arg::B(x.buf.get()),
                        Arg::B(y.buf.get()),
                        Arg::I(n),
                        Arg::I(*code),
                        Arg::F(*lo),
                        Arg::F(*hi),
                    ],
                    &[x.len()],
                    None,
                )?;
                Ok(y)
            }
            Op::Pool {
                win,
                max,
                count_pad,
            } => self.pool2d(x, win, *max, *count_pad),
            Op::GlobalAvgPool => {
                if x.shape.len() < 3 {
                    return Err(format!(
                        "GlobalAveragePool needs N x C x spatial, got {:?}",
                        x.shape
                    ));
                }
                let nc = x.shape[0] * x.shape[1];
                let inner: usize = x.shape[2..].iter().product();
                let mut shape = x.shape.clone();
                shape[2..].iter_mut().for_each(|d| *d = 1);
                let y = self.alloc(shape)?;
                self.launch(
                    "global_avg",
                    &[
                        Arg::B(x.buf.get()),
                        Arg::B(y.buf.get()),
                        Arg::I(int(nc)?),
                        Arg::I(int(inner)?),
                    ],
                    &[nc],
                    None,
                )?;
                Ok(y)
            }
            Op::BatchNorm { eps, relu } => {
                if x.shape.len() < 2 {
                    return Err(format!(
                        "BatchNormalization needs N x C x ..., got {:?}",
                        x.shape
                    ));
                }
                let c = x.shape[1];
                let params: Vec<&DevTensor> = (1..5).map(input).collect::<Result<_, _>>()?;
                if params.iter().any(|p| p.len() != c) {
                    return Err(format!(
                        "BatchNormalization parameters must have {c} elements"
                    ));
                }
                let inner: usize = x.shape[2..].iter().product();
                let y = self.alloc(x.shape.clone())?;
                self.launch(
                    "batchnorm",
                    &[
                        Arg::B(x.buf.get()),
                        Arg::B(params[0].buf.get()),
                        Arg::B(params[1].buf.get()),
                        Arg::B(params[2].buf.get()),
                        Arg::B(params[3].buf.get()),
                        Arg::B(y.buf.get()),
                        Arg::I(int(x.len())?),
                        Arg::I(int(c)?),
                        Arg::I(int(inner)?),
                        Arg::F(*eps),
                        Arg::I(i32::from(*relu)),
                    ],
                    &[x.len()],
                    None,
                )?;
                Ok(y)
            }
            Op::Softmax { axis, legacy } => {
                let r = x.shape.len();
                let a = axis_index(*axis, r.max(1))?;
                let outer: usize = x.shape[..a.min(r)].iter().product();
                let (len, inner) = if *legacy {
                    (x.shape[a.min(r)..].iter().product(), 1)
                } else {
                    (
                        x.shape.get(a).copied().unwrap_or(1),
                        x.shape[(a + 1).min(r)..].iter().product(),
                    )
                };
                let y = self.alloc(x.shape.clone())?;
                self.launch(
                    "softmax",
                    &[
                        Arg::B(x.buf.get()),
                        Arg::B(y.buf.get()),
                        Arg::I(int(outer)?),
                        Arg::I(int(len)?),
                        Arg::I(int(inner)?),
                    ],
                    &[outer * inner],
                    None,
                )?;
                Ok(y)
            }
            Op::Flatten { axis } => {
                let r = x.shape.len();
                let a = if *axis < 0 { axis + r as i64 } else { *axis };
                if a < 0 || a as usize > r {
                    return Err(format!("Flatten axis {axis} is out of range for rank {r}"));
                }
                let a = a as usize;
                let mut y = x.clone();
                y.shape = vec![x.shape[..a].iter().product(), x.shape[a..].iter().product()];
                Ok(y)
            }
            Op::Reshape { shape, allowzero } => {
                let shape = shape
                    .as_ref()
                    .ok_or("Reshape's shape is unresolved (this is a bug)")?;
                let mut y = x.clone();
                y.shape = reshape(&x.shape, shape, *allowzero)?;
                Ok(y)
            }
            Op::Concat { axis } => {
                let parts: Vec<&DevTensor> = inputs.iter().flatten().collect();
                self.concat(&parts, *axis)
            }
        }
    }

    /// `act(y + res)` by the elementwise kernels, for the paths whose kernel does not fuse them.
    pub(super) fn finish<'a>(
        &mut self,
        y: DevTensor<'a>,
        res: Option<&DevTensor<'a>>,
        act: Act,
    ) -> Result<DevTensor<'a>, String> {
        let (y, act) = match res {
            Some(r) => {
                let relu = act == Act::Relu;
                let s = self.binary(&y, r, 0, relu)?;
                self.recycle(y);
                (s, if relu { Act::None } else { act })
            }
            None => (y, act),
        };
        let Some(code) = act.unary_code() else {
            return Ok(y);
        };
        let (lo, hi) = act.bounds();
        let out = self.alloc(y.shape.clone())?;
        self.launch(
            "unary",
            &[
                Arg::B(y.buf.get()),
                Arg::B(out.buf.get()),
                Arg::I(int(y.len())?),
                Arg::I(code),
                Arg::F(lo),
                Arg::F(hi),
            ],
            &[y.len()],
            None,
        )?;
        self.recycle(y);
        Ok(out)
    }

    pub(super) fn binary<'a>(
        &mut self,
        a: &DevTensor<'a>,
        b: &DevTensor<'a>,
        code: i32,
        relu: bool,
    ) -> Result<DevTensor<'a>, String> {
        let out = broadcast(&a.shape, &b.shape)
            .ok_or_else(|| format!("shapes {:?} and {:?} do not broadcast", a.shape, b.shape))?;
        let y = self.alloc(out.clone())?;
        let n = y.len();
        if a.shape == out && b.shape == out {
            self.launch(
                "binary_same",
                &[
                    Arg::B(a.buf.get()),
                    Arg::B(b.buf.get()),
                    Arg::B(y.buf.get()),
                    Arg::I(int(n)?),
                    Arg::I(code),
                    Arg::I(i32::from(relu)),
                ],
                &[n],
                None,
            )?;
            return Ok(y);
        }
        let rank = out.len().max(1);
        let mut meta: Vec<i32> = Vec::with_capacity(3 * rank);
        let dims = if out.is_empty() { vec![1] } else { out.clone() };
        for d in &dims {
            meta.push(int(*d)?);
        }
        for s in bcast_strides(&a.shape, &dims, 1)
            .into_iter()
            .chain(bcast_strides(&b.shape, &dims, 1))
        {
            meta.push(int(s)?);
        }
        // SAFETY: COPY_HOST_PTR reads `meta` during the call only.
        let meta_buf = unsafe {
            Buffer::<i32>::create(
                self.context,
                CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                meta.len(),
                meta.as_mut_ptr().cast(),
            )
        }
        .map_err(|e| format!("allocating broadcast metadata: {e}"))?;
        self.launch(
            "binary_bcast",
            &[
                Arg::B(a.buf.get()),
                Arg::B(b.buf.get()),
                Arg::B(y.buf.get()),
                Arg::Ints(&meta_buf),
                Arg::I(int(rank)?),
                Arg::I(int(n)?),
                Arg::I(code),
                Arg::I(i32::from(relu)),
            ],
            &[n],
            None,
        )?;
        // The kernel reads the metadata after this returns: keep it until the run ends.
        self.meta.push(meta_buf);
        Ok(y)
    }

    fn concat<'a>(&mut self, parts: &[&DevTensor<'a>], axis: i64) -> Result<DevTensor<'a>, String> {
        let first = parts.first().ok_or("Concat of nothing")?;
        let r = first.shape.len();
        let a = axis_index(axis, r)?;
        let mut out = first.shape.clone();
        out[a] = 0;
        for p in parts {
            if p.shape.len() != r
                || p.shape
                    .iter()
                    .enumerate()
                    .any(|(d, &v)| d != a && v != first.shape[d])
            {
                return Err(format!(
                    "Concat: shapes {:?} and {:?} differ off axis {a}",
                    first.shape, p.shape
                ));
            }
            out[a] += p.shape[a];
        }
        let outer: usize = out[..a].iter().product();
        let inner: usize = out[a + 1..].iter().product();
        let y = self.alloc(out.clone())?;
        let mut offset = 0;
        for p in parts {
            let len = p.shape[a] * inner;
            self.launch(
                "copy_rows",
                &[
                    Arg::B(p.buf.get()),
                    Arg::B(y.buf.get()),
                    Arg::I(int(outer)?),
                    Arg::I(int(len)?),
                    Arg::I(int(len)?),
                    Arg::I(0),
                    Arg::I(int(out[a] * inner)?),
                    Arg::I(int(offset * inner)?),
                ],
                &[outer * len],
                None,
            )?;
            offset += p.shape[a];
        }
        Ok(y)
    }
}
