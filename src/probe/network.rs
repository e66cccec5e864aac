//! The node's place in its RDMA fabrics: from the neighbour each compute port found (its leaf
//! switch, the leaf's port and uplinks; [`crate::model::PortNeighbor`]) to the node-level
//! `leaf`, `su` and `block` ([`FabricPlacement`]), and the optional mapping file that renames
//! switch IDs and hashes to human names.
//!
//! Everything here is pure except [`FabricNames::load`]. The probes that fill the ports (SMP
//! queries on InfiniBand, LLDP on Ethernet) live in [`crate::probe`].
//!
//! - **leaf**: the leaf's ID, only when every placed compute port of the fabric plugs into the
//!   same leaf.
//! - **su** (scalable unit): a short hash of the sorted, distinct set of the compute ports'
//!   leaves. In a rail-optimised fabric every port of a node is on a different leaf, so `leaf`
//!   is absent, but nodes with the same set are one hop apart on every rail.
//! - **block**: a short hash of the sorted, distinct set of the leaves' uplinks (the spines).
//!
//! - **rails**: each compute port's leaf is its rail ([`crate::model::PortRail`]), named by the
//!   mapping file's `rails:` (which may give the leaves of several scalable units, or of one
//!   plane, one rail name), else its `names:`, else the leaf ID's label spelling. The fabric is
//!   **rail-optimised** for this node when every placed compute port reaches a different leaf.
//!
//! A port whose rail is down (`not-active`, `no-sm`) is left out: the node is placed by the
//! rails that work. A port whose search failed otherwise (`timeout`, `no-access`, `no-switch`,
//! `error`) makes the placement unknown: a partial set would give a wrong `su`.
#![forbid(unsafe_code)]

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;

use crate::{
    labels::{
        LabelValue,
        syntax::{id_label_value, short_hash},
    },
    model::{FabricPlacement, LinkLayer, NeighborStatus, NetworkPlacement, Nic, NicPort, PortRail},
};

/// Names for fabric IDs, from the mapping file (`--fabric-names`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FabricNames {
    /// Lowercase ID (a GUID, a chassis ID, an `su` or `block` hash) to name.
    names: BTreeMap<String, String>,
    /// Lowercase leaf ID to the name of its rail (or plane).
    rails: BTreeMap<String, String>,
}

/// The mapping file's shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamesFile {
    #[serde(default)]
    names: BTreeMap<String, String>,
    #[serde(default)]
    rails: BTreeMap<String, String>,
}

/// Why a mapping file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NamesError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// Path of the mapping file (`--fabric-names`).
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not YAML or JSON of the expected shape.
    #[error("parsing the fabric names")]
    Parse(#[source] serde_yaml_ng::Error),
    /// A name is not a valid label value.
    #[error(
        "the name {name:?} of {id:?} is not a label value (at most 63 of [A-Za-z0-9._-], alphanumeric at both ends)"
    )]
    BadName {
        /// The ID in the file (a GUID, a chassis ID, an `su` or `block` hash).
        id: String,
        /// The name given to it.
        name: String,
    },
    /// Two keys that differ only by case.
    #[error("the ID {0:?} is named twice")]
    Duplicate(String),
}

impl FabricNames {
    /// Parses a mapping file's text (YAML, or JSON, which is YAML too):
    ///
    /// ```yaml
    /// names:
    ///   "0x0002c90300a1b2c3": rack-12   # a leaf's node GUID
    ///   "aa:bb:cc:dd:ee:01": rack-13    # a RoCE leaf's chassis ID
    ///   "3f2a1b9c0d": su-1              # an su or block hash
    /// rails:                            # optional: a leaf's rail (or plane)
    ///   "0x0002c90300a1b2c3": rail-0
    ///   "0x0002c90300d4e5f6": rail-0    # rail 0 of another scalable unit
    /// ```
    pub fn parse(text: &str) -> Result<Self, NamesError> {
        let file: NamesFile = if text.trim().is_empty() {
            NamesFile {
                names: BTreeMap::new(),
                rails: BTreeMap::new(),
            }
        } else {
            serde_yaml_ng::from_str(text).map_err(NamesError::Parse)?
        };
        Ok(Self {
            names: checked(file.names)?,
            rails: checked(file.rails)?,
        })
    }

    /// Reads and parses a mapping file.
    pub fn load(path: &Path) -> Result<Self, NamesError> {
        let text = std::fs::read_to_string(path).map_err(|source| NamesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// How many IDs are named (under `names:` and `rails:`).
    pub fn len(&self) -> usize {
        self.names.len() + self.rails.len()
    }

    /// True when no ID is named.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.rails.is_empty()
    }

    /// The name of `id` (matched without regard to case, as read or in its label spelling).
    pub fn name(&self, id: &str) -> Option<&str> {
        lookup(&self.names, id)
    }

    /// The rail of a port that reaches the leaf `leaf_id`: its name under `rails:`, else under
    /// `names:`, else the ID's label spelling.
    pub fn rail(&self, leaf_id: &str) -> String {
        lookup(&self.rails, leaf_id).map_or_else(|| self.display(leaf_id), str::to_string)
    }

    /// The name of `id`, or its label spelling.
    fn display(&self, id: &str) -> String {
        self.name(id)
            .map(str::to_string)
            .unwrap_or_else(|| id_label_value(id))
    }
}

/// The names of one section of the file, keyed by lowercase ID; every name a label value.
fn checked(section: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, NamesError> {
    let mut out = BTreeMap::new();
    for (id, name) in section {
        if name.is_empty() || LabelValue::new(&name).is_err() {
            return Err(NamesError::BadName { id, name });
        }
        let key = id.trim().to_ascii_lowercase();
        if out.insert(key, name).is_some() {
            return Err(NamesError::Duplicate(id));
        }
    }
    Ok(out)
}

/// `id`'s entry in `map` (matched without regard to case, as read or in its label spelling).
fn lookup<'a>(map: &'a BTreeMap<String, String>, id: &str) -> Option<&'a str> {
    let lower = id.trim().to_ascii_lowercase();
    map.get(&lower)
        .or_else(|| map.get(&id_label_value(id).to_ascii_lowercase()))
        .map(String::as_str)
}

/// The node's place in both fabrics.
pub fn place(nics: &[Nic], names: &FabricNames) -> NetworkPlacement {
    NetworkPlacement {
        infiniband: place_fabric(nics, LinkLayer::Infiniband, names),
        roce: place_fabric(nics, LinkLayer::Ethernet, names),
    }
}

/// The node's place in the fabric of one link layer, from the neighbours of its compute ports
/// of that link layer. Ports that were not looked for (no `neighbor`) are left out; a fabric
/// with no port looked for is empty.
pub fn place_fabric(nics: &[Nic], link_layer: LinkLayer, names: &FabricNames) -> FabricPlacement {
    let ports: Vec<(&Nic, &NicPort)> = nics
        .iter()
        .filter(|n| n.is_rail())
        .flat_map(|n| n.ports.iter().map(move |p| (n, p)))
        .filter(|(_, p)| p.link_layer == link_layer && p.neighbor.is_some())
        .collect();
    if ports.is_empty() {
        return FabricPlacement::default();
    }
    let mut leaves: Vec<&str> = Vec::new();
    let mut uplinks: Vec<&str> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let mut rails: Vec<PortRail> = Vec::new();
    let mut down = 0usize;
    for (nic, port) in &ports {
        let Some(nb) = port.neighbor.as_ref() else {
            continue;
        };
        match nb.status {
            // An expired LLDP answer is the last known leaf: kept until another is heard.
            NeighborStatus::Ok | NeighborStatus::Expired if !nb.leaf_id.is_empty() => {
                leaves.push(nb.leaf_id.as_str());
                uplinks.extend(nb.uplink_ids.iter().map(String::as_str));
                rails.push(PortRail {
                    nic: nic.name.clone(),
                    port: port.port,
                    rail: names.rail(&nb.leaf_id),
                });
            }
            NeighborStatus::NotActive | NeighborStatus::NoSm => down += 1,
            ref s => failed.push(format!(
                "{}/{}: {}",
                nic.name,
                port.port,
                if s.as_str().is_empty() {
                    "unknown"
                } else {
                    s.as_str()
                }
            )),
        }
    }
    rails.sort_by(|a, b| (&a.nic, a.port).cmp(&(&b.nic, b.port)));
    if !failed.is_empty() {
        // Each found port's rail is still its own fact; the node-level values are unknown.
        return FabricPlacement {
            reason: format!("no leaf found for {}", failed.join(", ")),
            rails,
            ..FabricPlacement::default()
        };
    }
    if leaves.is_empty() {
        return FabricPlacement {
            reason: format!("no compute port is up ({down} down or without a subnet manager)"),
            ..FabricPlacement::default()
        };
    }
    let mut distinct = leaves.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let leaf = (distinct.len() == 1).then(|| names.display(distinct[0]));
    let su_hash = short_hash(distinct.iter().copied());
    let su = Some(names.name(&su_hash).map_or(su_hash, str::to_string));
    let block = (!uplinks.is_empty()).then(|| {
        let h = short_hash(uplinks.iter().copied());
        names.name(&h).map_or(h, str::to_string)
    });
    let rail_optimised = (leaves.len() >= 2).then_some(distinct.len() == leaves.len());
    let mut reason = Vec::new();
    if leaf.is_none() {
        reason.push(format!(
            "the compute ports plug into {} leaves",
            distinct.len()
        ));
    }
    if block.is_none() {
        reason.push("the leaves have no uplinks".to_string());
    }
    FabricPlacement {
        leaf,
        su,
        block,
        reason: reason.join("; "),
        rails,
        rail_optimised,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NicRole;
    use crate::model::{PortNeighbor, PortState};

    fn port(n: u32, ll: LinkLayer, nb: Option<PortNeighbor>) -> NicPort {
        NicPort {
            port: n,
            state: PortState::Active,
            link_layer: ll,
            neighbor: nb,
            ..NicPort::default()
        }
    }

    fn found(leaf: &str, port: &str, up: &[&str]) -> Option<PortNeighbor> {
        Some(PortNeighbor {
            uplink_ids: up.iter().map(|s| s.to_string()).collect(),
            ..PortNeighbor::found(leaf, port)
        })
    }

    fn nic(name: &str, role: NicRole, ports: Vec<NicPort>) -> Nic {
        Nic {
            name: name.into(),
            role,
            ports,
            ..Nic::default()
        }
    }

    const L1: &str = "0x0000000000200001";
    const L2: &str = "0x0000000000200002";
    const S1: &str = "0x0000000000300001";
    const S2: &str = "0x0000000000300002";

    #[test]
    fn one_leaf_for_every_port() {
        let nics = vec![
            nic(
                "mlx5_0",
                NicRole::Compute,
                vec![port(1, LinkLayer::Infiniband, found(L1, "3", &[S2, S1]))],
            ),
            nic(
                "mlx5_1",
                NicRole::Compute,
                vec![port(1, LinkLayer::Infiniband, found(L1, "4", &[S1, S2]))],
            ),
        ];
        let p = place(&nics, &FabricNames::default());
        assert_eq!(p.infiniband.leaf.as_deref(), Some(L1));
        assert_eq!(p.infiniband.su, Some(short_hash([L1])));
        assert_eq!(p.infiniband.block, Some(short_hash([S1, S2])));
        assert_eq!(p.infiniband.reason, "");
        assert!(p.roce.is_empty());
    }

    #[test]
    fn rail_optimised_has_su_but_no_leaf() {
        let a = vec![nic(
            "mlx5_0",
            NicRole::Compute,
            vec![
                port(1, LinkLayer::Infiniband, found(L1, "1", &[S1])),
                port(2, LinkLayer::Infiniband, found(L2, "1", &[S2])),
            ],
        )];
        // The same leaves in the other order: the same unit.
        let b = vec![nic(
            "mlx5_0",
            NicRole::Compute,
            vec![
                port(1, LinkLayer::Infiniband, found(L2, "7", &[S2])),
                port(2, LinkLayer::Infiniband, found(L1, "7", &[S1])),
            ],
        )];
        let (pa, pb) = (
            place(&a, &FabricNames::default()).infiniband,
            place(&b, &FabricNames::default()).infiniband,
        );
        assert_eq!(pa.leaf, None);
        assert!(pa.reason.contains("2 leaves"), "{}", pa.reason);
        assert_eq!(pa.su, pb.su);
        assert_eq!(pa.block, pb.block);
        assert_ne!(pa.su, Some(short_hash([L1])));
    }

    fn rails_of(p: &FabricPlacement) -> Vec<(&str, u32, &str)> {
        p.rails
            .iter()
            .map(|r| (r.nic.as_str(), r.port, r.rail.as_str()))
            .collect()
    }

    #[test]
    fn each_port_is_on_the_rail_of_its_leaf() {
        // Two NICs, each on a leaf of its own: rail-optimised.
        let nics = vec![
            nic(
                "mlx5_1",
                NicRole::Compute,
                vec![port(1, LinkLayer::Infiniband, found(L2, "1", &[S1]))],
            ),
            nic(
                "mlx5_0",
                NicRole::Compute,
                vec![port(1, LinkLayer::Infiniband, found(L1, "1", &[S1]))],
            ),
        ];
        let p = place(&nics, &FabricNames::default()).infiniband;
        assert_eq!(rails_of(&p), vec![("mlx5_0", 1, L1), ("mlx5_1", 1, L2)]);
        assert_eq!(p.rail_optimised, Some(true));
        assert_eq!(p.rail("mlx5_1", 1), Some(L2));
        assert_eq!(p.rail("mlx5_1", 2), None);
        // A third port on the first leaf: two ports share a rail, not rail-optimised.
        let mut shared = nics.clone();
        shared.push(nic(
            "mlx5_2",
            NicRole::Compute,
            vec![port(1, LinkLayer::Infiniband, found(L1, "2", &[S1]))],
        ));
        let p = place(&shared, &FabricNames::default()).infiniband;
        assert_eq!(p.rail_optimised, Some(false));
        assert_eq!(p.rail("mlx5_2", 1), Some(L1));
        // One port: nothing to tell.
        let p = place(&nics[..1], &FabricNames::default()).infiniband;
        assert_eq!(p.rail_optimised, None);
        assert_eq!(rails_of(&p), vec![("mlx5_1", 1, L2)]);
    }

    #[test]
    fn found_ports_keep_their_rail_when_another_port_fails() {
        let nics = vec![nic(
            "mlx5_0",
            NicRole::Compute,
            vec![
                port(1, LinkLayer::Infiniband, found(L1, "1", &[S1])),
                port(
                    2,
                    LinkLayer::Infiniband,
                    Some(PortNeighbor::failed(NeighborStatus::Timeout, "x")),
                ),
                port(
                    3,
                    LinkLayer::Infiniband,
                    Some(PortNeighbor::failed(NeighborStatus::NotActive, "down")),
                ),
            ],
        )];
        let p = place(&nics, &FabricNames::default()).infiniband;
        assert!(p.su.is_none());
        assert_eq!(p.rail_optimised, None);
        assert_eq!(rails_of(&p), vec![("mlx5_0", 1, L1)]);
    }

    #[test]
    fn rails_are_named_by_rails_then_names_then_the_id() {
        let ib = |leaf: &str| {
            vec![
                nic(
                    "mlx5_0",
                    NicRole::Compute,
                    vec![port(1, LinkLayer::Infiniband, found(leaf, "1", &[S1]))],
                ),
                nic(
                    "mlx5_1",
                    NicRole::Compute,
                    vec![port(1, LinkLayer::Infiniband, found(L2, "1", &[S1]))],
                ),
            ]
        };
        const L3: &str = "0x0000000000200003";
        // Rail 0 is L1 in one scalable unit and L3 in another; L2 only has a leaf name.
        let names = FabricNames::parse(&format!(
            "names:\n  \"{L1}\": leaf-1\n  \"{L2}\": leaf-2\nrails:\n  \"{L1}\": rail-0\n  \"{}\": rail-0\n",
            L3.to_uppercase().replace("0X", "0x")
        ))
        .unwrap();
        assert_eq!(names.len(), 4);
        let a = place(&ib(L1), &names).infiniband;
        let b = place(&ib(L3), &names).infiniband;
        assert_eq!(
            rails_of(&a),
            vec![("mlx5_0", 1, "rail-0"), ("mlx5_1", 1, "leaf-2")]
        );
        assert_eq!(rails_of(&a), rails_of(&b));
        assert_ne!(a.su, b.su, "other leaves, another unit");
        // A RoCE chassis ID without a name is its label spelling.
        let roce = vec![nic(
            "mlx5_0",
            NicRole::Compute,
            vec![port(
                1,
                LinkLayer::Ethernet,
                found("AA:BB:CC:DD:EE:01", "Ethernet1", &[]),
            )],
        )];
        let p = place(&roce, &names);
        assert_eq!(p.rail("mlx5_0", 1), Some("AA-BB-CC-DD-EE-01"));
        assert!(matches!(
            FabricNames::parse("rails:\n  x: \"rail 0\"\n"),
            Err(NamesError::BadName { .. })
        ));
    }

    #[test]
    fn storage_virtual_and_unqueried_ports_are_left_out() {
        let nics = vec![
            nic(
                "mlx5_0",
                NicRole::Compute,
                vec![
                    port(1, LinkLayer::Infiniband, found(L1, "1", &[S1])),
                    port(2, LinkLayer::Infiniband, None),
                ],
            ),
            nic(
                "mlx5_9",
                NicRole::Storage,
                vec![port(1, LinkLayer::Infiniband, found(L2, "1", &[S2]))],
            ),
            nic(
                "mlx5_8",
                NicRole::Virtual,
                vec![port(
                    1,
                    LinkLayer::Infiniband,
                    Some(PortNeighbor::failed(NeighborStatus::Timeout, "x")),
                )],
            ),
        ];
        let p = place(&nics, &FabricNames::default()).infiniband;
        assert_eq!(p.leaf.as_deref(), Some(L1));
        assert_eq!(p.block, Some(short_hash([S1])));
    }

    #[test]
    fn a_failed_port_makes_it_unknown_a_down_port_does_not() {
        let mk = |status| {
            vec![nic(
                "mlx5_0",
                NicRole::Compute,
                vec![
                    port(1, LinkLayer::Infiniband, found(L1, "1", &[S1])),
                    port(
                        2,
                        LinkLayer::Infiniband,
                        Some(PortNeighbor::failed(status, "why")),
                    ),
                ],
            )]
        };
        for s in [
            NeighborStatus::Timeout,
            NeighborStatus::NoAccess,
            NeighborStatus::NoSwitch,
            NeighborStatus::Error,
        ] {
            let p = place(&mk(s.clone()), &FabricNames::default()).infiniband;
            assert!(
                p.leaf.is_none() && p.su.is_none() && p.block.is_none(),
                "{s}"
            );
            assert!(p.reason.contains("mlx5_0/2"), "{}", p.reason);
            assert!(p.reason.contains(s.as_str()), "{}", p.reason);
        }
        for s in [NeighborStatus::NotActive, NeighborStatus::NoSm] {
            let p = place(&mk(s.clone()), &FabricNames::default()).infiniband;
            assert_eq!(p.leaf.as_deref(), Some(L1), "{s}");
        }
        let all_down = vec![nic(
            "mlx5_0",
            NicRole::Compute,
            vec![port(
                1,
                LinkLayer::Infiniband,
                Some(PortNeighbor::failed(NeighborStatus::NoSm, "init")),
            )],
        )];
        let p = place(&all_down, &FabricNames::default()).infiniband;
        assert!(p.su.is_none());
        assert!(p.reason.contains("no compute port is up"), "{}", p.reason);
    }

    #[test]
    fn no_uplinks_no_block() {
        let nics = vec![nic(
            "mlx5_0",
            NicRole::Unknown,
            vec![port(1, LinkLayer::Infiniband, found(L1, "1", &[]))],
        )];
        let p = place(&nics, &FabricNames::default()).infiniband;
        assert_eq!(p.leaf.as_deref(), Some(L1));
        assert!(p.block.is_none());
        assert!(p.reason.contains("no uplinks"));
    }

    /// A RoCE port filled from an LLDP neighbour: chassis ID and port ID strings.
    #[test]
    fn roce_leaf_from_lldp_neighbours() {
        let nics = vec![
            nic(
                "mlx5_0",
                NicRole::Compute,
                vec![port(
                    1,
                    LinkLayer::Ethernet,
                    found("AA:BB:CC:DD:EE:01", "Ethernet12", &[]),
                )],
            ),
            nic(
                "mlx5_1",
                NicRole::Compute,
                vec![port(
                    1,
                    LinkLayer::Ethernet,
                    found("AA:BB:CC:DD:EE:01", "Ethernet13", &[]),
                )],
            ),
        ];
        let p = place(&nics, &FabricNames::default());
        assert_eq!(p.roce.leaf.as_deref(), Some("AA-BB-CC-DD-EE-01"));
        assert!(p.infiniband.is_empty());
        let names = FabricNames::parse("names:\n  aa:bb:cc:dd:ee:01: rack-12\n").unwrap();
        assert_eq!(place(&nics, &names).roce.leaf.as_deref(), Some("rack-12"));
    }

    #[test]
    fn names_rename_leaves_and_hashes() {
        let nics = vec![nic(
            "mlx5_0",
            NicRole::Compute,
            vec![port(1, LinkLayer::Infiniband, found(L1, "1", &[S1]))],
        )];
        let su = short_hash([L1]);
        let text = format!(
            "{{\"names\": {{\"{}\": \"leaf-7\", \"{su}\": \"su-1\"}}}}",
            L1.to_uppercase().replace("0X", "0x")
        );
        let names = FabricNames::parse(&text).unwrap();
        assert_eq!(names.len(), 2);
        let p = place(&nics, &names).infiniband;
        assert_eq!(p.leaf.as_deref(), Some("leaf-7"));
        assert_eq!(p.su.as_deref(), Some("su-1"));
        assert_eq!(p.block, Some(short_hash([S1])));
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(matches!(
            FabricNames::parse("names:\n  x: \"rack 12\"\n"),
            Err(NamesError::BadName { .. })
        ));
        assert!(matches!(
            FabricNames::parse("names:\n  AB: a\n  ab: b\n"),
            Err(NamesError::Duplicate(_))
        ));
        assert!(matches!(
            FabricNames::parse("leaves: {}\n"),
            Err(NamesError::Parse(_))
        ));
        assert!(FabricNames::parse("").unwrap().is_empty());
        // An unquoted 0x... key is read as written.
        let n = FabricNames::parse("names:\n  0x00ab: rack-1\n").unwrap();
        assert_eq!(n.name("0x00AB"), Some("rack-1"));
        assert!(FabricNames::load(Path::new("/nonexistent/names.yaml")).is_err());
    }
}
