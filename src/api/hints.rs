//! Placement hints for a set of GPUs: the GPU to NIC pairing and the environment variables that
//! make UCX and NCCL use the paired NICs.
//!
//! [`placement_hints`] resolves the GPU selection, takes the pairs from the model's rail pairing
//! and the environment from the hints policy ([`crate::hints::env_hints`]), the same variables
//! that `nodetopo probe -o env` prints.

use thiserror::Error;

use crate::model::{Connection, NodeTopology};

/// Why a GPU selection cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HintsError {
    /// A selector names no GPU of this node.
    #[error("unknown GPU {selector:?}: this node has GPU indices {indices} and their UUIDs")]
    UnknownGpu {
        /// The selector as given.
        selector: String,
        /// The node's indices, e.g. `0,1,2,3`, or `none`.
        indices: String,
    },
    /// The hints policy refused the selection.
    #[error("{0}")]
    Policy(String),
}

/// A selected GPU and its paired NIC port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuNic {
    /// GPU index.
    pub gpu: u32,
    /// GPU UUID.
    pub gpu_uuid: String,
    /// NIC name.
    pub nic: String,
    /// NIC port.
    pub port: u32,
    /// PCIe distance.
    pub connection: Connection,
}

/// Hints for one GPU selection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hints {
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// Selected GPUs with a paired NIC.
    pub pairs: Vec<GpuNic>,
    /// Remarks, e.g. a GPU without a rail or a port that is down.
    pub notes: Vec<String>,
}

/// Resolves selectors (an index like `"0"` or a UUID) to GPU indices, sorted and deduplicated.
/// An empty selection selects every GPU.
pub fn select_gpus(topo: &NodeTopology, selectors: &[String]) -> Result<Vec<u32>, HintsError> {
    if selectors.is_empty() {
        return Ok(topo.gpus.iter().map(|g| g.index).collect());
    }
    let mut out = Vec::with_capacity(selectors.len());
    for sel in selectors {
        let s = sel.trim();
        let found = topo.gpus.iter().find(|g| {
            s.parse::<u32>().is_ok_and(|i| i == g.index) || s.eq_ignore_ascii_case(&g.uuid)
        });
        match found {
            Some(g) => out.push(g.index),
            None => {
                let indices: Vec<String> = topo.gpus.iter().map(|g| g.index.to_string()).collect();
                return Err(HintsError::UnknownGpu {
                    selector: sel.clone(),
                    indices: if indices.is_empty() {
                        "none".into()
                    } else {
                        indices.join(",")
                    },
                });
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Hints for the selected GPUs: their rail pairs and the environment variables of
/// [`crate::hints::env_hints`] (`DEEP_EP_DEVICE_TO_HCA_MAPPING`, `UCX_NET_DEVICES`,
/// `NCCL_IB_HCA`, `NVSHMEM_HCA_LIST`, ...).
pub fn placement_hints(topo: &NodeTopology, selectors: &[String]) -> Result<Hints, HintsError> {
    let selected = select_gpus(topo, selectors)?;
    let pairs: Vec<GpuNic> = selected
        .iter()
        .filter_map(|&gpu| {
            let pair = topo.rail_pairing.pairs.iter().find(|p| p.gpu == gpu)?;
            let uuid = topo.gpus.iter().find(|g| g.index == gpu)?.uuid.clone();
            Some(GpuNic {
                gpu,
                gpu_uuid: uuid,
                nic: pair.nic.clone(),
                port: pair.port,
                connection: pair.connection,
            })
        })
        .collect();
    let selection: Vec<crate::hints::GpuSelector> = selected
        .iter()
        .map(|&i| crate::hints::GpuSelector::Index(i))
        .collect();
    let crate::hints::EnvHints { vars: env, notes } =
        crate::hints::env_hints(topo, Some(&selection))
            .map_err(|e| HintsError::Policy(e.to_string()))?;
    Ok(Hints { env, pairs, notes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Gpu, RailPair, RailPairing};

    fn topo() -> NodeTopology {
        NodeTopology {
            gpus: (0..4)
                .map(|i| Gpu {
                    index: i,
                    uuid: format!("GPU-{i}"),
                    ..Gpu::default()
                })
                .collect(),
            rail_pairing: RailPairing {
                rail_aligned: true,
                pairs: (0..4)
                    .map(|i| RailPair {
                        gpu: i,
                        nic: format!("mlx5_{i}"),
                        port: 1,
                        connection: Connection::Pix,
                    })
                    .collect(),
            },
            ..NodeTopology::default()
        }
    }

    #[test]
    fn by_index_and_uuid() {
        let h = placement_hints(&topo(), &["2".into(), "gpu-0".into(), "2".into()]).unwrap();
        // GPUs 0 and 2 are positions 0 and 1 of the selection (what CUDA numbers them in a pod
        // that holds those two GPUs).
        assert_eq!(
            h.env,
            vec![
                (
                    "DEEP_EP_DEVICE_TO_HCA_MAPPING".into(),
                    "0:mlx5_0:1,1:mlx5_2:1".into()
                ),
                ("UCX_NET_DEVICES".into(), "mlx5_0:1,mlx5_2:1".into()),
                ("NCCL_IB_HCA".into(), "=mlx5_0:1,mlx5_2:1".into()),
                ("NVSHMEM_HCA_LIST".into(), "mlx5_0:1,mlx5_2:1".into()),
            ]
        );
        assert_eq!(h.pairs.len(), 2);
        assert_eq!(h.pairs[1].gpu_uuid, "GPU-2");
    }

    #[test]
    fn unknown_gpu_is_an_error() {
        let e = placement_hints(&topo(), &["7".into()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown GPU \"7\": this node has GPU indices 0,1,2,3 and their UUIDs"
        );
    }

    #[test]
    fn no_nics_no_env() {
        let mut t = topo();
        t.rail_pairing = RailPairing::default();
        let h = placement_hints(&t, &[]).unwrap();
        assert!(h.env.is_empty() && h.pairs.is_empty());
    }
}
