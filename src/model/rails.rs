//! GPU-to-NIC pairing: each GPU's nearest NICs, the rails, and GPUDirect RDMA.

use serde::{Deserialize, Serialize};

use super::Connection;

text_enum! {
    /// How GPUDirect RDMA reaches the NIC.
    GpuDirectMethod {
        /// Neither: GPUDirect RDMA is not available.
        #[default]
        None = "",
        /// The `nvidia_peermem` kernel module.
        NvidiaPeermem = "nvidia_peermem",
        /// dma-buf (open kernel modules, kernel 5.12 or later).
        DmaBuf = "dma-buf",
    }
}

/// How far one GPU is from one NIC over PCIe; there is one entry per GPU and NIC.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuNicAffinity {
    /// NVML index of the GPU.
    pub gpu: u32,
    /// RDMA device name of the NIC (`mlx5_0`).
    pub nic: String,
    /// The PCIe path between them, named as in `nvidia-smi topo -m` (`PIX`, `PXB`, `PHB`, ...).
    pub connection: Connection,
    /// Rank for this GPU, 0 = nearest.
    pub rank: u32,
}

/// The rails: which compute NIC each GPU uses for traffic that leaves the node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RailPairing {
    /// Every GPU has a distinct NIC at PIX or PXB.
    pub rail_aligned: bool,
    /// One-to-one pairs, by GPU index, chosen nearest first: no GPU or NIC is in two, and a GPU
    /// may be left without one.
    pub pairs: Vec<RailPair>,
    /// Every GPU's rail: its pair, or else the nearest compute NIC, which it then shares with
    /// the GPU paired to it. GPUs without any compute NIC are absent.
    pub gpu_rails: Vec<RailPair>,
    /// The most GPUs that share one rail in `gpu_rails`; 0 when there is no rail.
    pub gpus_per_rail: u32,
}

/// A GPU and the NIC port it uses as its rail.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RailPair {
    /// NVML index of the GPU.
    pub gpu: u32,
    /// RDMA device name of the NIC (`mlx5_0`).
    pub nic: String,
    /// The NIC port used: its lowest-numbered active port, else its lowest port (else 1).
    pub port: u32,
    /// The PCIe path between the GPU and the NIC (`PIX`, `PXB`, ...).
    pub connection: Connection,
}

/// Whether GPUDirect RDMA (a NIC reading and writing GPU memory directly) can work here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuDirect {
    /// True when `nvidia_peermem` is loaded, or dma-buf looks possible (kernel 5.12 or later and
    /// the `nvidia` and `ib_uverbs` modules loaded), and the node has GPUs and RDMA devices.
    pub ready: bool,
    /// The mechanism that makes it ready; [`GpuDirectMethod::None`] when not ready.
    pub method: GpuDirectMethod,
    /// Why it is or is not ready, in words (a missing module, an old kernel).
    pub reason: String,
}
