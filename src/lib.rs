//! scoria: a model-serving runtime for ONNX models.
//!
//! Layers, from the outside in: front ends ([`http`], [`cli`]) → serving core ([`models`]) →
//! [`engine`]s. The on-disk model repository lives in [`registry`]; [`tensor`] is the
//! engine-neutral data type all layers share.

pub mod batch;
pub mod bench;
pub mod cli;
pub mod edge;
pub mod engine;
pub mod fsutil;
pub mod hook;
pub mod http;
pub mod models;
pub mod registry;
pub mod telemetry;
pub mod tensor;
