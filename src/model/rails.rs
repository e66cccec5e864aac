//! GPU-to-NIC pairing: each GPU's nearest NICs, the rails, and GPUDirect RDMA.

use serde::{Deserialize, Serialize};

use super::Connection;

text_enum! {
    /// How GPUDirect RDMA reaches the NIC.
    GpuDirectMethod {
        /// Neither.
        #[default]
        None = "",
        /// The `nvidia_peermem` kernel module.
        NvidiaPeermem = "nvidia_peermem",
        /// dma-buf (open kernel modules, kernel 5.12 or later).
        DmaBuf = "dma-buf",
    }
}

/// GPU to NIC PCIe distance.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuNicAffinity {
    /// GPU index.
    pub gpu: u32,
    /// NIC name.
    pub nic: String,
    /// Classification.
    pub connection: Connection,
    /// Rank for this GPU, 0 = nearest.
    pub rank: u32,
}

/// Rail pairing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RailPairing {
    /// Every GPU has a distinct NIC at PIX or PXB.
    pub rail_aligned: bool,
    /// Pairs.
    pub pairs: Vec<RailPair>,
    /// Every GPU's rail: its pair, or else the nearest compute NIC, which it then shares with
    /// the GPU paired to it. GPUs without any compute NIC are absent.
    pub gpu_rails: Vec<RailPair>,
    /// The most GPUs that share one rail in `gpu_rails`; 0 when there is no rail.
    pub gpus_per_rail: u32,
}

/// A GPU and its NIC.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RailPair {
    /// GPU index.
    pub gpu: u32,
    /// NIC name.
    pub nic: String,
    /// Port.
    pub port: u32,
    /// Distance.
    pub connection: Connection,
}

/// GPUDirect RDMA readiness.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuDirect {
    /// Ready.
    pub ready: bool,
    /// Method.
    pub method: GpuDirectMethod,
    /// Why.
    pub reason: String,
}
