//! The GPUs a container sees, in CUDA ordinal order, from the variables the NVIDIA device plugin
//! and the user set: `NVIDIA_VISIBLE_DEVICES` (which of the node's GPUs the container runtime
//! exposes) and `CUDA_VISIBLE_DEVICES` (which of those CUDA enumerates, and in which order).
//!
//! Pure: [`visible_gpus`] maps the two values and the node's GPU list to NVML indices, ordered
//! so that position `i` is CUDA device `i` — the order `nodetopo probe -o env --gpus` and
//! `GetPlacementHints` expect.
//!
//! - `NVIDIA_VISIBLE_DEVICES` `all`: every GPU; `none`, `void` or empty: none; else a
//!   comma-separated list of NVML indices or UUIDs. The runtime exposes the devices in PCI bus
//!   order, which is NVML's index order, so the list's own order does not matter. Unset: every
//!   GPU if `CUDA_VISIBLE_DEVICES` is set (a process on the host), else an error: a container
//!   without the variable has no GPU from the device plugin's environment strategy, and
//!   guessing "all" would hand it another pod's NICs.
//! - `CUDA_VISIBLE_DEVICES` unset: the container's GPUs in that order. Set: each entry is an
//!   index into the container's GPUs or a GPU UUID (or a unique UUID prefix), in the order given.
//!
//! CUDA's default `CUDA_DEVICE_ORDER=FASTEST_FIRST` equals the PCI order on nodes of one GPU
//! model (the case on GPU servers); on mixed nodes set `CUDA_DEVICE_ORDER=PCI_BUS_ID`.

use thiserror::Error;

/// One GPU of the node: NVML index and UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGpu {
    /// NVML device index (the number `nvidia-smi` shows).
    pub index: u32,
    /// UUID (`GPU-…`).
    pub uuid: String,
}

/// Why the visible GPUs cannot be told.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum VisibleError {
    /// The variables select no GPU.
    #[error("no GPU is visible ({0})")]
    NoGpus(String),
    /// An entry names no GPU of this node.
    #[error("{var} entry {entry:?} names no GPU of this node (GPU indices {indices})")]
    Unknown {
        /// The variable the entry is in: `NVIDIA_VISIBLE_DEVICES` or `CUDA_VISIBLE_DEVICES`.
        var: &'static str,
        /// The entry as written (an index, or a UUID or its prefix).
        entry: String,
        /// The node's (or the container's) indices.
        indices: String,
    },
    /// A MIG device: RDMA rails belong to whole GPUs, and MIG UUIDs are not in the topology.
    #[error("{var} entry {entry:?} is a MIG device; give the parent GPU with --gpus")]
    Mig {
        /// The variable the entry is in: `NVIDIA_VISIBLE_DEVICES` or `CUDA_VISIBLE_DEVICES`.
        var: &'static str,
        /// The entry as written (a `MIG-…` UUID, or an index pair such as `0:1`).
        entry: String,
    },
    /// The same GPU is named twice in `CUDA_VISIBLE_DEVICES`.
    #[error("CUDA_VISIBLE_DEVICES names GPU {0} more than once")]
    Duplicate(u32),
}

fn indices(gpus: &[&NodeGpu]) -> String {
    if gpus.is_empty() {
        return "none".into();
    }
    gpus.iter()
        .map(|g| g.index.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn entries(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// The NVML indices of the GPUs the container sees, in CUDA ordinal order.
pub fn visible_gpus(
    nvidia_visible: Option<&str>,
    cuda_visible: Option<&str>,
    node: &[NodeGpu],
) -> Result<Vec<u32>, VisibleError> {
    let mut all: Vec<&NodeGpu> = node.iter().collect();
    all.sort_by_key(|g| g.index);
    let container = container_gpus(nvidia_visible, cuda_visible.is_some(), &all)?;
    let out: Vec<u32> = match cuda_visible {
        None => container.iter().map(|g| g.index).collect(),
        Some(list) => cuda_order(list, &container)?,
    };
    if out.is_empty() {
        return Err(VisibleError::NoGpus(format!(
            "NVIDIA_VISIBLE_DEVICES={:?}, CUDA_VISIBLE_DEVICES={:?}",
            nvidia_visible.unwrap_or("<unset>"),
            cuda_visible.unwrap_or("<unset>")
        )));
    }
    Ok(out)
}

/// The container's GPUs from `NVIDIA_VISIBLE_DEVICES`, in PCI (NVML index) order.
fn container_gpus<'a>(
    nvidia_visible: Option<&str>,
    cuda_set: bool,
    all: &[&'a NodeGpu],
) -> Result<Vec<&'a NodeGpu>, VisibleError> {
    let list = match nvidia_visible.map(str::trim) {
        None if !cuda_set => {
            return Err(VisibleError::NoGpus(
                "NVIDIA_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES are unset; request the GPUs in \
                 this container or name them with --gpus"
                    .into(),
            ));
        }
        None | Some("all") => return Ok(all.to_vec()),
        Some("none") | Some("void") | Some("") => return Ok(Vec::new()),
        Some(list) => list,
    };
    let mut picked = Vec::new();
    for e in entries(list) {
        if e.starts_with("MIG-") || e.contains(':') {
            return Err(VisibleError::Mig {
                var: "NVIDIA_VISIBLE_DEVICES",
                entry: e.into(),
            });
        }
        let g = all
            .iter()
            .find(|g| {
                e.parse::<u32>().is_ok_and(|i| i == g.index) || e.eq_ignore_ascii_case(&g.uuid)
            })
            .ok_or_else(|| VisibleError::Unknown {
                var: "NVIDIA_VISIBLE_DEVICES",
                entry: e.into(),
                indices: indices(all),
            })?;
        picked.push(*g);
    }
    picked.sort_by_key(|g| g.index);
    picked.dedup_by_key(|g| g.index);
    Ok(picked)
}

/// `CUDA_VISIBLE_DEVICES` over the container's GPUs: ordinals or UUID prefixes, in its order.
fn cuda_order(list: &str, container: &[&NodeGpu]) -> Result<Vec<u32>, VisibleError> {
    let mut out = Vec::new();
    for e in entries(list) {
        if e.starts_with("MIG-") {
            return Err(VisibleError::Mig {
                var: "CUDA_VISIBLE_DEVICES",
                entry: e.into(),
            });
        }
        let g = cuda_entry(e, container).ok_or_else(|| VisibleError::Unknown {
            var: "CUDA_VISIBLE_DEVICES",
            entry: e.into(),
            indices: format!(
                "{} in the container",
                (0..container.len())
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        })?;
        if out.contains(&g.index) {
            return Err(VisibleError::Duplicate(g.index));
        }
        out.push(g.index);
    }
    Ok(out)
}

/// One `CUDA_VISIBLE_DEVICES` entry: an ordinal into the container's GPUs, or a UUID prefix that
/// names exactly one of them.
fn cuda_entry<'a>(e: &str, container: &[&'a NodeGpu]) -> Option<&'a NodeGpu> {
    if let Ok(i) = e.parse::<usize>() {
        return container.get(i).copied();
    }
    let lower = e.to_ascii_lowercase();
    let mut m = container
        .iter()
        .filter(|g| g.uuid.to_ascii_lowercase().starts_with(&lower));
    match (m.next(), m.next()) {
        (Some(g), None) => Some(*g),
        _ => None,
    }
}

/// True when the hint pairs of an agent's answer follow `selection`'s order (the pairs of GPUs
/// with a rail, as an agent that keeps the CUDA order returns them).
pub fn pairs_in_order(selection: &[u32], pair_gpus: &[u32]) -> bool {
    let expected: Vec<u32> = selection
        .iter()
        .copied()
        .filter(|g| pair_gpus.contains(g))
        .collect();
    expected == pair_gpus
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Vec<NodeGpu> {
        (0..8)
            .rev()
            .map(|i| NodeGpu {
                index: i,
                uuid: format!("GPU-{i}{i}{i}{i}aaaa-0000"),
            })
            .collect()
    }

    fn vis(n: Option<&str>, c: Option<&str>) -> Result<Vec<u32>, VisibleError> {
        visible_gpus(n, c, &node())
    }

    #[test]
    fn nvidia_variable_selects_the_set_in_pci_order() {
        assert!(matches!(vis(None, None), Err(VisibleError::NoGpus(_))));
        assert_eq!(vis(Some("all"), None).unwrap(), (0..8).collect::<Vec<_>>());
        assert_eq!(
            vis(Some("GPU-5555aaaa-0000,GPU-2222aaaa-0000"), None).unwrap(),
            [2, 5]
        );
        assert_eq!(vis(Some("6, 1"), None).unwrap(), [1, 6]);
    }

    #[test]
    fn cuda_variable_orders_within_the_container() {
        // The container holds GPUs 2, 5, 7; CUDA sees its third, then its first.
        let n = Some("GPU-7777aaaa-0000,GPU-2222aaaa-0000,GPU-5555aaaa-0000");
        assert_eq!(vis(n, Some("2,0")).unwrap(), [7, 2]);
        // Without the NVIDIA variable the container holds every GPU.
        assert_eq!(vis(None, Some("6,1,4")).unwrap(), [6, 1, 4]);
        // UUIDs and unique prefixes.
        assert_eq!(
            vis(None, Some("GPU-3333,gpu-0000aaaa-0000")).unwrap(),
            [3, 0]
        );
    }

    #[test]
    fn nothing_visible_unknown_mig_and_duplicates_are_errors() {
        assert!(matches!(
            vis(Some("void"), None),
            Err(VisibleError::NoGpus(_))
        ));
        assert!(matches!(vis(None, Some("")), Err(VisibleError::NoGpus(_))));
        let e = vis(Some("GPU-nope"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "NVIDIA_VISIBLE_DEVICES entry \"GPU-nope\" names no GPU of this node (GPU indices 0,1,2,3,4,5,6,7)"
        );
        let e = vis(Some("1,2"), Some("2")).unwrap_err();
        assert!(e.to_string().contains("0,1 in the container"), "{e}");
        assert!(
            matches!(vis(None, Some("GPU-")), Err(VisibleError::Unknown { .. })),
            "ambiguous prefix"
        );
        assert!(matches!(
            vis(Some("MIG-1234"), None),
            Err(VisibleError::Mig { .. })
        ));
        assert!(matches!(
            vis(Some("0:1"), None),
            Err(VisibleError::Mig { .. })
        ));
        assert_eq!(
            vis(None, Some("1,GPU-1111")),
            Err(VisibleError::Duplicate(1))
        );
    }

    #[test]
    fn pair_order_check() {
        assert!(pairs_in_order(&[3, 1, 2], &[3, 2]));
        assert!(!pairs_in_order(&[3, 1], &[1, 3]));
        assert!(pairs_in_order(&[3], &[]));
    }
}
