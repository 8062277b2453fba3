//! Clearing the vector registers' upper halves before the ops that run between tract's
//! matrix kernels.
//!
//! tract's AVX-512 matrix kernels return without `vzeroupper`. Until something clears them,
//! legacy-SSE instructions (Rust code built for baseline x86-64: tract's element-wise,
//! binary and pooling ops, ndarray's loops) run slower on the registers' dirty upper halves.
//! Each op wrapped here issues `vzeroupper` and then runs as tract's own: lenet +5 % and
//! resnet +2 % inferences/s in process (`scoria bench -c 1`, alternating runs).

use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;
use tract_onnx::tract_core::ops::source::TypedSource;

/// One of tract's ops, run after clearing the upper halves of the vector registers; in
/// every other respect (name, facts, state) the op it wraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ZeroUpper(Box<dyn TypedOp>);

impl Op for ZeroUpper {
    fn name(&self) -> StaticName {
        self.0.name()
    }

    op_as_typed_op!();
}

impl EvalOp for ZeroUpper {
    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        zero_upper();
        self.0.eval(ctx, inputs)
    }

    fn forwards_input(&self) -> Option<usize> {
        self.0.forwards_input()
    }

    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        self.0.eval_out_of_plan(inputs)
    }

    fn state(&self, ctx: &EvalContext) -> TractResult<Option<Box<dyn OpState>>> {
        self.0.state(ctx)
    }

    fn drop_session(&self, session: SessionId, node_id: usize) {
        self.0.drop_session(session, node_id)
    }
}

impl TypedOp for ZeroUpper {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.0.output_facts(inputs)
    }

    as_op!();
}

/// `vzeroupper`; only called where the CPU has AVX (checked by [`wrap`]).
fn zero_upper() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: ops are wrapped only where the CPU has AVX.
    unsafe {
        avx_zero_upper()
    }
}

/// `vzeroupper` where the CPU has AVX, else nothing: after a plan's run, whose last op may
/// be a matrix kernel, so that the serving code that takes its outputs does not run on
/// dirty upper halves.
pub(super) fn after_run() {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") {
        zero_upper();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn avx_zero_upper() {
    std::arch::x86_64::_mm256_zeroupper();
}

/// Whether `op` runs code of its own that is not a matrix kernel: not tract's matrix product
/// (whose kernels are AVX code), nor a model's inputs and constants, nor a lazy im2col
/// (packed inside the matrix product's run).
fn runs_between_kernels(op: &dyn TypedOp) -> bool {
    !(op.is::<OptMatMul>()
        || op.is::<TypedSource>()
        || op.is::<Const>()
        || op.is::<ZeroUpper>()
        || op.is::<super::im2col::Im2colRuns>()
        || op.name() == super::im2col::LAZY_IM2COL)
}

/// Wraps every op of `model`, an optimized plan, that runs between tract's matrix kernels,
/// where the CPU has AVX; returns how many.
pub(super) fn wrap(model: &mut TypedModel) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx") {
        let mut wrapped = 0;
        for id in 0..model.nodes().len() {
            if runs_between_kernels(model.node(id).op.as_ref()) {
                let inner = model.node(id).op.clone();
                model.node_mut(id).op = Box::new(ZeroUpper(inner));
                wrapped += 1;
            }
        }
        return wrapped;
    }
    let _ = model;
    0
}
