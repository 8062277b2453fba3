//! tract's plans of one model: the general plan (symbolic batch) and the plans specialised
//! to one batch size, how many of them a model's weights allow, and where the general plan
//! comes from when it is made on first use.

use super::threads::RunTime;
use super::{import, read_typed, LoadOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::SystemTime;
use tract_onnx::prelude::{
    IntoRunnable, Symbol, TDim, TValue, TVec, TractResult, TypedModel, TypedRunnableModel,
    TypedSimpleState,
};
use tract_onnx::tract_core::ops::konst::Const;

/// At most this many batch-size-specialised plans are kept per engine, however small the
/// model (each costs an optimisation on first use); other sizes run the general plan.
pub const MAX_SPECIALISED: usize = 8;

/// Bytes of weights the batch-size-specialised plans of one engine may hold together: each
/// plan packs its own copy of the model's weights.
pub const PLAN_BYTES: u64 = 16 << 20;

/// How many specialised plans of a model with `weights` bytes of weights fit in `budget`.
pub(super) fn plans_within(weights: u64, budget: u64) -> usize {
    usize::try_from(budget / weights.max(1))
        .unwrap_or(usize::MAX)
        .min(MAX_SPECIALISED)
}

/// The bytes of the model's constants (its weights).
pub(super) fn weight_bytes(model: &TypedModel) -> u64 {
    model
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<Const>())
        .map(|c| (c.val().len() * c.val().datum_type().size_of()) as u64)
        .sum()
}

/// Run states a plan keeps for reuse, at most: one per thread that may run it at once.
const IDLE_STATES: usize = 16;

/// A runnable plan and the run states it has made and got back. `SimplePlan::run` makes a
/// state (a value slot per node, each op's state, a session) and drops it again on every
/// run, which the profile showed as a few percent of a small model's request; tract resets
/// a state's values after each successful run, so a state whose ops keep nothing between
/// runs (every op of the usual ONNX model) serves the next run as a new one would.
pub(super) struct Plan {
    pub(super) runnable: Arc<TypedRunnableModel>,
    /// States back from successful runs; empty and unused when `reuse` is false.
    pub(super) idle: Mutex<Vec<TypedSimpleState>>,
    /// No op of the plan has a state of its own.
    reuse: bool,
    /// How long its last run took.
    time: RunTime,
}

impl Plan {
    /// The plan of `model`, optimized (with scoria's kernels, [`super::optimize`]).
    pub(super) fn optimized(model: TypedModel) -> TractResult<Arc<Plan>> {
        Plan::new(super::optimize(model)?.into_runnable()?)
    }

    pub(super) fn new(runnable: Arc<TypedRunnableModel>) -> TractResult<Arc<Plan>> {
        let state = runnable.spawn()?;
        let reuse = state.op_states.iter().all(Option::is_none);
        let idle = if reuse { vec![state] } else { Vec::new() };
        Ok(Arc::new(Plan {
            runnable,
            idle: Mutex::new(idle),
            reuse,
            time: RunTime::default(),
        }))
    }

    /// Runs the plan on `inputs`, over the cores when it has them to itself
    /// ([`super::threads::run`]). A state that failed is dropped, not reused.
    pub(super) fn run(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        super::threads::run(&self.time, || self.run_here(inputs))
    }

    fn run_here(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        if !self.reuse {
            let outputs = self.runnable.run(inputs);
            super::upper::after_run();
            return outputs;
        }
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut state = match idle {
            Some(state) => state,
            None => self.runnable.spawn()?,
        };
        let outputs = state.run(inputs);
        super::upper::after_run();
        let outputs = outputs?;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_STATES {
            idle.push(state);
        }
        Ok(outputs)
    }

    /// Whether the plan packs convolution patches image by image, so that batches of more
    /// rows run fastest as runs of this plan, one row each (see [`super::im2col::packs_per_image`]).
    pub(super) fn packs_per_image(&self) -> bool {
        super::im2col::packs_per_image(self.runnable.model())
    }

    /// Whether run states are kept for reuse.
    #[cfg(test)]
    pub(super) fn reuses_states(&self) -> bool {
        self.reuse
    }
}

/// The general plan: optimized at load when it is the only plan; on first use when
/// specialised plans answer the common sizes, so a model that only ever gets those never pays
/// for it (optimizing and packing weights is most of a load).
pub(super) struct General {
    pub(super) plan: OnceLock<Arc<Plan>>,
    /// What to optimize it from, until it is.
    pub(super) source: Mutex<Option<Source>>,
}

/// Where the general plan comes from on first use.
pub(super) enum Source {
    /// The typed model, kept anyway (its weights are shared with the specialised plans'
    /// source).
    Typed(TypedModel),
    /// The model file, read and typed again: nothing of the model is held until then.
    File(ModelFile),
}

/// A model file as it was at load, to be read again.
pub(super) struct ModelFile {
    pub(super) path: PathBuf,
    pub(super) options: LoadOptions,
    pub(super) stamp: Stamp,
}

/// What tells a changed file from the one that was loaded: its length and modification time.
#[derive(PartialEq, Eq, Debug)]
pub(super) struct Stamp(u64, Option<SystemTime>);

impl Stamp {
    pub(super) fn of(path: &Path) -> std::io::Result<Stamp> {
        let meta = std::fs::metadata(path)?;
        Ok(Stamp(meta.len(), meta.modified().ok()))
    }
}

impl ModelFile {
    /// The typed model, read from the file if it is still the one that was loaded.
    fn typed(&self) -> anyhow::Result<TypedModel> {
        let changed = || {
            anyhow::anyhow!(
                "{} changed on disk since the model was loaded, so its general plan (for this \
                 batch size) cannot be made; reload the model",
                self.path.display()
            )
        };
        if Stamp::of(&self.path).map_err(|_| changed())? != self.stamp {
            return Err(changed());
        }
        // As at load, a panic left in tract's importer is an error, not a crash.
        let typed = import::contain("tract", || read_typed(&self.path, &self.options))?;
        Ok(typed.model)
    }
}

impl General {
    pub(super) fn ready(plan: Arc<Plan>) -> General {
        General {
            plan: OnceLock::from(plan),
            source: Mutex::new(None),
        }
    }

    pub(super) fn on_use(source: Source) -> General {
        General {
            plan: OnceLock::new(),
            source: Mutex::new(Some(source)),
        }
    }

    /// The plan, optimized now if it is not yet (callers meanwhile wait for it). A source
    /// that fails stays, so that a file restored in place serves again.
    pub(super) fn get(&self) -> TractResult<Arc<Plan>> {
        if let Some(plan) = self.plan.get() {
            return Ok(Arc::clone(plan));
        }
        let mut source = self.source.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(plan) = self.plan.get() {
            return Ok(Arc::clone(plan));
        }
        let typed = match source.as_ref() {
            Some(Source::Typed(typed)) => typed.clone(),
            Some(Source::File(file)) => file.typed()?,
            None => anyhow::bail!("the general plan failed to optimize earlier"),
        };
        let plan = Plan::optimized(typed)?;
        *source = None;
        Ok(Arc::clone(self.plan.get_or_init(|| plan)))
    }
}

/// Plans with the batch symbol fixed to one size each, and what it takes to make more.
pub(super) struct Specialised {
    /// The typed model before optimization, from which plans are derived; kept only while
    /// sizes other than those prepared at load get a plan on first use (models behind the
    /// dynamic batcher, whose batch sizes are bounded by `max_batch_size`) and `limit`
    /// allows more.
    pub(super) model: Option<TypedModel>,
    symbol: Symbol,
    pub(super) plans: RwLock<HashMap<usize, Arc<Plan>>>,
    /// The most plans kept (see [`plans_within`]).
    limit: usize,
    /// Held while a plan is being optimized on first use, so one size is optimized once and
    /// other requests meanwhile run the general plan instead of waiting.
    building: Mutex<()>,
}

impl Specialised {
    /// Plans for batch 1 and the `eager` sizes, at most `limit` (at least 1) of them; more
    /// on first use if `on_use`. Where batch 1's plan packs its convolutions' patches image by
    /// image ([`Plan::packs_per_image`]), it is the only plan: a batch of more rows runs
    /// fastest as that many runs of it. Where `limit` is 1, batch 1's plan is made from
    /// `model` itself, so that its weights are freed as they are packed.
    pub(super) fn new(
        model: TypedModel,
        symbol: Symbol,
        eager: &[usize],
        on_use: bool,
        limit: usize,
    ) -> TractResult<Specialised> {
        let (one, model) = if limit <= 1 {
            // Nothing but batch 1's plan is made from the model: that plan takes it, so that
            // each weight is freed once packed (see `super::codegen`) rather than held
            // unpacked until the plan is done.
            let batch_one = model.set_symbols(&batch_of(&symbol, 1))?;
            drop(model);
            (Plan::optimized(batch_one)?, None)
        } else {
            (specialise(&model, &symbol, 1)?, Some(model))
        };
        let limit = if one.packs_per_image() { 1 } else { limit };
        let mut plans = HashMap::from([(1, one)]);
        if let Some(model) = &model {
            for &n in eager {
                if plans.len() >= limit {
                    break;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = plans.entry(n) {
                    e.insert(specialise(model, &symbol, n)?);
                }
            }
        }
        let lazy = on_use && plans.len() < limit;
        Ok(Specialised {
            model: model.filter(|_| lazy),
            symbol,
            plans: RwLock::new(plans),
            limit,
            building: Mutex::new(()),
        })
    }

    /// The largest size up to which every batch size has its plan (at least 1: batch 1
    /// always has one).
    pub(super) fn sizes_from_one(&self) -> usize {
        let plans = self.plans.read().unwrap_or_else(PoisonError::into_inner);
        (1..)
            .find(|n| !plans.contains_key(n))
            .map_or(1, |n| n - 1)
            .max(1)
    }

    /// The plan for batch size `n`: prepared, optimized now, or `None` (use the general
    /// plan) when sizes are not specialised on use, another size is being optimized, the
    /// bound is reached or optimizing fails.
    pub(super) fn plan(&self, n: usize) -> Option<Arc<Plan>> {
        let plans = self.plans.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(plan) = plans.get(&n) {
            return Some(Arc::clone(plan));
        }
        let model = self.model.as_ref()?;
        if plans.len() >= self.limit {
            return None;
        }
        drop(plans);
        let _building = self.building.try_lock().ok()?;
        if let Some(plan) = self
            .plans
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&n)
        {
            return Some(Arc::clone(plan));
        }
        match specialise(model, &self.symbol, n) {
            Ok(plan) => {
                let mut plans = self.plans.write().unwrap_or_else(PoisonError::into_inner);
                plans.insert(n, Arc::clone(&plan));
                Some(plan)
            }
            Err(e) => {
                tracing::debug!("no plan specialised to batch {n}: {e:#}");
                None
            }
        }
    }
}

fn specialise(model: &TypedModel, symbol: &Symbol, n: usize) -> TractResult<Arc<Plan>> {
    model
        .set_symbols(&batch_of(symbol, n))
        .and_then(Plan::optimized)
}

/// The substitution that fixes the batch `symbol` to `n`.
fn batch_of(symbol: &Symbol, n: usize) -> HashMap<Symbol, TDim> {
    HashMap::from([(symbol.clone(), TDim::Val(n as i64))])
}
