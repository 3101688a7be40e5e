//! The public canonical schema of omnigate (`omnigate.v1`) and its gRPC service, generated
//! from `proto/omnigate/v1/*.proto`. The gateway converts between these types and the
//! adapter model in exactly one place (`omnigate::api::convert`).
//!
//! # Layout
//! - [`v1`]: messages, enums and the `Gateway` service (client and server).
//! - [`bench::v1`]: a bare echo service, the baseline the load generator measures against.
//! - [`FILE_DESCRIPTOR_SET`]: encoded descriptors for gRPC server reflection.

pub mod v1 {
    #![allow(clippy::all)]
    tonic::include_proto!("omnigate.v1");
}

pub mod bench {
    pub mod v1 {
        #![allow(clippy::all)]
        tonic::include_proto!("omnigate.bench.v1");
    }
}

/// Descriptors of every compiled file, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("omnigate_descriptor");
