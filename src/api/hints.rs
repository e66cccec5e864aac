//! Placement hints for a set of GPUs: the GPU to NIC pairing and the environment variables that
//! make UCX and NCCL use the paired NICs.
//!
//! [`placement_hints`] is a small local adapter over the model's rail pairing; the full hints
//! policy can replace it without touching the gRPC service.

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

/// Hints for the selected GPUs, from the node's rail pairing.
///
/// Sets `NODETOPO_GPU_HCA_MAP` (`gpu=nic:port,...`), `UCX_NET_DEVICES` (`nic:port,...`) and
/// `NCCL_IB_HCA` (`=nic:port,...`, exact match) when at least one selected GPU has a NIC.
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
    let mut env = Vec::new();
    if !pairs.is_empty() {
        let mut devices: Vec<String> = Vec::new();
        for p in &pairs {
            let d = format!("{}:{}", p.nic, p.port);
            if !devices.contains(&d) {
                devices.push(d);
            }
        }
        let map: Vec<String> = pairs
            .iter()
            .map(|p| format!("{}={}:{}", p.gpu, p.nic, p.port))
            .collect();
        env.push(("NODETOPO_GPU_HCA_MAP".to_string(), map.join(",")));
        env.push(("UCX_NET_DEVICES".to_string(), devices.join(",")));
        env.push(("NCCL_IB_HCA".to_string(), format!("={}", devices.join(","))));
    }
    Ok(Hints { env, pairs })
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
        assert_eq!(
            h.env,
            vec![
                (
                    "NODETOPO_GPU_HCA_MAP".into(),
                    "0=mlx5_0:1,2=mlx5_2:1".into()
                ),
                ("UCX_NET_DEVICES".into(), "mlx5_0:1,mlx5_2:1".into()),
                ("NCCL_IB_HCA".into(), "=mlx5_0:1,mlx5_2:1".into()),
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
