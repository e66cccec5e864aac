//! Rail classification: which NICs carry GPU traffic (`compute`), which are storage or
//! front-end NICs (`storage`), and which are SR-IOV virtual functions (`virtual`), then the
//! rail pairing over the compute NICs only ([`one_to_one`], each rail on its [`rail_port`])
//! and how many GPUs share each rail.
//!
//! Pure functions over the model: the PCIe affinity is already computed
//! ([`super::pci::gpu_nic_affinity`]); nothing here reads sysfs.
//!
//! The rule, in order:
//! 1. an operator override ([`RoleOverrides`], `--nic-role ROLE=NAME,...`) wins, naming a NIC
//!    by its device name (`mlx5_4`), one of its netdevs (`enp94s0f0np0`) or its PCI address;
//! 2. an SR-IOV virtual function is `virtual`;
//! 3. with no GPU known, the role stays `unknown` (nothing to pair with);
//! 4. a NIC that is the nearest NIC of at least one GPU (ties included) is `compute`;
//! 5. any other NIC is `storage`.

use std::{
    collections::{BTreeMap, HashSet},
    str::FromStr,
};

use thiserror::Error;

use super::pci::PciAddress;
use crate::model::{
    Connection, Gpu, GpuNicAffinity, Nic, NicRole, PortState, RailPair, RailPairing,
};

/// A `--nic-role` value that cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoleOverrideError {
    /// Not `ROLE=NAME[,NAME...]`.
    #[error("{0:?} is not ROLE=NAME[,NAME...]")]
    Syntax(String),
    /// The role is not one of `compute`, `storage`, `virtual`.
    #[error("{0:?} is not a role (compute, storage, virtual)")]
    Role(String),
    /// One NIC named under two roles.
    #[error("{0:?} is named under two roles")]
    Conflict(String),
}

/// Operator-set NIC roles: names (device, netdev or PCI address) per role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleOverrides {
    by_name: BTreeMap<String, NicRole>,
}

impl RoleOverrides {
    /// Reads `--nic-role` values, each `ROLE=NAME[,NAME...]` (`storage=mlx5_4,enp94s0f0np0`).
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, RoleOverrideError> {
        let mut out = Self::default();
        for v in values {
            let (role, names) = v
                .split_once('=')
                .ok_or_else(|| RoleOverrideError::Syntax(v.to_string()))?;
            let role = NicRole::from_str(role.trim())
                .ok()
                .filter(|r| *r != NicRole::Unknown)
                .ok_or_else(|| RoleOverrideError::Role(role.to_string()))?;
            for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                out.insert(role, name)?;
            }
        }
        Ok(out)
    }

    /// Names `name` under `role`.
    pub fn insert(&mut self, role: NicRole, name: &str) -> Result<(), RoleOverrideError> {
        let key = normalize(name);
        match self.by_name.insert(key, role) {
            Some(old) if old != role => Err(RoleOverrideError::Conflict(name.to_string())),
            _ => Ok(()),
        }
    }

    /// True when no NIC is named.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The role set for `nic`, if any of its names is listed.
    pub fn role_of(&self, nic: &Nic) -> Option<NicRole> {
        std::iter::once(nic.name.as_str())
            .chain(nic.netdevs.iter().map(String::as_str))
            .chain((!nic.pci_address.is_empty()).then_some(nic.pci_address.as_str()))
            .find_map(|n| self.by_name.get(&normalize(n)).copied())
    }
}

/// PCI addresses in any accepted form compare equal; other names as written.
fn normalize(name: &str) -> String {
    PciAddress::parse(name).map_or_else(|| name.to_string(), |a| a.to_string())
}

/// Sets every NIC's role (see the module rule). `affinity` is the full GPU×NIC matrix.
pub fn classify(
    gpus: &[Gpu],
    nics: &mut [Nic],
    affinity: &[GpuNicAffinity],
    overrides: &RoleOverrides,
) {
    let nearest = nearest_nics(nics, affinity, overrides);
    for nic in nics.iter_mut() {
        nic.role_overridden = false;
        nic.role = if let Some(r) = overrides.role_of(nic) {
            nic.role_overridden = true;
            r
        } else if nic.virtual_function {
            NicRole::Virtual
        } else if gpus.is_empty() {
            NicRole::Unknown
        } else if nearest.iter().any(|n| *n == nic.name) {
            NicRole::Compute
        } else {
            NicRole::Storage
        };
    }
}

/// The NICs some GPU has nearest (ties included), among those a rail may be: not a VF and not
/// set to another role by the operator.
fn nearest_nics<'a>(
    nics: &[Nic],
    affinity: &'a [GpuNicAffinity],
    overrides: &RoleOverrides,
) -> Vec<&'a str> {
    let eligible = |name: &str| {
        nics.iter()
            .find(|n| n.name == name)
            .is_some_and(|n| match overrides.role_of(n) {
                Some(r) => r == NicRole::Compute,
                None => !n.virtual_function,
            })
    };
    let mut best: BTreeMap<u32, u8> = BTreeMap::new();
    for a in affinity.iter().filter(|a| eligible(&a.nic)) {
        let d = a.connection.distance();
        best.entry(a.gpu)
            .and_modify(|b| *b = (*b).min(d))
            .or_insert(d);
    }
    affinity
        .iter()
        .filter(|a| eligible(&a.nic) && best.get(&a.gpu) == Some(&a.connection.distance()))
        .map(|a| a.nic.as_str())
        .collect()
}

/// Rail pairing over the compute NICs only (roles must be set), with every GPU's rail and the
/// most GPUs sharing one. A GPU left without a one-to-one pair takes its nearest compute NIC as
/// a shared rail.
pub fn pairing(gpus: &[Gpu], nics: &[Nic], affinity: &[GpuNicAffinity]) -> RailPairing {
    let compute: Vec<Nic> = nics
        .iter()
        .filter(|n| n.role == NicRole::Compute)
        .cloned()
        .collect();
    let mut out = one_to_one(gpus, &compute, affinity);
    let mut rails = out.pairs.clone();
    for g in gpus {
        if rails.iter().any(|r| r.gpu == g.index) {
            continue;
        }
        // The affinity is sorted nearest first per GPU.
        if let Some(a) = affinity
            .iter()
            .filter(|a| a.gpu == g.index)
            .find(|a| compute.iter().any(|n| n.name == a.nic))
        {
            let port = compute
                .iter()
                .find(|n| n.name == a.nic)
                .map_or(1, |n| rail_port(n).port);
            rails.push(RailPair {
                gpu: g.index,
                nic: a.nic.clone(),
                port,
                connection: a.connection,
            });
        }
    }
    rails.sort_by_key(|r| r.gpu);
    out.gpus_per_rail = gpus_per_rail(&rails);
    out.gpu_rails = rails;
    out
}

/// The most GPUs on one NIC in `rails`; 0 when empty.
pub fn gpus_per_rail(rails: &[RailPair]) -> u32 {
    let mut per: BTreeMap<&str, u32> = BTreeMap::new();
    for r in rails {
        *per.entry(r.nic.as_str()).or_default() += 1;
    }
    per.into_values().max().unwrap_or(0)
}

/// The port a rail uses on a NIC, and whether it is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RailPort {
    /// The port number.
    pub port: u32,
    /// The port is active.
    pub active: bool,
}

/// The port a rail uses on `nic`: the lowest-numbered active port, else the lowest port, else 1.
pub fn rail_port(nic: &Nic) -> RailPort {
    if let Some(p) = nic
        .ports
        .iter()
        .filter(|p| p.state == PortState::Active)
        .min_by_key(|p| p.port)
    {
        return RailPort {
            port: p.port,
            active: true,
        };
    }
    let port = nic.ports.iter().map(|p| p.port).min().unwrap_or(1);
    RailPort {
        port,
        active: false,
    }
}

/// One-to-one GPU↔NIC pairing. Candidates are taken nearest first (by PCIe distance, then
/// active before inactive, then GPU index, then NIC name); a GPU or NIC already paired is
/// skipped. A GPU left without a NIC gets no pair. `rail_aligned` is true when every GPU got a
/// distinct NIC at PIX or PXB.
///
/// PCIe distance wins over port state on purpose: a rail is a wiring fact, and a down port is a
/// fault to report, not a reason to move a GPU onto another GPU's or a storage NIC.
pub fn one_to_one(gpus: &[Gpu], nics: &[Nic], affinity: &[GpuNicAffinity]) -> RailPairing {
    let port_of = |name: &str| nics.iter().find(|n| n.name == name).map(rail_port);
    let mut cands: Vec<(u8, bool, u32, &str, u32)> = affinity
        .iter()
        .filter_map(|a| {
            let RailPort { port, active } = port_of(&a.nic)?;
            Some((
                a.connection.distance(),
                !active,
                a.gpu,
                a.nic.as_str(),
                port,
            ))
        })
        .collect();
    cands.sort();
    let mut used_gpu = HashSet::new();
    let mut used_nic = HashSet::new();
    let mut pairs = Vec::new();
    for (_, _, gpu, nic, port) in cands {
        if used_gpu.contains(&gpu) || used_nic.contains(nic) {
            continue;
        }
        used_gpu.insert(gpu);
        used_nic.insert(nic);
        let connection = affinity
            .iter()
            .find(|a| a.gpu == gpu && a.nic == nic)
            .map(|a| a.connection)
            .unwrap_or_default();
        pairs.push(RailPair {
            gpu,
            nic: nic.to_string(),
            port,
            connection,
        });
    }
    pairs.sort_by_key(|p| p.gpu);
    let rail_aligned = !gpus.is_empty()
        && gpus.iter().all(|g| {
            pairs.iter().any(|p| {
                p.gpu == g.index && matches!(p.connection, Connection::Pix | Connection::Pxb)
            })
        });
    RailPairing {
        rail_aligned,
        pairs,
        ..RailPairing::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Connection, NicPort, PortState};

    fn gpu(i: u32) -> Gpu {
        Gpu {
            index: i,
            ..Gpu::default()
        }
    }

    fn nic(name: &str) -> Nic {
        Nic {
            name: name.into(),
            netdevs: vec![format!("net_{name}")],
            pci_address: String::new(),
            ports: vec![NicPort {
                port: 1,
                state: PortState::Active,
                ..NicPort::default()
            }],
            ..Nic::default()
        }
    }

    /// Affinity rows sorted nearest first per GPU, as `gpu_nic_affinity` makes them.
    fn affinity(rows: &[(u32, &str, Connection)]) -> Vec<GpuNicAffinity> {
        let mut v: Vec<GpuNicAffinity> = rows
            .iter()
            .map(|(g, n, c)| GpuNicAffinity {
                gpu: *g,
                nic: (*n).into(),
                connection: *c,
                rank: 0,
            })
            .collect();
        v.sort_by_key(|a| (a.gpu, a.connection.distance()));
        v
    }

    fn roles(nics: &[Nic]) -> Vec<(&str, NicRole)> {
        nics.iter().map(|n| (n.name.as_str(), n.role)).collect()
    }

    #[test]
    fn nearest_nics_are_compute_the_rest_storage_vfs_virtual() {
        use Connection::*;
        let gpus = [gpu(0), gpu(1)];
        let mut nics = vec![nic("rail0"), nic("rail1"), nic("store"), nic("vf")];
        nics[3].virtual_function = true;
        let aff = affinity(&[
            (0, "rail0", Pix),
            (0, "vf", Pix),
            (0, "rail1", Node),
            (0, "store", Node),
            (1, "rail1", Pix),
            (1, "rail0", Node),
            (1, "store", Sys),
            (1, "vf", Node),
        ]);
        classify(&gpus, &mut nics, &aff, &RoleOverrides::default());
        assert_eq!(
            roles(&nics),
            vec![
                ("rail0", NicRole::Compute),
                ("rail1", NicRole::Compute),
                ("store", NicRole::Storage),
                ("vf", NicRole::Virtual)
            ]
        );
        let p = pairing(&gpus, &nics, &aff);
        assert!(p.rail_aligned);
        assert_eq!(p.gpus_per_rail, 1);
        assert_eq!(p.gpu_rails, p.pairs);
        assert!(p.pairs.iter().all(|r| r.nic.starts_with("rail")));
    }

    #[test]
    fn two_gpus_on_one_nic_share_the_rail_and_skip_the_storage_nic() {
        use Connection::*;
        let gpus = [gpu(0), gpu(1)];
        let mut nics = vec![nic("rail"), nic("store")];
        let aff = affinity(&[
            (0, "rail", Pix),
            (0, "store", Node),
            (1, "rail", Pix),
            (1, "store", Node),
        ]);
        classify(&gpus, &mut nics, &aff, &RoleOverrides::default());
        assert_eq!(nics[1].role, NicRole::Storage);
        let p = pairing(&gpus, &nics, &aff);
        assert_eq!(
            p.pairs.len(),
            1,
            "one-to-one pairs never use the storage NIC"
        );
        assert!(!p.rail_aligned);
        let rails: Vec<(u32, &str)> = p
            .gpu_rails
            .iter()
            .map(|r| (r.gpu, r.nic.as_str()))
            .collect();
        assert_eq!(rails, vec![(0, "rail"), (1, "rail")]);
        assert_eq!(p.gpus_per_rail, 2);
    }

    #[test]
    fn overrides_win_and_match_netdevs_and_addresses() {
        use Connection::*;
        let gpus = [gpu(0)];
        let mut nics = vec![nic("a"), nic("b"), nic("c")];
        nics[2].pci_address = "0000:5d:00.0".into();
        let aff = affinity(&[(0, "a", Pix), (0, "b", Pxb), (0, "c", Sys)]);
        let o = RoleOverrides::parse(["storage=net_a", "compute = 00000000:5D:00.0"]).unwrap();
        classify(&gpus, &mut nics, &aff, &o);
        assert_eq!(
            roles(&nics),
            vec![
                ("a", NicRole::Storage),
                ("b", NicRole::Compute),
                ("c", NicRole::Compute)
            ]
        );
        assert!(nics[0].role_overridden && !nics[1].role_overridden && nics[2].role_overridden);
        let p = pairing(&gpus, &nics, &aff);
        assert_eq!(
            p.pairs[0].nic, "b",
            "the overridden storage NIC is never a rail"
        );
    }

    #[test]
    fn without_gpus_roles_are_unknown() {
        let mut nics = vec![nic("a")];
        classify(&[], &mut nics, &[], &RoleOverrides::default());
        assert_eq!(nics[0].role, NicRole::Unknown);
        assert_eq!(pairing(&[], &nics, &[]).gpus_per_rail, 0);
    }

    #[test]
    fn bad_overrides_are_refused() {
        assert_eq!(
            RoleOverrides::parse(["mlx5_0"]),
            Err(RoleOverrideError::Syntax("mlx5_0".into()))
        );
        assert_eq!(
            RoleOverrides::parse(["rail=mlx5_0"]),
            Err(RoleOverrideError::Role("rail".into()))
        );
        assert_eq!(
            RoleOverrides::parse(["unknown=mlx5_0"]),
            Err(RoleOverrideError::Role("unknown".into()))
        );
        assert_eq!(
            RoleOverrides::parse(["storage=x", "compute=x"]),
            Err(RoleOverrideError::Conflict("x".into()))
        );
        assert!(RoleOverrides::parse(["storage=x", "storage=x,y"]).is_ok());
    }

    /// The one-to-one pairing and the rail port, over NICs with one port up or down.
    mod one_to_one {
        use super::super::*;
        use crate::model::{Connection, NicPort, PortState};

        fn nic(name: &str, active: bool) -> Nic {
            Nic {
                name: name.into(),
                ports: vec![NicPort {
                    port: 1,
                    state: if active {
                        PortState::Active
                    } else {
                        PortState::Down
                    },
                    ..NicPort::default()
                }],
                ..Nic::default()
            }
        }

        fn gpu(i: u32) -> Gpu {
            Gpu {
                index: i,
                ..Gpu::default()
            }
        }

        fn aff(gpu: u32, nic: &str, c: Connection) -> GpuNicAffinity {
            GpuNicAffinity {
                gpu,
                nic: nic.into(),
                connection: c,
                rank: 0,
            }
        }

        #[test]
        fn pairing_is_one_to_one_and_prefers_active_on_ties() {
            let gpus = vec![gpu(0), gpu(1)];
            let nics = vec![nic("a", false), nic("b", true), nic("c", true)];
            let affinity = vec![
                aff(0, "a", Connection::Pix),
                aff(0, "b", Connection::Pix),
                aff(0, "c", Connection::Sys),
                aff(1, "a", Connection::Pxb),
                aff(1, "b", Connection::Node),
                aff(1, "c", Connection::Sys),
            ];
            let r = one_to_one(&gpus, &nics, &affinity);
            let got: Vec<(u32, &str, Connection)> = r
                .pairs
                .iter()
                .map(|p| (p.gpu, p.nic.as_str(), p.connection))
                .collect();
            assert_eq!(
                got,
                vec![(0, "b", Connection::Pix), (1, "a", Connection::Pxb)]
            );
            assert!(r.rail_aligned);

            // Three GPUs, two NICs: the third GPU gets none and the node is not rail-aligned.
            let gpus3 = vec![gpu(0), gpu(1), gpu(2)];
            let mut affinity3 = affinity.clone();
            affinity3.push(aff(2, "a", Connection::Pix));
            let r = one_to_one(&gpus3, &nics[..2], &affinity3);
            assert_eq!(r.pairs.len(), 2);
            assert!(!r.rail_aligned);
            let mut nics_used: Vec<&str> = r.pairs.iter().map(|p| p.nic.as_str()).collect();
            nics_used.dedup();
            assert_eq!(nics_used.len(), 2);
        }

        #[test]
        fn pairing_without_nics_is_not_aligned() {
            let r = one_to_one(&[gpu(0)], &[], &[]);
            assert!(r.pairs.is_empty());
            assert!(!r.rail_aligned);
        }

        #[test]
        fn rail_port_prefers_active() {
            let mut n = nic("x", false);
            n.ports.push(NicPort {
                port: 2,
                state: PortState::Active,
                ..NicPort::default()
            });
            assert_eq!(
                rail_port(&n),
                RailPort {
                    port: 2,
                    active: true
                }
            );
            assert_eq!(
                rail_port(&nic("y", false)),
                RailPort {
                    port: 1,
                    active: false
                }
            );
        }
    }
}
