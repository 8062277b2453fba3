//! tract's codegen passes, with constants folded one at a time.
//!
//! Codegen wires a packing op behind every convolution and matrix-product weight, and its
//! constant-folding pass (`PropConst`) then packs them all before the model is compacted:
//! until then each unpacked weight stays in the graph beside its packed copy, so a load
//! held the weights twice (resnet: 12 MB packed on top of 12 MB unpacked, the load's peak
//! RSS). Here that pass stops after each fold, and tract's optimizer compacts the model
//! before the next one: an unpacked weight nothing else holds is freed as soon as its packed
//! copy exists, and the freed pages go back to the system once they add up to
//! [`FREED_BOUND`]. The folds, and the graph they leave, are tract's own.

use tract_onnx::prelude::{TractResult, TypedModel, TypedModelPatch};
use tract_onnx::tract_core::optim::{Optimizer, OptimizerSession, TypedPass};

/// The most freed heap memory kept between folds: jemalloc would return what a fold frees
/// (an unpacked weight, which packed copies of other sizes do not reuse) a second later, and
/// meanwhile every fold's leftovers add to the load's peak (resnet, profiling build: peak
/// 54 → 45 MiB for ~8 ms more load).
const FREED_BOUND: usize = 4 << 20;

/// tract's `Optimizer::codegen`, its constant-folding pass folding one constant per run
/// (see the module's documentation).
pub(super) fn optimizer() -> Optimizer {
    let mut optimizer = Optimizer::codegen();
    for pass in &mut optimizer.passes {
        if is_const_folding(pass.as_ref()) {
            *pass = Box::new(OneFoldPerRun {
                inner: pass.clone(),
                folded: false,
            });
        }
    }
    optimizer
}

/// Whether `pass` is tract's constant folding (a private type, known by its name).
fn is_const_folding(pass: &dyn TypedPass) -> bool {
    format!("{pass:?}").starts_with("PropConst")
}

/// A pass that gives at most one patch per run: tract's optimizer runs it again, compacting
/// the model first, as long as it gives one.
#[derive(Clone, Debug)]
struct OneFoldPerRun {
    inner: Box<dyn TypedPass>,
    folded: bool,
}

impl TypedPass for OneFoldPerRun {
    fn reset(&mut self) -> TractResult<()> {
        self.folded = false;
        self.inner.reset()
    }

    fn next(
        &mut self,
        session: &mut OptimizerSession,
        model: &TypedModel,
    ) -> TractResult<Option<TypedModelPatch>> {
        if self.folded {
            return Ok(None);
        }
        crate::alloc::release_freed_heap_over(FREED_BOUND);
        let patch = self.inner.next(session, model)?;
        self.folded = patch.is_some();
        Ok(patch)
    }

    fn run_direct(&mut self, model: &mut TypedModel) -> TractResult<bool> {
        self.inner.run_direct(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_tracts_constant_folding_pass_folds_one_constant_per_run() {
        let wrapped: Vec<bool> = optimizer()
            .passes
            .iter()
            .map(|p| format!("{p:?}").starts_with("OneFoldPerRun"))
            .collect();
        assert_eq!(
            wrapped.iter().filter(|w| **w).count(),
            1,
            "tract's codegen has one PropConst pass to wrap: {:?}",
            optimizer().passes
        );
        assert_eq!(wrapped.len(), Optimizer::codegen().passes.len());
    }
}
