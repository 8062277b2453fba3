//! Convolution patches packed by runs of contiguous input, put in place of tract's
//! `LazyIm2col` once a model is optimized.
//!
//! tract lowers a batch-1 convolution to a matrix product whose right operand is the
//! input's patches (im2col), packed one panel of `r` output positions at a time while the
//! product runs. Its packer reads every element through two offset tables in legacy SSE
//! code, which runs between tract's AVX kernels; those return without `vzeroupper`, so each
//! SSE move waits on the registers' upper halves: on lenet that packing was 30 % of the
//! model's CPU time and on resnet 27 %. Along an output row, a stride-1 convolution reads
//! consecutive input elements, so a panel is one or a few runs of contiguous memory: one run
//! is copied row by row, in AVX2 code where the CPU has it (4x faster in place than SSE),
//! and a panel of several runs (a row crossing, stride 2) is gathered by its columns.
//!
//! tract's op is not public, so its tables are read back by packing a probe input whose
//! every element holds its own index; [`Patches`] keeps them as runs, and is only used when
//! it packs that probe exactly as tract does, panel for panel.

use pack::{pack, push_runs, Run};
use std::alloc::Layout;
use std::fmt;
use std::sync::Arc;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::tract_linalg::mmm::{
    EagerPackedInput, MMMInputFormat, MMMInputValue, PackedMatrixStorage,
};

/// The name tract's lazy im2col op reports.
pub(super) const LAZY_IM2COL: &str = "LazyIm2col";

/// A probe holds indices as f32, exact up to 2^24.
const MAX_PROBE_LEN: usize = 1 << 24;

/// Where one convolution's patches come from: the input offset of each row of the packed
/// operand (`k`) and the runs of each panel of `r` columns (`mn`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Patches {
    r: usize,
    mn: usize,
    k_offsets: Vec<isize>,
    /// Panel `i`'s runs are `runs[panels[i]..panels[i + 1]]`.
    panels: Vec<usize>,
    runs: Vec<Run>,
    /// Panel `i`'s `r` columns are `columns[i * r..(i + 1) * r]`, the input element each
    /// reads at row offset 0 (a partial panel repeats its last).
    columns: Vec<i32>,
    /// One past the largest element a panel reads: the input must be at least this long.
    span: usize,
    format: Box<dyn MMMInputFormat>,
    layout: Layout,
}

impl Patches {
    /// The tables of `original`, tract's packed f32 operand of `k` rows and `mn` columns
    /// over `probe` (element `i` holding `i`), read back panel by panel; each panel is
    /// packed from them too and must come out as tract packed it.
    fn read_back(original: &dyn MMMInputValue, probe: &[f32]) -> TractResult<Patches> {
        let (k, mn, r) = (original.k(), original.mn(), original.format().r());
        let layout = original
            .scratch_panel_buffer_layout()
            .context("an im2col operand packs into a scratch panel")?;
        ensure!(
            k > 0 && mn > 0 && r > 0 && layout.size() >= k * r * 4,
            "unexpected panel geometry k={k} mn={mn} r={r} {layout:?}"
        );
        let (mut theirs, mut ours) = (Panel::new(layout), Panel::new(layout));
        let (mut k_offsets, mut k_low, mut k_high) = (Vec::new(), 0, 0);
        let (mut panels, mut runs, mut span) = (Vec::new(), Vec::new(), 0);
        let mut gathered: Vec<i32> = Vec::with_capacity(mn.div_ceil(r) * r);
        for panel in 0..mn.div_ceil(r) {
            let packed = original.panel_bytes(panel, Some(theirs.ptr()))? as *const f32;
            // SAFETY: a panel of k rows of r f32 lies at `packed`, in `theirs` or in the
            // operand, until the next call.
            let packed = unsafe { std::slice::from_raw_parts(packed, k * r) };
            if panel == 0 {
                k_offsets = (0..k)
                    .map(|row| packed[row * r] as isize - packed[0] as isize)
                    .collect();
                k_low = k_offsets.iter().min().copied().unwrap_or(0);
                k_high = k_offsets.iter().max().copied().unwrap_or(0);
            }
            let width = r.min(mn - panel * r);
            let columns: Vec<isize> = packed[..width].iter().map(|&i| i as isize).collect();
            let low = columns.iter().min().copied().unwrap_or(0) + k_low;
            let high = columns.iter().max().copied().unwrap_or(0) + k_high;
            ensure!(
                low >= 0 && (high as usize) < probe.len(),
                "panel {panel} reads {low}..={high} of an input of {}",
                probe.len()
            );
            span = span.max(high as usize + 1);
            let first = runs.len();
            panels.push(first);
            push_runs(&columns, &mut runs);
            let last = columns.last().copied().unwrap_or(0);
            // Below 2^24 (MAX_PROBE_LEN), as the probe's values are.
            gathered.extend((0..r).map(|j| columns.get(j).copied().unwrap_or(last) as i32));
            let out = ours.ptr() as *mut f32;
            // SAFETY: every element the runs read is within the probe (checked above), and
            // `ours` holds k * r f32.
            let packed_here = unsafe {
                let columns = &gathered[panel * r..];
                pack(r, &k_offsets, &runs[first..], columns, probe.as_ptr(), out);
                std::slice::from_raw_parts(out as *const f32, k * r)
            };
            if width == r {
                ensure!(
                    same_bits(packed, packed_here),
                    "panel {panel} packs differently"
                );
            } else {
                for row in 0..k {
                    let at = row * r..row * r + width;
                    ensure!(
                        same_bits(&packed[at.clone()], &packed_here[at]),
                        "panel {panel} row {row} packs differently"
                    );
                }
            }
        }
        panels.push(runs.len());
        Ok(Patches {
            r,
            mn,
            k_offsets,
            panels,
            runs,
            columns: gathered,
            span,
            format: tract_onnx::tract_core::dyn_clone::clone_box(original.format()),
            layout,
        })
    }

    /// Packs panel `panel` of `input` into `out`, `k` rows of `r` columns; what columns past
    /// the operand's last hold is unspecified, as with tract's packer (the product discards
    /// them).
    ///
    /// # Safety
    /// `input` holds at least `span` elements and `out` at least `k * r`.
    unsafe fn pack(&self, input: *const f32, panel: usize, out: *mut f32) {
        let runs = &self.runs[self.panels[panel]..self.panels[panel + 1]];
        let columns = &self.columns[panel * self.r..(panel + 1) * self.r];
        // SAFETY: the runs and columns of a panel read within `span` (checked when read
        // back).
        unsafe { pack(self.r, &self.k_offsets, runs, columns, input, out) }
    }
}

/// Whether `a` and `b` hold the same bits, compared without branching per element (the
/// comparison of every packed panel was most of a model's probing at load).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .fold(0, |differ, (x, y)| differ | (x.to_bits() ^ y.to_bits()))
            == 0
}

/// A scratch panel allocated with the layout the packed operand asks for.
struct Panel {
    ptr: *mut u8,
    layout: Layout,
}

impl Panel {
    fn new(layout: Layout) -> Panel {
        // SAFETY: `layout` has a non-zero size (checked by the caller: k * r * 4 > 0).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Panel { ptr, layout }
    }

    fn ptr(&mut self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for Panel {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// The packed operand over one input, as tract's `LazyIm2colInput` but packed by runs.
#[derive(Clone)]
struct PatchesOf {
    input: TValue,
    /// `input`'s f32 data, which `input` keeps alive and never moves.
    data: *const f32,
    patches: Arc<Patches>,
}

// SAFETY: `data` points into `input`'s immutable buffer, shared as `input` is.
unsafe impl Send for PatchesOf {}
// SAFETY: as above; packing only reads through `data`.
unsafe impl Sync for PatchesOf {}

impl PatchesOf {
    fn new(input: TValue, patches: Arc<Patches>) -> TractResult<PatchesOf> {
        let data = {
            let plain = input.try_as_plain_ram()?;
            let values = plain.as_slice::<f32>()?;
            ensure!(
                values.len() >= patches.span,
                "im2col input of {} elements, its patches read {}",
                values.len(),
                patches.span
            );
            values.as_ptr()
        };
        Ok(PatchesOf {
            input,
            data,
            patches,
        })
    }
}

impl fmt::Debug for PatchesOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PatchesOf({:?}, k={} mn={})",
            self.input.shape(),
            self.k(),
            self.mn()
        )
    }
}

impl fmt::Display for PatchesOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::hash::Hash for PatchesOf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.input.as_bytes(), &*self.patches).hash(state);
    }
}

impl PartialEq for PatchesOf {
    fn eq(&self, other: &Self) -> bool {
        self.patches == other.patches && self.input == other.input
    }
}

impl Eq for PatchesOf {}

impl MMMInputValue for PatchesOf {
    fn format(&self) -> &dyn MMMInputFormat {
        &*self.patches.format
    }

    fn scratch_panel_buffer_layout(&self) -> Option<Layout> {
        Some(self.patches.layout)
    }

    fn panel_bytes(&self, i: usize, buffer: Option<*mut u8>) -> TractResult<*const u8> {
        let out = buffer.context("im2col packs into a scratch panel")?;
        ensure!(
            i < self.patches.panels.len() - 1,
            "panel {i} of {}",
            self.patches.panels.len() - 1
        );
        // SAFETY: `data` holds at least `span` elements (checked in `new`) and the scratch
        // panel has the layout `scratch_panel_buffer_layout` gave, k * r f32 or more.
        unsafe { self.patches.pack(self.data, i, out as *mut f32) };
        Ok(out)
    }

    fn mn(&self) -> usize {
        self.patches.mn
    }

    fn k(&self) -> usize {
        self.patches.k_offsets.len()
    }

    fn exotic_fact(&self) -> &dyn ExoticFact {
        self
    }

    fn extract_at_mn_f16(&self, _mn: usize, _slice: &mut [f16]) -> TractResult<()> {
        bail!("im2col patches are not extracted")
    }

    fn extract_at_mn_f32(&self, _mn: usize, _slice: &mut [f32]) -> TractResult<()> {
        bail!("im2col patches are not extracted")
    }
}

impl ExoticFact for PatchesOf {
    fn buffer_sizes(&self) -> TVec<TDim> {
        tvec!((self.k() * self.mn() * 4).to_dim())
    }
}

/// Packs a batch-1, ungrouped f32 convolution's patches by runs; stands for tract's
/// `LazyIm2col` node it replaced, whose output fact it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Im2colRuns {
    patches: Arc<Patches>,
    fact: TypedFact,
}

impl Op for Im2colRuns {
    fn name(&self) -> StaticName {
        "Im2colRuns".into()
    }

    op_as_typed_op!();
}

impl EvalOp for Im2colRuns {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let value: Box<dyn MMMInputValue> = Box::new(PatchesOf::new(input, self.patches.clone())?);
        let output =
            PackedMatrixStorage::new_batched(&[1, 1], tvec![value]).into_tensor(f32::datum_type());
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Im2colRuns {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].datum_type == f32::datum_type(),
            "Im2colRuns takes f32, got {:?}",
            inputs[0].datum_type
        );
        Ok(tvec!(self.fact.clone()))
    }

    as_op!();
}

impl Im2colRuns {
    /// The replacement for `node`, tract's lazy im2col over an f32 input of concrete shape
    /// in `model`, when its tables read back and pack a probe exactly as it does.
    fn replacing(model: &TypedModel, node: &TypedNode) -> TractResult<Option<Im2colRuns>> {
        if node.op.name() != LAZY_IM2COL || node.inputs.len() != 1 {
            return Ok(None);
        }
        let input = model.outlet_fact(node.inputs[0])?;
        let fact = model.outlet_fact(OutletId::new(node.id, 0))?.clone();
        let Some(shape) = input.shape.as_concrete() else {
            return Ok(None);
        };
        let len: usize = shape.iter().product();
        if input.datum_type != f32::datum_type()
            || len == 0
            || len > MAX_PROBE_LEN
            || fact.shape.as_concrete() != Some(&[1, 1][..])
        {
            return Ok(None);
        }
        let indices: Vec<f32> = (0..len).map(|i| i as f32).collect();
        let probe = Tensor::from_shape(shape, &indices)?;
        let Some(outputs) = node.op.eval_out_of_plan(tvec![probe.into_tvalue()])? else {
            return Ok(None);
        };
        let storage = outputs[0].try_storage_as::<PackedMatrixStorage>()?;
        let original = storage.value();
        if original.downcast_ref::<EagerPackedInput>().is_some() {
            return Ok(None);
        }
        let patches = Arc::new(Patches::read_back(original, &indices)?);
        Ok(Some(Im2colRuns { patches, fact }))
    }
}

/// Puts an [`Im2colRuns`] in place of every tract lazy im2col in `model`, an optimized
/// model, that it packs alike; any other is left to tract.
pub(super) fn substitute(model: &mut TypedModel) -> TractResult<()> {
    for id in 0..model.nodes().len() {
        match Im2colRuns::replacing(model, model.node(id)) {
            Ok(Some(op)) => model.node_mut(id).op = Box::new(op),
            Ok(None) => {}
            Err(e) => tracing::debug!("{}: tract's im2col kept ({e:#})", model.node(id).name),
        }
    }
    Ok(())
}

/// Whether `model`, an optimized plan, packs a convolution's patches image by image (tract's
/// lazy im2col, or an [`Im2colRuns`] in its place). tract makes such patches only for a
/// single image: the same convolution over a batch of more materialises every patch first
/// (its eager `Im2col`), which costs two to four times as much per row (lenet, resnet), so
/// a plan that does this runs a batch fastest one row at a time.
pub(super) fn packs_per_image(model: &TypedModel) -> bool {
    model
        .nodes()
        .iter()
        .any(|node| node.op.name() == LAZY_IM2COL || node.op.downcast_ref::<Im2colRuns>().is_some())
}

mod pack;
#[cfg(test)]
mod tests;
