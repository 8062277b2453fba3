//! The messages and services generated (build.rs) from the vendored protos in `proto/triton/`.

#![allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]

/// Triton's `inference` package: `GRPCInferenceService` and the model configuration.
pub mod inference {
    tonic::include_proto!("inference");
}

/// `grpc.health.v1`: the standard gRPC health service (Kubernetes gRPC probes).
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}
