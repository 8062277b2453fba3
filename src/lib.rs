//! scoria: a model-serving runtime for ONNX models.
//!
//! Layers, from the outside in: [`cli`] → front ends ([`http`], [`grpc`], [`edge`], [`bench`])
//! → [`auth`] (API keys, shared by the front ends) → [`telemetry`] → serving core ([`models`] → [`batch`] → [`hook`]) → [`registry`] →
//! [`engine`]s → [`tensor`] (the engine-neutral data, and the one error kind) → [`fsutil`];
//! [`alloc`] (the allocator) beneath them all.
//! No layer uses one above it; ARCHITECTURE.md says where front ends and engines plug in.

pub mod alloc;
pub mod auth;
pub mod batch;
pub mod bench;
pub mod cli;
pub mod edge;
pub mod engine;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod hook;
pub mod http;
pub mod models;
pub mod registry;
pub mod telemetry;
pub mod tensor;
