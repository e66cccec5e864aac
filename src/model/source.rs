//! Which probe said what: each source and how it went.

use serde::{Deserialize, Serialize};

/// A probe source: one part of the hardware that is probed and reported on by itself. Its name
/// (`nvml`, `sysfs-pci`, ...) appears in JSON, gRPC, logs and the `source` metric label.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Source {
    /// NVML: driver, GPUs, NVLinks and GPU pairs.
    #[default]
    Nvml,
    /// NVML's fabric info: the multi-node NVLink state and clique.
    Fabric,
    /// sysfs `class/infiniband`: the RDMA NICs.
    Rdma,
    /// sysfs PCI tree: GPU-NIC affinity and rail pairing.
    SysfsPci,
    /// Kernel modules and driver parameters: GPUDirect RDMA readiness.
    Gpudirect,
    /// ibverbs: each NIC opened once (the `verbs` feature).
    Verbs,
    /// Directed-route SubnetManagement queries through libibumad: each InfiniBand compute
    /// port's leaf switch and its uplinks (the `umad` feature).
    IbSmp,
    /// LLDP frames from the leaf switch on each RoCE compute port.
    Lldp,
}

impl Source {
    /// The source's name, as in JSON and the `source` metric label.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Outcome of one probe source. Two statuses are equal when they say the same thing: the time a
/// source took is a measurement, not content, so it never makes a topology "changed".
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceStatus {
    /// Which probe source this status is about.
    pub source: Source,
    /// True when the source answered fully; false when it failed or answered only in part.
    pub ok: bool,
    /// What went wrong, in words; when `ok`, empty or a remark worth making.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Some or all of its data is the last good data from an earlier probe (what it could not
    /// read this time).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
    /// How long this source's own probing took in the pass that produced this status (not
    /// serialized: output stays the same between identical probes).
    #[serde(skip)]
    pub took: std::time::Duration,
}

impl PartialEq for SourceStatus {
    fn eq(&self, other: &Self) -> bool {
        let Self {
            source,
            ok,
            error,
            stale,
            took: _,
        } = self;
        *source == other.source && *ok == other.ok && *error == other.error && *stale == other.stale
    }
}

impl Eq for SourceStatus {}

impl SourceStatus {
    /// A source that answered fully.
    pub fn ok(source: Source) -> Self {
        Self {
            source,
            ok: true,
            ..Self::default()
        }
    }

    /// A source that failed or answered partially.
    pub fn failed(source: Source, error: impl Into<String>) -> Self {
        Self {
            source,
            ok: false,
            error: error.into(),
            ..Self::default()
        }
    }

    /// The same status with the time its source took.
    pub fn took(mut self, took: std::time::Duration) -> Self {
        self.took = took;
        self
    }
}
