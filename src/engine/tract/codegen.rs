//! tract's codegen passes, with the model compacted after every few constants folded.
//!
//! Codegen wires a packing op behind every convolution and matrix-product weight, and its
//! constant-folding pass (`PropConst`) then packs them all before the model is compacted:
//! until then each unpacked weight stays in the graph beside its packed copy, so a load
//! held the weights twice (resnet: 12 MB packed on top of 12 MB unpacked, the load's peak
//! RSS). Here that pass stops once its folds have taken [`RUN_BYTES`] of constants, and
//! tract's optimizer compacts the model before running it again: an unpacked weight nothing
//! else holds is freed soon after its packed copy exists, and the freed pages go back to the
//! system once they add up to [`FREED_BOUND`]. The folds, and the graph they leave, are
//! tract's own.

use std::collections::HashSet;
use tract_onnx::prelude::{TractResult, TypedModel, TypedModelPatch};
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::optim::{Optimizer, OptimizerSession, TypedPass};

/// The most freed heap memory kept between runs of the folding pass: jemalloc would return
/// what the folds free (unpacked weights, which packed copies of other sizes do not reuse) a
/// second later, and meanwhile their leftovers add to the load's peak.
const FREED_BOUND: usize = 4 << 20;

/// tract's `Optimizer::codegen`, its constant-folding pass run again after every
/// [`RUN_BYTES`] of folded constants (see the module's documentation).
pub(super) fn optimizer() -> Optimizer {
    let mut optimizer = Optimizer::codegen();
    for pass in &mut optimizer.passes {
        if is_const_folding(pass.as_ref()) {
            *pass = Box::new(FoldRunsByBytes {
                inner: pass.clone(),
                folded: 0,
            });
        }
    }
    optimizer
}

/// Whether `pass` is tract's constant folding (a private type, known by its name).
fn is_const_folding(pass: &dyn TypedPass) -> bool {
    format!("{pass:?}").starts_with("PropConst")
}

/// A pass whose run ends once its folds have taken [`RUN_BYTES`] of constants: tract's
/// optimizer runs it again, compacting the model first, as long as it gives patches. Folds
/// of small constants (shapes, small weights) share a run, so a deep graph of small weights
/// is compacted a few times, not once per fold.
#[derive(Clone, Debug)]
struct FoldRunsByBytes {
    inner: Box<dyn TypedPass>,
    /// Bytes of constants the folds of this run have taken.
    folded: usize,
}

/// The bytes of constants a run folds before it ends and the model is compacted: resnet's
/// larger weights end a run each, a deep graph of small weights is compacted every few dozen
/// folds (compacting after every fold took a 1,200-node graph's load from 0.9 to 1.9 s).
const RUN_BYTES: usize = 1 << 20;

impl TypedPass for FoldRunsByBytes {
    fn reset(&mut self) -> TractResult<()> {
        self.folded = 0;
        self.inner.reset()
    }

    fn next(
        &mut self,
        session: &mut OptimizerSession,
        model: &TypedModel,
    ) -> TractResult<Option<TypedModelPatch>> {
        if self.folded >= RUN_BYTES {
            return Ok(None);
        }
        if self.folded == 0 {
            crate::alloc::release_freed_heap_over(FREED_BOUND);
        }
        let patch = self.inner.next(session, model)?;
        if let Some(patch) = &patch {
            self.folded += constants_behind(patch, model).max(1);
        }
        Ok(patch)
    }

    fn run_direct(&mut self, model: &mut TypedModel) -> TractResult<bool> {
        self.inner.run_direct(model)
    }
}

/// The bytes of the constants of `model` that `patch`'s replaced outlets are computed from
/// (tract's constant folding replaces nodes whose inputs are all constants).
fn constants_behind(patch: &TypedModelPatch, model: &TypedModel) -> usize {
    let mut bytes = 0;
    let mut seen = HashSet::new();
    let mut stack: Vec<usize> = patch.shunts.keys().map(|o| o.node).collect();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(node) = model.nodes().get(id) else {
            continue;
        };
        match node.op_as::<Const>() {
            Some(c) => bytes += c.val().len() * c.val().datum_type().size_of(),
            None => stack.extend(node.inputs.iter().map(|i| i.node)),
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_tracts_constant_folding_pass_is_run_by_bytes_folded() {
        let wrapped: Vec<bool> = optimizer()
            .passes
            .iter()
            .map(|p| format!("{p:?}").starts_with("FoldRunsByBytes"))
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
