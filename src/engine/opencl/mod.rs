//! The OpenCL engine (`backend = "opencl"`): ONNX nodes with kernels run on an OpenCL device
//! (FPGA with a prebuilt binary, GPU, or CPU through e.g. PoCL); the rest run in CPU segments,
//! on tract or ONNX Runtime (`[opencl] cpu_backend`). Tensors cross between host and device only where a device node reads a host
//! value or a CPU segment (or the caller) reads a device value.
//!
//! Each instance (engine) has its own context, command queue, kernels and buffer pool; a run
//! holds the instance's kernels for its duration (kernel arguments are per-object state), so
//! instances run in parallel and nothing is shared between them on the hot path.

mod buffers;
mod conv;
pub(crate) mod cpu;
pub mod device;
mod exec;
pub(crate) mod graph;
mod matmul;
mod ops;
pub mod partition;
pub mod program;
mod shapes;
pub(crate) mod specs;
#[cfg(test)]
mod tests;
mod tiling;

use super::{Backend, Engine, EngineError, LoadOptions, Placement, TensorSpec};
use crate::tensor::Tensor;
use buffers::{Buf, DevTensor, Pool};
use device::DeviceKind;
use exec::{Ctx, Kernels};
use graph::Graph;
use opencl3::command_queue::CommandQueue;
use opencl3::context::Context;
use opencl3::memory::{Buffer, CL_MEM_COPY_HOST_PTR, CL_MEM_READ_ONLY};
use partition::Step;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tiling::default_wg;
use tract_onnx::prelude::{IntoTValue, TValue, TVec, Tensor as TractTensor};

/// Serialises engine loads (see [`OpenclEngine::load`]).
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// `[opencl]` in `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenclConfig {
    /// `None`: the first accelerator, else GPU, else CPU.
    pub device: Option<DeviceKind>,
    /// Substring of the platform name or vendor (case-insensitive).
    pub platform: Option<String>,
    /// Run nodes without kernels on the CPU (`true`), or refuse to load (`false`).
    pub fallback: bool,
    /// A prebuilt program binary (`.aocx`, `.xclbin`, or one saved from another device).
    pub binary: Option<PathBuf>,
    /// The CPU engine that runs the CPU segments.
    pub cpu_backend: CpuBackend,
    /// Fuse Add and activations into the kernels that produce their inputs.
    pub fusion: bool,
    /// `[opencl] placement`: `Auto` keeps small models on the CPU.
    pub placement: PlacementMode,
    /// `[opencl] precision`: `fp16` stores Conv weights and columns, and Gemm / MatMul
    /// constant weights, as half (FP32 accumulation).
    pub fp16: bool,
    /// Tests only (not a `config.toml` key): FP16 without the `cl_khr_fp16` check. The
    /// kernels read and write half with core OpenCL functions, so the FP16 path runs on a
    /// device without the extension (PoCL in CI), just not faster.
    #[doc(hidden)]
    pub fp16_unchecked: bool,
}

/// `[opencl] placement`: where the nodes with kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlacementMode {
    /// On the device (the default).
    #[default]
    Device,
    /// On the device when the model's work per sample pays for a device round trip
    /// ([`partition::AUTO_MIN_MACS`] multiply-adds), else all on the CPU.
    Auto,
}

impl PlacementMode {
    pub fn from_name(name: &str) -> Option<PlacementMode> {
        match name {
            "device" => Some(PlacementMode::Device),
            "auto" => Some(PlacementMode::Auto),
            _ => None,
        }
    }
}

/// `[opencl] cpu_backend`: what runs the nodes placed on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuBackend {
    /// tract, optimizing each segment per input-shape signature.
    #[default]
    Tract,
    /// ONNX Runtime, one session per segment with the model's `[ort]` options; needs the
    /// ONNX Runtime library when the model has CPU segments.
    Ort,
}

impl CpuBackend {
    /// The name in `config.toml` and placement reports.
    pub fn name(self) -> &'static str {
        match self {
            CpuBackend::Tract => "tract",
            CpuBackend::Ort => "ort",
        }
    }

    /// Parses a `config.toml` name.
    pub fn from_name(name: &str) -> Option<CpuBackend> {
        match name {
            "tract" => Some(CpuBackend::Tract),
            "ort" => Some(CpuBackend::Ort),
            _ => None,
        }
    }
}

impl Default for OpenclConfig {
    fn default() -> Self {
        OpenclConfig {
            device: None,
            platform: None,
            fallback: true,
            binary: None,
            cpu_backend: CpuBackend::Tract,
            fusion: true,
            placement: PlacementMode::Device,
            fp16: false,
            fp16_unchecked: false,
        }
    }
}

/// Time and bytes moved between host and device, summed over runs.
#[derive(Debug, Default)]
pub struct TransferStats {
    nanos: AtomicU64,
    bytes: AtomicU64,
    runs: AtomicU64,
}

impl TransferStats {
    /// (seconds in transfers, bytes moved, runs)
    pub fn snapshot(&self) -> (f64, u64, u64) {
        (
            self.nanos.load(Ordering::Relaxed) as f64 / 1e9,
            self.bytes.load(Ordering::Relaxed),
            self.runs.load(Ordering::Relaxed),
        )
    }
}

struct RunState {
    kernels: Kernels,
    pool: Pool,
    tiling: tiling::Tiling,
}

pub struct OpenclEngine {
    // Field order is drop order: kernels and buffers before the queue and context.
    state: Mutex<RunState>,
    consts: HashMap<String, Buffer<f32>>,
    dummy: Buffer<f32>,
    host_consts: HashMap<String, Arc<TractTensor>>,
    steps: Vec<Step>,
    /// Per step, the values no later step (nor the caller) reads: their device buffers go
    /// back to the pool for the rest of the run.
    dead_after: Vec<Vec<String>>,
    /// For each step, whether the host reads its output (a graph output or a CPU segment's
    /// input): its buffers are then host-visible (mapped when read back).
    host_out: Vec<bool>,
    queue: CommandQueue,
    context: Context,
    input_names: Vec<String>,
    output_names: Vec<String>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    placement: Placement,
    transfers: TransferStats,
}

fn load_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Load(e.to_string())
}

impl OpenclEngine {
    pub fn load(path: &Path, options: &LoadOptions) -> Result<OpenclEngine, EngineError> {
        let cfg = &options.opencl;
        // The ICD loader's first-call initialisation and some drivers' program builds are
        // not thread-safe: loads take turns (runs do not).
        let _turn = LOAD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let dev = device::select(cfg.device, cfg.platform.as_deref()).map_err(load_err)?;
        if cfg.fp16 && !cfg.fp16_unchecked {
            check_fp16(&dev).map_err(load_err)?;
        }
        let mut g = Graph::load(path).map_err(load_err)?;
        let (inputs, outputs) = specs::specs(&g, options)?;
        let device_label = format!("{} ({})", dev.device_name, dev.platform_name);
        let cpu = match cfg.cpu_backend {
            CpuBackend::Tract => cpu::Runner::Tract,
            CpuBackend::Ort => cpu::Runner::Ort(&options.ort),
        };
        let part = partition::partition(
            &mut g,
            cfg.fallback,
            cfg.fusion,
            cfg.placement == PlacementMode::Auto,
            cfg.fp16,
            &device_label,
            cpu,
        )
        .map_err(load_err)?;
        let context = Context::from_device(&dev.device).map_err(|e| {
            load_err(format!(
                "OpenCL: creating a context on '{}': {e}",
                dev.device_name
            ))
        })?;
        let (program, origin, tune_cache) =
            program::load(&context, &dev, cfg.binary.as_deref()).map_err(load_err)?;
        tracing::debug!("opencl: program {} for {device_label}", origin.name());
        let kernels = Kernels::create(&program).map_err(load_err)?;
        // SAFETY: the device belongs to the context.
        let queue =
            unsafe { CommandQueue::create_with_properties(&context, dev.device.id(), 0, 0) }
                .map_err(|e| load_err(format!("OpenCL: creating a command queue: {e}")))?;
        let mut tiling = tiling::read(&context, &queue, &kernels).map_err(load_err)?;
        let dummy = upload_slice(&context, &[0.0]).map_err(load_err)?;
        let mut pool = Pool::new(dev.device.max_mem_alloc_size().unwrap_or(u64::MAX));
        if !tiling.local {
            let max_wg = dev.device.max_work_group_size().unwrap_or(1);
            tiling.wg = default_wg(max_wg);
            let mut ctx = Ctx {
                context: &context,
                queue: &queue,
                kernels: &kernels,
                pool: &mut pool,
                used: Vec::new(),
                meta: Vec::new(),
                dummy: &dummy,
                tiling,
                host_out: false,
            };
            tiling.wg =
                tiling::choose_wg(&mut ctx, max_wg, tune_cache.as_deref(), tiling::TUNE_BUDGET);
        }
        tracing::debug!("opencl: tiling {tiling:?}");

        // Constants the device reads: upload once.
        let mut host_consts: HashMap<String, Arc<TractTensor>> = g
            .consts
            .iter()
            .map(|(k, (_, t))| (k.clone(), Arc::clone(t)))
            .collect();
        host_consts.extend(part.folded);
        let mut consts = HashMap::new();
        for step in &part.steps {
            if let Step::Device { inputs, op, .. } = step {
                let data: &[String] = match op {
                    ops::Op::Reshape { .. } | ops::Op::Unary { code: 3, .. } => &inputs[..1],
                    _ => inputs,
                };
                for name in data {
                    if let (Some(t), false) = (host_consts.get(name), consts.contains_key(name)) {
                        let buf = if name.ends_with("::f16") {
                            upload_half(&context, t)
                        } else {
                            upload_const(&context, t)
                        }
                        .map_err(load_err)?;
                        consts.insert(name.clone(), buf);
                    }
                }
            }
        }
        Ok(OpenclEngine {
            state: Mutex::new(RunState {
                kernels,
                pool,
                tiling,
            }),
            consts,
            dummy,
            host_consts,
            dead_after: liveness(&part.steps, &g),
            host_out: host_read(&part.steps, &g),
            steps: part.steps,
            queue,
            context,
            input_names: g.inputs.iter().map(|i| i.name.clone()).collect(),
            output_names: g.outputs.iter().map(|o| o.name.clone()).collect(),
            inputs,
            outputs,
            placement: part.placement,
            transfers: TransferStats::default(),
        })
    }

    /// How many constants the device holds as half (`precision = "fp16"`).
    pub fn half_constants(&self) -> usize {
        self.consts.keys().filter(|k| k.ends_with("::f16")).count()
    }

    /// The device steps that read half weights (`precision = "fp16"`), by op: `Conv`, `Gemm`,
    /// `MatMul`, in graph order.
    pub fn half_ops(&self) -> Vec<&'static str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Device {
                    op: ops::Op::Conv { half: true, .. },
                    ..
                } => Some("Conv"),
                Step::Device {
                    op: ops::Op::Gemm { half: true, .. },
                    ..
                } => Some("Gemm"),
                Step::Device {
                    op: ops::Op::MatMul { half: true },
                    ..
                } => Some("MatMul"),
                _ => None,
            })
            .collect()
    }

    /// How many kernel steps a run enqueues (after folding and fusion).
    pub fn device_kernels(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::Device { .. }))
            .count()
    }

    /// How many device buffers the instance's pool holds (every buffer a run took, once the
    /// run is over).
    pub fn pooled_buffers(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.pool.buffers())
            .unwrap_or_default()
    }

    /// How many of those are host-visible (`CL_MEM_ALLOC_HOST_PTR`): the run's inputs and
    /// the buffers of the steps whose output the host reads.
    pub fn pooled_host_buffers(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.pool.host_buffers())
            .unwrap_or_default()
    }

    /// Host↔device transfer totals since load.
    pub fn transfers(&self) -> &TransferStats {
        &self.transfers
    }

    fn execute(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| "the OpenCL instance's state is poisoned (this is a bug)")?;
        let RunState {
            kernels,
            pool,
            tiling,
        } = &mut *state;
        let mut ctx = Ctx {
            context: &self.context,
            queue: &self.queue,
            kernels,
            pool,
            used: Vec::new(),
            meta: Vec::new(),
            dummy: &self.dummy,
            tiling: *tiling,
            host_out: false,
        };
        let result = self.execute_in(&mut ctx, inputs);
        // Everything enqueued must finish before the buffers are reused.
        let finished = self.queue.finish();
        let used = std::mem::take(&mut ctx.used);
        ctx.pool.give_back(used);
        self.transfers.runs.fetch_add(1, Ordering::Relaxed);
        let out = result?;
        finished.map_err(|e| format!("OpenCL: waiting for the device: {e}"))?;
        Ok(out)
    }

    fn execute_in<'a>(&'a self, ctx: &mut Ctx, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let mut values: HashMap<String, Value<'a>> = HashMap::new();
        for (name, t) in self.input_names.iter().zip(inputs) {
            let t = super::tract::to_tract(t).map_err(|e| format!("{e:#}"))?;
            values.insert(name.clone(), Value::host(t.into_tvalue()));
        }
        for ((step, dead), &host_out) in self.steps.iter().zip(&self.dead_after).zip(&self.host_out)
        {
            match step {
                Step::Device { op, inputs, output } => {
                    let data_only =
                        matches!(op, ops::Op::Reshape { .. } | ops::Op::Unary { code: 3, .. });
                    let mut args: Vec<Option<DevTensor<'a>>> = Vec::with_capacity(inputs.len());
                    for (k, name) in inputs.iter().enumerate() {
                        if name.is_empty() || (data_only && k > 0) {
                            args.push(None);
                        } else {
                            args.push(Some(self.device_value(ctx, &mut values, name)?));
                        }
                    }
                    let op = self.resolve(ctx, &mut values, op, inputs)?;
                    let t0 = Instant::now();
                    ctx.host_out = host_out;
                    let y = ctx.run(&op, &args);
                    ctx.host_out = false;
                    let y = y.map_err(|e| format!("{output}: {e}"))?;
                    // Per-node device time (`--log scoria=trace`): waits for each node, so
                    // only for profiling.
                    if tracing::enabled!(tracing::Level::TRACE) {
                        let _ = self.queue.finish();
                        tracing::trace!(
                            "opencl: {output} {:?} {:.3} ms",
                            y.shape,
                            t0.elapsed().as_secs_f64() * 1e3
                        );
                    }
                    values.insert(output.clone(), Value::device(y));
                }
                Step::Cpu(seg) => {
                    let mut ins: TVec<TValue> = TVec::new();
                    for name in &seg.inputs {
                        ins.push(self.host_value(ctx, &mut values, name)?);
                    }
                    let outs = seg.run(ins)?;
                    for (name, v) in seg.outputs.iter().zip(outs) {
                        values.insert(name.clone(), Value::host(v));
                    }
                }
            }
            // The queue is in order: a buffer taken again is written only after the
            // kernels enqueued so far have read it.
            for name in dead {
                if let Some(Value {
                    device: Some(d), ..
                }) = values.remove(name)
                {
                    ctx.recycle(d);
                }
            }
        }
        let mut out = Vec::with_capacity(self.output_names.len());
        for name in &self.output_names {
            let v = self.host_value(ctx, &mut values, name)?;
            out.push(super::tract::from_tract(&v).map_err(|e| format!("{e:#}"))?);
        }
        Ok(out)
    }

    /// `op` with its host-side operands read: a Reshape's shape, a Clip's bounds.
    fn resolve<'o, 'a>(
        &'a self,
        ctx: &mut Ctx,
        values: &mut HashMap<String, Value<'a>>,
        op: &'o ops::Op,
        inputs: &[String],
    ) -> Result<std::borrow::Cow<'o, ops::Op>, String> {
        use std::borrow::Cow;
        match op {
            ops::Op::Reshape {
                shape: None,
                allowzero,
            } => {
                let name = inputs.get(1).ok_or("Reshape without shape")?;
                let t = self.host_value(ctx, values, name)?;
                let shape = graph::elements::<i64>(&t)
                    .ok_or_else(|| format!("Reshape shape '{name}' is not INT64"))?
                    .to_vec();
                Ok(Cow::Owned(ops::Op::Reshape {
                    shape: Some(shape),
                    allowzero: *allowzero,
                }))
            }
            ops::Op::Unary { code: 3, lo, hi } if inputs.len() > 1 => {
                let mut bounds = [*lo, *hi];
                for (slot, b) in bounds.iter_mut().enumerate() {
                    if let Some(name) = inputs.get(slot + 1).filter(|n| !n.is_empty()) {
                        let t = self.host_value(ctx, values, name)?;
                        *b = graph::elements::<f32>(&t)
                            .and_then(|s| s.first().copied())
                            .ok_or_else(|| format!("Clip bound '{name}' is not an FP32 scalar"))?;
                    }
                }
                Ok(Cow::Owned(ops::Op::Unary {
                    code: 3,
                    lo: bounds[0],
                    hi: bounds[1],
                }))
            }
            _ => Ok(Cow::Borrowed(op)),
        }
    }

    /// `name` in device memory, uploading it (once) when it is on the host.
    fn device_value<'a>(
        &'a self,
        ctx: &mut Ctx,
        values: &mut HashMap<String, Value<'a>>,
        name: &str,
    ) -> Result<DevTensor<'a>, String> {
        if let Some(b) = self.consts.get(name) {
            let shape = self
                .host_consts
                .get(name)
                .map(|t| t.shape().to_vec())
                .unwrap_or_default();
            return Ok(DevTensor {
                buf: Buf::Const(b),
                shape,
            });
        }
        let v = values
            .get_mut(name)
            .ok_or_else(|| format!("value '{name}' is not computed (this is a bug)"))?;
        if let Some(d) = &v.device {
            return Ok(d.clone());
        }
        let host = v
            .host
            .as_ref()
            .ok_or("a value with neither copy (this is a bug)")?;
        let data = graph::elements::<f32>(host).ok_or_else(|| {
            format!(
                "value '{name}' is {:?}, the device computes FP32",
                host.datum_type()
            )
        })?;
        let started = Instant::now();
        let d = ctx
            .upload(host.shape().to_vec(), &data)
            .map_err(|e| format!("uploading '{name}': {e}"))?;
        self.count(started, data.len());
        v.device = Some(d.clone());
        Ok(d)
    }

    /// `name` in host memory, downloading it (once) when it is on the device.
    fn host_value<'a>(
        &'a self,
        ctx: &mut Ctx,
        values: &mut HashMap<String, Value<'a>>,
        name: &str,
    ) -> Result<TValue, String> {
        if let Some(t) = self.host_consts.get(name) {
            return Ok(t.as_ref().clone().into_tvalue());
        }
        let v = values
            .get_mut(name)
            .ok_or_else(|| format!("value '{name}' is not computed (this is a bug)"))?;
        if let Some(h) = &v.host {
            return Ok(h.clone());
        }
        let d = v
            .device
            .as_ref()
            .ok_or("a value with neither copy (this is a bug)")?;
        // The kernels that compute it finish first, so the transfer is timed alone.
        self.queue
            .finish()
            .map_err(|e| format!("OpenCL: computing '{name}': {e}"))?;
        let started = Instant::now();
        // Read in place from the mapped buffer (host-visible for the values the host reads)
        // into the tensor: one copy.
        let t = ctx
            .with_mapped(d, |data| TractTensor::from_shape(&d.shape, data))
            .map_err(|e| format!("downloading '{name}': {e}"))?
            .map_err(|e| format!("{e:#}"))?
            .into_tvalue();
        self.count(started, d.len());
        v.host = Some(t.clone());
        Ok(t)
    }

    fn count(&self, started: Instant, floats: usize) {
        self.transfers
            .nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.transfers
            .bytes
            .fetch_add(floats as u64 * 4, Ordering::Relaxed);
    }
}

/// For each step, the values it is the last to read (graph outputs and constants excepted).
fn liveness(steps: &[Step], g: &Graph) -> Vec<Vec<String>> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        let reads: Vec<&String> = match step {
            Step::Device { inputs, .. } => inputs.iter().collect(),
            Step::Cpu(seg) => seg.inputs.iter().collect(),
        };
        for name in reads {
            if !name.is_empty() {
                last.insert(name, i);
            }
        }
    }
    let mut dead = vec![Vec::new(); steps.len()];
    for (name, i) in last {
        if !g.is_output(name) && !g.consts.contains_key(name) {
            dead[i].push(name.to_string());
        }
    }
    dead
}

/// For each step, whether the host reads its output: a graph output, a CPU segment's input,
/// or a host-side operand of a later step (a Reshape's shape, a Clip's bounds).
fn host_read(steps: &[Step], g: &Graph) -> Vec<bool> {
    let mut read: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for step in steps {
        match step {
            Step::Device { op, inputs, .. } => {
                if matches!(op, ops::Op::Reshape { .. } | ops::Op::Unary { code: 3, .. }) {
                    read.extend(inputs.iter().skip(1).map(String::as_str));
                }
            }
            Step::Cpu(seg) => read.extend(seg.inputs.iter().map(String::as_str)),
        }
    }
    steps
        .iter()
        .map(|s| match s {
            Step::Device { output, .. } => g.is_output(output) || read.contains(output.as_str()),
            Step::Cpu(_) => false,
        })
        .collect()
}

/// A value during a run: on the host, on the device, or both once it has crossed.
struct Value<'a> {
    host: Option<TValue>,
    device: Option<DevTensor<'a>>,
}

impl<'a> Value<'a> {
    fn host(t: TValue) -> Self {
        Value {
            host: Some(t),
            device: None,
        }
    }
    fn device(d: DevTensor<'a>) -> Self {
        Value {
            host: None,
            device: Some(d),
        }
    }
}

fn upload_slice(context: &Context, data: &[f32]) -> Result<Buffer<f32>, String> {
    let mut v = if data.is_empty() {
        vec![0.0]
    } else {
        data.to_vec()
    };
    // SAFETY: COPY_HOST_PTR reads `v` during the call only.
    unsafe {
        Buffer::<f32>::create(
            context,
            CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
            v.len(),
            v.as_mut_ptr().cast(),
        )
    }
    .map_err(|e| format!("OpenCL: uploading weights ({} bytes): {e}", v.len() * 4))
}

/// `[opencl] precision = "fp16"` needs `cl_khr_fp16` (devices where half storage pays).
fn check_fp16(dev: &device::Selected) -> Result<(), String> {
    let ext = dev.device.extensions().unwrap_or_default();
    if ext.split_whitespace().any(|e| e == "cl_khr_fp16") {
        return Ok(());
    }
    Err(format!(
        "[opencl] precision = \"fp16\" needs the cl_khr_fp16 extension, which device '{}' ({}) does not have; use precision = \"fp32\"",
        dev.device_name, dev.platform_name
    ))
}

/// A constant as half values, two to a `float` of the buffer.
fn upload_half(context: &Context, t: &TractTensor) -> Result<Buffer<f32>, String> {
    use tract_onnx::prelude::f16;
    let data = graph::elements::<f32>(t).ok_or_else(|| {
        format!(
            "constant of type {:?} where the device reads FP32",
            t.datum_type()
        )
    })?;
    let mut bits: Vec<u16> = data.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
    bits.resize(bits.len().div_ceil(2).max(1) * 2, 0);
    // SAFETY: COPY_HOST_PTR reads `bits` (len / 2 floats' worth of bytes) during the call only.
    unsafe {
        Buffer::<f32>::create(
            context,
            CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
            bits.len() / 2,
            bits.as_mut_ptr().cast(),
        )
    }
    .map_err(|e| format!("OpenCL: uploading weights ({} bytes): {e}", bits.len() * 2))
}

fn upload_const(context: &Context, t: &TractTensor) -> Result<Buffer<f32>, String> {
    let data = graph::elements::<f32>(t).ok_or_else(|| {
        format!(
            "constant of type {:?} where the device reads FP32",
            t.datum_type()
        )
    })?;
    upload_slice(context, &data)
}

impl Engine for OpenclEngine {
    fn backend(&self) -> Backend {
        Backend::Opencl
    }

    fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        self.execute(inputs).map_err(EngineError::Run)
    }

    /// One run at a time per instance: its command queue and buffer pool are locked.
    fn concurrent(&self) -> bool {
        false
    }

    fn placement(&self) -> Option<Placement> {
        Some(self.placement.clone())
    }
}

/// Builds the kernel program from source on the device `cfg` selects and returns its binary:
/// what `[opencl] binary` loads (the GPU/CPU stand-in for an offline FPGA compile).
pub fn build_program_binary(cfg: &OpenclConfig) -> Result<Vec<u8>, String> {
    let _turn = LOAD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dev = device::select(cfg.device, cfg.platform.as_deref()).map_err(|e| e.to_string())?;
    let context = Context::from_device(&dev.device)
        .map_err(|e| format!("OpenCL: creating a context: {e}"))?;
    program::build_binary(&context, &dev)
}
