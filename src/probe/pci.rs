//! PCIe placement from the sysfs PCI tree: where each device hangs, and how far apart two
//! devices are in the terms of `nvidia-smi topo -m` (PIX, PXB, PHB, NODE, SYS).
//!
//! The tree is read once per device ([`PciPath::resolve`]: the `bus/pci/devices/<bdf>` link,
//! canonicalized under the sysfs root); classification and ranking are pure functions over
//! the resolved paths and the model. The rail pairing built on the ranking is in
//! [`super::rails`].

use std::{
    io,
    path::{Component, Path, PathBuf},
};

use thiserror::Error;

use crate::model::{Connection, Gpu, GpuNicAffinity, GpuPair, Nic};

pub use crate::model::PciAddress;

use super::sysfs::SysfsRoot;

/// Parses a Linux cpulist (`0-3,8,10-11`, as in `local_cpulist`). `None` when malformed, when a
/// range is reversed, or when it names a CPU above 65535 (no such machine; keeps memory bounded).
pub fn parse_cpulist(s: &str) -> Option<Vec<u32>> {
    const MAX_CPU: u32 = 65_535;
    let s = s.trim();
    let mut out = Vec::new();
    if s.is_empty() {
        return Some(out);
    }
    for part in s.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let v = part.parse::<u32>().ok()?;
                (v, v)
            }
        };
        if lo > hi || hi > MAX_CPU {
            return None;
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Resolves a sysfs symlink the cheap way: one `readlink`, the target joined to the link's
/// directory and `..` folded lexically. sysfs links (`bus/pci/devices/<bdf>`,
/// `class/infiniband/<dev>`, `device`) are single relative hops into `devices/`, so this equals
/// the canonical path without a `readlink` per component. A path that is not a link is
/// returned as is; a link whose target does not exist is an error (`NotFound`).
pub fn resolve_link(path: &Path) -> io::Result<PathBuf> {
    let target = match std::fs::read_link(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Ok(path.to_path_buf()),
        Err(e) => return Err(e),
    };
    let joined = match path.parent() {
        Some(dir) if target.is_relative() => dir.join(&target),
        _ => target,
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} leaves the root", path.display()),
                    ));
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    if !out.exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} does not exist", out.display()),
        ));
    }
    Ok(out)
}

/// Why a device's place in the PCI tree is unknown.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PciError {
    /// The address is not a PCI address.
    #[error("{0:?} is not a PCI address")]
    BadAddress(String),
    /// `bus/pci/devices/<bdf>` could not be resolved.
    #[error("cannot resolve bus/pci/devices/{bdf}")]
    Resolve {
        /// The device.
        bdf: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The link resolves outside `devices/pci<domain>:<bus>/`.
    #[error("bus/pci/devices/{bdf} does not resolve into devices/pci*/ ({path})")]
    NotInTree {
        /// The device.
        bdf: String,
        /// Where it resolved to.
        path: String,
    },
}

/// Where a PCI function sits: its host bridge and the chain of functions from the root port
/// down to itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciPath {
    /// Host bridge directory name, e.g. `pci0000:00`.
    pub host_bridge: String,
    /// Functions from the root port (first) to the device itself (last).
    pub chain: Vec<PciAddress>,
    /// NUMA node of the CPU side: the root port's `numa_node`, else the device's, when known
    /// (not -1).
    pub numa_node: Option<i32>,
}

impl PciPath {
    /// Builds a path from the part of a canonical sysfs path below `devices/`, e.g.
    /// `pci0000:00/0000:00:01.0/0000:01:00.0`. Components that are not PCI addresses end the
    /// chain only if they come last; anything else is an error.
    pub fn from_devices_rel(rel: &Path, numa_node: Option<i32>) -> Option<Self> {
        let mut comps = rel.iter().map(|c| c.to_str());
        let host_bridge = comps.next()??;
        if !host_bridge.starts_with("pci") {
            return None;
        }
        let mut chain = Vec::new();
        for c in comps {
            chain.push(PciAddress::parse(c?)?);
        }
        if chain.is_empty() {
            return None;
        }
        Some(Self {
            host_bridge: host_bridge.to_string(),
            chain,
            numa_node,
        })
    }

    /// Resolves `bus/pci/devices/<bdf>` under `root` (any address form [`PciAddress::parse`] accepts).
    pub fn resolve(root: &SysfsRoot, bdf: &str) -> Result<Self, PciError> {
        let bdf = PciAddress::parse(bdf)
            .ok_or_else(|| PciError::BadAddress(bdf.to_string()))?
            .to_string();
        let link = root.pci_device(&bdf);
        let real = resolve_link(&link).map_err(|source| PciError::Resolve {
            bdf: bdf.clone(),
            source,
        })?;
        let not_in_tree = |path: &Path| PciError::NotInTree {
            bdf: bdf.clone(),
            path: path.display().to_string(),
        };
        // The CPU side's NUMA node: the root port's, where it says. A device's own node can be
        // something else: a GB200 GPU reports the NUMA node of its memory, which no CPU or NIC
        // is on.
        let numa_of = |path: &Path| -> Option<i32> {
            let rel = path.strip_prefix(root.path("devices")).ok()?;
            let root_port = rel.iter().nth(1)?.to_str()?;
            root.pci_numa_node(root_port)
        };
        let numa = || numa_of(&real).or_else(|| root.pci_numa_node(&bdf));
        if let Ok(rel) = real.strip_prefix(root.path("devices")) {
            return Self::from_devices_rel(rel, numa()).ok_or_else(|| not_in_tree(&real));
        }
        // An unusual tree (the root itself reached through links): compare canonical paths.
        let canon = link.canonicalize().map_err(|source| PciError::Resolve {
            bdf: bdf.clone(),
            source,
        })?;
        let devices = root
            .root()
            .canonicalize()
            .map(|r| r.join("devices"))
            .map_err(|source| PciError::Resolve {
                bdf: bdf.clone(),
                source,
            })?;
        let rel = canon
            .strip_prefix(&devices)
            .map_err(|_| not_in_tree(&canon))?;
        Self::from_devices_rel(rel, numa()).ok_or_else(|| not_in_tree(&canon))
    }
}

/// Classifies the PCIe path between two devices like `nvidia-smi topo -m`:
/// - different host bridges: SYS across NUMA nodes (both known and different), else NODE;
/// - same host bridge, no common bridge below it: PHB;
/// - a common bridge, each device at most one switch port below it: PIX;
/// - a common bridge further up (several switches): PXB.
pub fn classify(a: &PciPath, b: &PciPath) -> Connection {
    if a.host_bridge != b.host_bridge {
        return match (a.numa_node, b.numa_node) {
            (Some(x), Some(y)) if x != y => Connection::Sys,
            _ => Connection::Node,
        };
    }
    let common = a
        .chain
        .iter()
        .zip(&b.chain)
        .take_while(|(x, y)| x == y)
        .count();
    if common == 0 {
        return Connection::Phb;
    }
    if common == a.chain.len() || common == b.chain.len() {
        // One device is an ancestor of the other (a bridge and something below it).
        return Connection::Pix;
    }
    // `common - 1` is the index of the deepest common bridge. A device one switch away sits
    // at most two levels below it (downstream port, then the device).
    let below = (a.chain.len() - common).max(b.chain.len() - common);
    if below <= 2 {
        Connection::Pix
    } else {
        Connection::Pxb
    }
}

/// Resolved PCI paths of the GPUs and NICs, and what could not be resolved.
#[derive(Debug, Default)]
pub struct Placement {
    /// GPU index and its path.
    pub gpus: Vec<(u32, PciPath)>,
    /// NIC name and its path.
    pub nics: Vec<(String, PciPath)>,
    /// One message per device that could not be placed.
    pub errors: Vec<String>,
}

/// Resolves every GPU (by its NVML bus id) and every NIC (by its PCI address) in the tree.
pub fn place(root: &SysfsRoot, gpus: &[Gpu], nics: &[Nic]) -> Placement {
    let mut out = Placement::default();
    for g in gpus {
        match PciPath::resolve(root, &g.pci_bus_id) {
            Ok(p) => out.gpus.push((g.index, p)),
            Err(e) => out.errors.push(format!("GPU {}: {e}", g.index)),
        }
    }
    let data_direct = data_direct_functions(root);
    for n in nics {
        if n.pci_address.is_empty() {
            out.errors.push(format!("NIC {}: no PCI address", n.name));
            continue;
        }
        // A ConnectX-8 with a Data Direct function DMAs through that function: place the NIC
        // there, where its GPU is.
        let at = data_direct_of(root, &n.pci_address, &data_direct).unwrap_or(&n.pci_address);
        match PciPath::resolve(root, at) {
            Ok(p) => out.nics.push((n.name.clone(), p)),
            Err(e) => out.errors.push(format!("NIC {}: {e}", n.name)),
        }
    }
    out
}

/// PCI vendor and device id of the ConnectX-8 Data Direct function (the id the kernel's mlx5
/// data-direct driver binds to: drivers/infiniband/hw/mlx5/data_direct.c).
pub const DATA_DIRECT_ID: (&str, &str) = ("0x15b3", "0x2100");

/// Every Data Direct function under `root`, with the `VU` keyword of its VPD (the id the
/// kernel matches with the NIC's). Functions without a readable `VU` are left out.
pub fn data_direct_functions(root: &SysfsRoot) -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir(root.path("bus/pci/devices")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let bdf = e.file_name().to_string_lossy().into_owned();
        let dev = root.pci_device(&bdf);
        let attr = |a: &str| root.read_attr(&dev.join(a)).ok().flatten();
        if attr("vendor").as_deref() != Some(DATA_DIRECT_ID.0)
            || attr("device").as_deref() != Some(DATA_DIRECT_ID.1)
        {
            continue;
        }
        if let Some(vu) = crate::probe::sysfs::read_binary_attr(&dev.join("vpd"))
            .ok()
            .and_then(|v| vpd_keyword(&v, *b"VU"))
        {
            out.push((bdf, vu));
        }
    }
    out.sort();
    out
}

/// The Data Direct function serving the NIC at `nic_bdf`: the one whose VPD `VU` equals the
/// NIC's.
fn data_direct_of<'a>(
    root: &SysfsRoot,
    nic_bdf: &str,
    data_direct: &'a [(String, String)],
) -> Option<&'a String> {
    if data_direct.is_empty() {
        return None;
    }
    let bdf = PciAddress::parse(nic_bdf)?.to_string();
    let vu = crate::probe::sysfs::read_binary_attr(&root.pci_device(&bdf).join("vpd"))
        .ok()
        .and_then(|v| vpd_keyword(&v, *b"VU"))?;
    data_direct
        .iter()
        .find(|(_, v)| *v == vu)
        .map(|(bdf, _)| bdf)
}

/// A keyword's value from the read-only section (VPD-R) of PCI Vital Product Data, as sysfs
/// `vpd` holds it: large resources (tag byte with bit 7 set, 16-bit little-endian length), the
/// identifier string `0x82`, VPD-R `0x90` holding `<2-byte keyword><1-byte length><data>`
/// fields, VPD-W `0x91`, and the small end tag `0x78`. Trailing spaces and NULs are trimmed.
pub fn vpd_keyword(vpd: &[u8], key: [u8; 2]) -> Option<String> {
    let mut i = 0;
    while i < vpd.len() {
        let tag = vpd[i];
        if tag & 0x80 == 0 {
            // Small resource: the end tag (or anything else) ends the walk.
            return None;
        }
        let len = usize::from(*vpd.get(i + 1)?) | usize::from(*vpd.get(i + 2)?) << 8;
        let data = vpd.get(i + 3..i + 3 + len)?;
        if tag == 0x90 {
            let mut k = 0;
            while k + 3 <= data.len() {
                let n = usize::from(data[k + 2]);
                let value = data.get(k + 3..k + 3 + n)?;
                if data[k..k + 2] == key {
                    let text = String::from_utf8_lossy(value);
                    let text = text.trim_end_matches([' ', '\0']).to_string();
                    return (!text.is_empty()).then_some(text);
                }
                k += 3 + n;
            }
        }
        i += 3 + len;
    }
    None
}

/// Every GPU↔NIC pair, classified, ranked per GPU (rank 0 = nearest; ties by NIC name).
/// GPUs or NICs without a path get no entries.
pub fn gpu_nic_affinity(p: &Placement) -> Vec<GpuNicAffinity> {
    let mut out = Vec::new();
    let mut gpus: Vec<&(u32, PciPath)> = p.gpus.iter().collect();
    gpus.sort_by_key(|(i, _)| *i);
    for (gpu, gp) in gpus {
        let mut row: Vec<GpuNicAffinity> = p
            .nics
            .iter()
            .map(|(name, np)| GpuNicAffinity {
                gpu: *gpu,
                nic: name.clone(),
                connection: classify(gp, np),
                rank: 0,
            })
            .collect();
        row.sort_by(|x, y| {
            (x.connection.distance(), &x.nic).cmp(&(y.connection.distance(), &y.nic))
        });
        for (r, a) in row.iter_mut().enumerate() {
            a.rank = r as u32;
        }
        out.extend(row);
    }
    out
}

/// Classifies every ordered GPU pair from the sysfs tree: `(a, b, connection)`. Used to check
/// the tree against NVML's common-ancestor answer ([`GpuPair::pcie`]).
pub fn gpu_pairs_from_tree(p: &Placement) -> Vec<(u32, u32, Connection)> {
    let mut out = Vec::new();
    for (a, pa) in &p.gpus {
        for (b, pb) in &p.gpus {
            if a != b {
                out.push((*a, *b, classify(pa, pb)));
            }
        }
    }
    out.sort_by_key(|(a, b, _)| (*a, *b));
    out
}

/// Pairs where the sysfs tree and NVML disagree: `(a, b, sysfs, nvml)`. NVML pairs whose
/// answer is unknown are skipped.
pub fn disagreements(
    tree: &[(u32, u32, Connection)],
    nvml: &[GpuPair],
) -> Vec<(u32, u32, Connection, Connection)> {
    tree.iter()
        .filter_map(|&(a, b, c)| {
            let n = nvml.iter().find(|p| p.a == a && p.b == b)?;
            (n.pcie != Connection::Unknown && n.pcie != c).then_some((a, b, c, n.pcie))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> PciAddress {
        PciAddress::parse(s).unwrap()
    }

    fn path(hb: &str, chain: &[&str], numa: Option<i32>) -> PciPath {
        PciPath {
            host_bridge: hb.into(),
            chain: chain.iter().map(|s| addr(s)).collect(),
            numa_node: numa,
        }
    }

    #[test]
    fn pci_address_round_trip() {
        let a = addr("0000:1b:00.0");
        assert_eq!((a.domain, a.bus, a.device, a.function), (0, 0x1b, 0, 0));
        assert_eq!(a.to_string(), "0000:1b:00.0");
        assert_eq!(addr("00000001:C1:1f.7").to_string(), "0001:c1:1f.7");
        for bad in [
            "",
            "0000:1b:00",
            "0000:1b:20.0",
            "0000:1b:00.8",
            "0000:1b:00.0:1",
            "x:1b:00.0",
            "0000:1bb:00.0",
            "+000:1b:00.0",
            "0000:1b:0.0",
        ] {
            assert_eq!(PciAddress::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn vpd_keywords() {
        // Identifier string, VPD-R with PN and VU (and the checksum field RV), end tag.
        let mut v = vec![0x82, 4, 0, b'C', b'X', b'-', b'8'];
        let ro: Vec<u8> = [
            &b"PN"[..],
            &[3],
            b"MCX",
            b"VU",
            &[6],
            b"AB12\0 ",
            b"RV",
            &[1],
            &[0],
        ]
        .concat();
        v.extend([0x90, ro.len() as u8, 0]);
        v.extend(&ro);
        v.push(0x78);
        assert_eq!(vpd_keyword(&v, *b"VU").as_deref(), Some("AB12"));
        assert_eq!(vpd_keyword(&v, *b"PN").as_deref(), Some("MCX"));
        assert_eq!(vpd_keyword(&v, *b"SN"), None);
        // Truncated data: no answer, no panic.
        for cut in 0..v.len() {
            let _ = vpd_keyword(&v[..cut], *b"VU");
        }
        assert_eq!(vpd_keyword(&[0x78], *b"VU"), None);
    }

    #[test]
    fn cpulists() {
        assert_eq!(parse_cpulist("0-3,8").unwrap(), vec![0, 1, 2, 3, 8]);
        assert_eq!(parse_cpulist("5").unwrap(), vec![5]);
        assert_eq!(parse_cpulist("").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_cpulist("3-1"), None);
        assert_eq!(parse_cpulist("0-4294967295"), None);
        assert_eq!(parse_cpulist("a"), None);
        assert_eq!(parse_cpulist("1,,2"), None);
    }

    #[test]
    fn classification_levels() {
        // Root port 00:01.0, switch upstream 01:00.0, downstream ports 02:00.0 and 02:01.0.
        let gpu = path(
            "pci0000:00",
            &[
                "0000:00:01.0",
                "0000:01:00.0",
                "0000:02:00.0",
                "0000:03:00.0",
            ],
            Some(0),
        );
        let nic = path(
            "pci0000:00",
            &[
                "0000:00:01.0",
                "0000:01:00.0",
                "0000:02:01.0",
                "0000:04:00.0",
            ],
            Some(0),
        );
        assert_eq!(classify(&gpu, &nic), Connection::Pix);
        assert_eq!(classify(&nic, &gpu), Connection::Pix);
        // Two switch levels between them.
        let deep = path(
            "pci0000:00",
            &[
                "0000:00:01.0",
                "0000:01:00.0",
                "0000:02:02.0",
                "0000:05:00.0",
                "0000:06:00.0",
                "0000:07:00.0",
            ],
            Some(0),
        );
        assert_eq!(classify(&gpu, &deep), Connection::Pxb);
        // Different root ports of one host bridge.
        let other_rp = path("pci0000:00", &["0000:00:02.0", "0000:08:00.0"], Some(0));
        assert_eq!(classify(&gpu, &other_rp), Connection::Phb);
        // Flat tree: functions directly on the root bus.
        let f1 = path("pci0000:00", &["0000:00:06.0"], None);
        let f2 = path("pci0000:00", &["0000:00:07.0"], None);
        assert_eq!(classify(&f1, &f2), Connection::Phb);
        // Other host bridges.
        let same_node = path("pci0000:40", &["0000:40:01.0", "0000:41:00.0"], Some(0));
        let other_node = path("pci0000:80", &["0000:80:01.0", "0000:81:00.0"], Some(1));
        let unknown_node = path("pci0000:c0", &["0000:c0:01.0"], None);
        assert_eq!(classify(&gpu, &same_node), Connection::Node);
        assert_eq!(classify(&gpu, &other_node), Connection::Sys);
        assert_eq!(classify(&other_node, &unknown_node), Connection::Node);
    }

    #[test]
    fn ranking_breaks_ties_by_name() {
        let g = path("pci0000:00", &["0000:00:01.0"], Some(0));
        let p = Placement {
            gpus: vec![(0, g)],
            nics: vec![
                (
                    "mlx5_1".into(),
                    path("pci0000:10", &["0000:10:01.0"], Some(0)),
                ),
                (
                    "mlx5_0".into(),
                    path("pci0000:20", &["0000:20:01.0"], Some(0)),
                ),
                (
                    "mlx5_2".into(),
                    path("pci0000:00", &["0000:00:02.0"], Some(0)),
                ),
            ],
            errors: vec![],
        };
        let a = gpu_nic_affinity(&p);
        let order: Vec<(&str, Connection, u32)> = a
            .iter()
            .map(|x| (x.nic.as_str(), x.connection, x.rank))
            .collect();
        assert_eq!(
            order,
            vec![
                ("mlx5_2", Connection::Phb, 0),
                ("mlx5_0", Connection::Node, 1),
                ("mlx5_1", Connection::Node, 2)
            ]
        );
    }

    #[test]
    fn resolves_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir
            .path()
            .join("devices/pci0000:00/0000:00:01.0/0000:01:00.0");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("numa_node"), "1\n").unwrap();
        std::fs::create_dir_all(dir.path().join("bus/pci/devices")).unwrap();
        std::os::unix::fs::symlink(
            "../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0",
            dir.path().join("bus/pci/devices/0000:01:00.0"),
        )
        .unwrap();
        let root = SysfsRoot::new(dir.path());
        let p = PciPath::resolve(&root, "00000000:01:00.0").unwrap();
        assert_eq!(p.host_bridge, "pci0000:00");
        assert_eq!(p.chain, vec![addr("0000:00:01.0"), addr("0000:01:00.0")]);
        assert_eq!(p.numa_node, Some(1));
        assert!(matches!(
            PciPath::resolve(&root, "0000:02:00.0"),
            Err(PciError::Resolve { .. })
        ));
        let nested = dir.path().join("class/infiniband");
        std::fs::create_dir_all(&nested).unwrap();
        std::os::unix::fs::symlink("../../bus/pci/devices/0000:01:00.0", nested.join("x")).unwrap();
        assert_eq!(
            resolve_link(&nested.join("x")).unwrap(),
            dir.path().join("bus/pci/devices/0000:01:00.0")
        );
        std::os::unix::fs::symlink(
            "../../../../../../../../../../../../../../../../x",
            nested.join("far"),
        )
        .unwrap();
        assert!(resolve_link(&nested.join("far")).is_err());
        assert!(matches!(
            PciPath::resolve(&root, "nonsense"),
            Err(PciError::BadAddress(_))
        ));
    }
}
