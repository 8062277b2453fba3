//! Scheduling: how a validated request reaches an engine instance.
//!
//! Every request takes one route, [`Scheduler::submit`] then [`Ticket::wait`] (or
//! [`Ticket::wait_blocking`]), whichever scheduler a model version has:
//! - [`Batcher`], the dynamic batcher (Triton's semantics), when the config enables it;
//! - [`Direct`], which runs each request on its own, on an idle instance first.
//!
//! Schedulers know nothing of models, hooks or front ends: they take tensors in model order
//! and answer with every output of the model for the request's rows.

mod cost;
mod direct;
mod dynamic;
mod instances;
mod pool;
#[cfg(test)]
mod tests;

pub use cost::{batch_rows, threads_for, INLINE_BUDGET};
pub use direct::Direct;
pub use dynamic::Batcher;

use crate::engine::EngineError;
use crate::tensor::{ErrorKind, Tensor};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// What a scheduler reports back to one request.
#[derive(Debug)]
pub struct BatchResult {
    /// Every model output for this request's rows, in model order.
    pub outputs: Vec<Tensor>,
    /// Time from submission until its engine run started.
    pub queue: Duration,
    /// The engine run (of the whole batch, when batched).
    pub compute: Duration,
    /// Rows in the engine run this request was part of.
    pub batch_rows: usize,
    /// True for one request per engine run, so executions can be counted once.
    pub first: bool,
}

/// Why a scheduler could not answer a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SchedulerError {
    /// The queue is at `max_queue_size`.
    #[error("{0}")]
    QueueFull(String),
    /// The request waited past its queue-policy timeout and was refused before it ran.
    #[error("{0}")]
    TimedOut(String),
    /// The request's options do not fit the model (an unknown priority level).
    #[error("{0}")]
    Invalid(String),
    /// The engine failed on the request (or its batch).
    #[error("inference failed: {0}")]
    Engine(String),
    /// The scheduler stopped (its model version is being dropped) before answering.
    #[error("the scheduler stopped before answering")]
    Stopped,
    #[error("{0}")]
    Internal(String),
}

impl SchedulerError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SchedulerError::QueueFull(_) | SchedulerError::TimedOut(_) => ErrorKind::Unavailable,
            SchedulerError::Invalid(_) => ErrorKind::InvalidInput,
            SchedulerError::Engine(_) | SchedulerError::Stopped | SchedulerError::Internal(_) => {
                ErrorKind::Internal
            }
        }
    }
}

impl From<EngineError> for SchedulerError {
    fn from(e: EngineError) -> Self {
        SchedulerError::Engine(e.to_string())
    }
}

/// Who waits for a ticket: an async task (the work must not run on its thread) or a
/// blocking thread (the work may run right there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Async,
    Blocking,
}

/// What a request asks of its scheduling (v2's `parameters.priority` / `parameters.timeout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Priority level, 1 the highest; 0 takes the model's default level.
    pub priority: u32,
    /// A queue timeout shorter than the model's (honoured when its queue policy allows
    /// overrides).
    pub timeout: Option<Duration>,
}

/// A request's pending answer.
pub struct Ticket(TicketState);

enum TicketState {
    Waiting(oneshot::Receiver<Result<BatchResult, SchedulerError>>),
    Ready(Result<BatchResult, SchedulerError>),
}

impl Ticket {
    fn waiting(rx: oneshot::Receiver<Result<BatchResult, SchedulerError>>) -> Ticket {
        Ticket(TicketState::Waiting(rx))
    }

    fn ready(result: Result<BatchResult, SchedulerError>) -> Ticket {
        Ticket(TicketState::Ready(result))
    }

    /// Waits for the answer without blocking the executor.
    pub async fn wait(self) -> Result<BatchResult, SchedulerError> {
        match self.0 {
            TicketState::Ready(r) => r,
            TicketState::Waiting(rx) => rx.await.unwrap_or(Err(SchedulerError::Stopped)),
        }
    }

    /// Waits for the answer on the calling thread, which must not be an executor worker.
    pub fn wait_blocking(self) -> Result<BatchResult, SchedulerError> {
        match self.0 {
            TicketState::Ready(r) => r,
            TicketState::Waiting(rx) => rx.blocking_recv().unwrap_or(Err(SchedulerError::Stopped)),
        }
    }
}

/// Runs validated requests on a model version's engine instances.
pub trait Scheduler: Send + Sync {
    /// Takes `inputs` (validated, in model order) holding `rows` rows (their batch size).
    /// Work for an [`Caller::Async`] caller runs on the calling thread only when its measured
    /// cost fits [`INLINE_BUDGET`] (the ticket is then ready at once). Refuses at once
    /// when the scheduler cannot take more. Schedulers without priorities or timeouts
    /// ignore `options`.
    fn submit(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        caller: Caller,
        options: &RequestOptions,
    ) -> Result<Ticket, SchedulerError>;

    /// Requests waiting for an engine instance now.
    fn queued(&self) -> usize;
}

/// Observes batches for metrics: called with each batch's rows and the queue depth after it
/// was formed.
pub type BatchObserver = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// Makes the [`BatchObserver`] of each model version's batcher: how an exporter (metrics)
/// plugs into the serving core without the core knowing it.
pub trait BatchObservers: Send + Sync {
    fn observer(&self, model: &str, version: u64) -> BatchObserver;
}
