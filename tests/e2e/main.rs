//! End-to-end tests against a real control plane: etcd, kube-apiserver and, where a test needs
//! it, kube-controller-manager, built from the Go module proxy by `tests/e2e/build-kube.sh`.
//! Every process listens on 127.0.0.1, and the API server is given nothing to dial but etcd.
//!
//! Run with `cargo test --locked --features e2e --test e2e` (the control plane is built on first
//! use and cached outside the repository).

mod admission;
mod agents;
mod chart;
#[path = "../common/mod.rs"]
mod common;
mod faults;
mod grove;
mod harness;
mod image;
mod node;
mod proxy;
mod real_node;
mod scheduler;
mod soak;
mod topology;
mod webhook;
mod workloads;
