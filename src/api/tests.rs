//! gRPC service tests.
