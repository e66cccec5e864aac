//! Each InfiniBand compute port's leaf switch and the leaf's uplinks, by directed-route SMP
//! queries from the node itself (no subnet manager or central sweep involved).
//!
//! For a port `p` that is ACTIVE:
//! 1. NodeInfo along `0,p`: the neighbour's type, node GUID and the port it entered on
//!    (`LocalPortNum`). A switch is the port's leaf.
//! 2. For every other port `q` of the leaf: PortInfo (modifier `q`) along `0,p` for its state;
//!    where the link is up, NodeInfo along `0,p,q`. The switches found are the leaf's uplinks
//!    (spines), listed by node GUID. A leaf seen through an earlier port is not asked again.
//!
//! A port that is not ACTIVE is not queried: INIT without an SM LID reads `no-sm`, anything else
//! `not-active`. Storage and virtual NICs are never queried. Every query has a timeout and a
//! number of retries; a failure becomes the port's status, never a hang or a panic.
//!
//! The algorithm is pure over [`SmpChannel`]; `umad` (the `umad` feature) is the libibumad
//! edge. [`local_cas`] finds the local adapters and their ports by SMP alone (the `only` mode,
//! independent of sysfs, as the ibsim simulator needs).

pub mod mad;
#[cfg(feature = "umad")]
pub mod umad;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use self::mad::{Attribute, MadError};
use crate::model::{
    LinkLayer, NeighborStatus, Nic, NicPort, NicRole, NodeType, PhysState, PortNeighbor, PortState,
    Source, SourceStatus,
};

/// Why one query got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SmpError {
    /// No reply within the timeout, after every retry.
    #[error("no reply after {attempts} attempts of {timeout:?}")]
    Timeout {
        /// Attempts made, the first included.
        attempts: u32,
        /// The timeout of each.
        timeout: Duration,
    },
    /// The umad device could not be opened or used (permissions, no device file, no module).
    #[error("{0}")]
    NoAccess(String),
    /// The reply is not usable.
    #[error("bad reply")]
    Mad(#[source] MadError),
    /// Sending or receiving failed.
    #[error("{0}")]
    Io(String),
}

impl SmpError {
    fn status(&self) -> NeighborStatus {
        match self {
            Self::Timeout { .. } => NeighborStatus::Timeout,
            Self::NoAccess(_) => NeighborStatus::NoAccess,
            Self::Mad(_) | Self::Io(_) => NeighborStatus::Error,
        }
    }
}

/// Sends directed-route Gets out of one local port and waits for the reply.
pub trait SmpChannel {
    /// `SubnGet(attribute, modifier)` along `path`; the reply's SMP data.
    fn get(
        &mut self,
        path: &[u8],
        attribute: Attribute,
        modifier: u32,
    ) -> Result<[u8; mad::DATA_SIZE], SmpError>;

    /// Queries sent so far, retries included.
    fn sent(&self) -> u64;
}

/// Opens SMP channels on local adapter ports.
pub trait SmpOpener {
    /// The local adapters' names (libibumad's `umad_get_cas_names`).
    fn ca_names(&mut self) -> Result<Vec<String>, SmpError>;
    /// A channel out of `port` of adapter `ca`.
    fn open(&mut self, ca: &str, port: u32) -> Result<Box<dyn SmpChannel + '_>, SmpError>;
}

/// How long one query may take (default: 200 ms, 2 retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryBudget {
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Attempts after the first.
    pub retries: u32,
}

impl Default for QueryBudget {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(200),
            retries: 2,
        }
    }
}

/// What one probe cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Local InfiniBand rail ports that were queried (skipped ports are not counted).
    pub ports: u32,
    /// SMPs sent, retries included.
    pub queries: u64,
    /// Wall-clock time of the whole probe.
    pub took: Duration,
}

/// Leaf GUID to its uplinks, so a leaf reached by two ports (or in two probes, see
/// [`UPLINKS_KEPT`]) is asked once.
pub type UplinkCache = BTreeMap<u64, Vec<String>>;

/// How long a long-running prober keeps a leaf's uplinks before asking again. In between, a
/// probe costs one NodeInfo per rail port.
pub const UPLINKS_KEPT: Duration = Duration::from_secs(600);

/// Finds the leaf of local port `port` through `ch`, and its uplinks.
pub fn discover_port(ch: &mut dyn SmpChannel, port: u8, cache: &mut UplinkCache) -> PortNeighbor {
    let fail = |e: SmpError, what: &str| {
        PortNeighbor::failed(e.status(), format!("{what}: {}", crate::error::chain(&e)))
    };
    let path = [0u8, port];
    let leaf = match ch.get(&path, Attribute::NodeInfo, 0) {
        Ok(d) => mad::node_info(&d),
        Err(e) => return fail(e, "NodeInfo of the neighbour"),
    };
    if leaf.node_type != NodeType::Switch {
        return PortNeighbor::failed(
            NeighborStatus::NoSwitch,
            format!(
                "the far end is a {} ({}), not a switch",
                leaf.node_type,
                mad::guid_text(leaf.node_guid)
            ),
        );
    }
    let mut found =
        PortNeighbor::found(mad::guid_text(leaf.node_guid), leaf.local_port.to_string());
    if let Some(up) = cache.get(&leaf.node_guid) {
        found.uplink_ids = up.clone();
        return found;
    }
    let mut uplinks = Vec::new();
    for q in 1..=leaf.num_ports {
        if q == leaf.local_port {
            continue;
        }
        let pi = match ch.get(&path, Attribute::PortInfo, u32::from(q)) {
            Ok(d) => mad::port_info(&d),
            Err(e) => {
                let mut f = fail(e, &format!("PortInfo of leaf port {q}"));
                f.leaf_id = found.leaf_id;
                f.leaf_port = found.leaf_port;
                return f;
            }
        };
        if !pi.state.link_up() {
            continue;
        }
        match ch.get(&[0, port, q], Attribute::NodeInfo, 0) {
            Ok(d) => {
                let far = mad::node_info(&d);
                if far.node_type == NodeType::Switch && far.node_guid != leaf.node_guid {
                    uplinks.push(mad::guid_text(far.node_guid));
                }
            }
            Err(e) => {
                let mut f = fail(e, &format!("NodeInfo beyond leaf port {q}"));
                f.leaf_id = found.leaf_id;
                f.leaf_port = found.leaf_port;
                return f;
            }
        }
    }
    uplinks.sort();
    uplinks.dedup();
    cache.insert(leaf.node_guid, uplinks.clone());
    found.uplink_ids = uplinks;
    found
}

/// The neighbour status of a port that is not queried, or `None` when it should be.
fn skip_reason(p: &NicPort) -> Option<PortNeighbor> {
    match p.state {
        PortState::Active | PortState::ActiveDefer => None,
        PortState::Init if p.sm_lid == 0 => Some(PortNeighbor::failed(
            NeighborStatus::NoSm,
            "the port is INIT and no subnet manager has configured it (SM LID 0)",
        )),
        s => Some(PortNeighbor::failed(
            NeighborStatus::NotActive,
            format!("the port is {s}"),
        )),
    }
}

/// Queries every InfiniBand port of the compute rails among `nics` that libibumad knows (storage
/// and virtual NICs are never queried) and sets each port's `neighbor`. Returns the `ib-smp`
/// status and the cost, or `None` when no such port exists (a node without InfiniBand rails,
/// or NICs read from a sysfs tree that is not this machine's).
pub fn fill(
    nics: &mut [Nic],
    opener: &mut dyn SmpOpener,
    cache: &mut UplinkCache,
) -> Option<(SourceStatus, Cost)> {
    let start = Instant::now();
    let known = match opener.ca_names() {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(error = %crate::error::chain(&e), "libibumad lists no adapter");
            Vec::new()
        }
    };
    let mut cost = Cost::default();
    let mut problems = Vec::new();
    let mut any = false;
    for nic in nics.iter_mut() {
        if !nic.is_rail() {
            continue;
        }
        let has_ib = nic
            .ports
            .iter()
            .any(|p| p.link_layer == LinkLayer::Infiniband);
        if !has_ib {
            continue;
        }
        if !known.contains(&nic.name) {
            tracing::debug!(nic = %nic.name, "libibumad does not know this adapter; not queried");
            continue;
        }
        any = true;
        let name = nic.name.clone();
        for p in nic.ports.iter_mut() {
            if p.link_layer != LinkLayer::Infiniband {
                continue;
            }
            let nb = match skip_reason(p) {
                Some(nb) => nb,
                None => match u8::try_from(p.port) {
                    Err(_) => PortNeighbor::failed(NeighborStatus::Error, "port number above 255"),
                    Ok(port) => {
                        cost.ports += 1;
                        match opener.open(&name, p.port) {
                            Ok(mut ch) => {
                                let nb = discover_port(ch.as_mut(), port, cache);
                                cost.queries += ch.sent();
                                nb
                            }
                            Err(e) => PortNeighbor::failed(e.status(), crate::error::chain(&e)),
                        }
                    }
                },
            };
            if !matches!(nb.status, NeighborStatus::Ok | NeighborStatus::NotActive) {
                problems.push(format!("{name}/{}: {} ({})", p.port, nb.status, nb.detail));
            }
            p.neighbor = Some(nb);
        }
    }
    if !any {
        return None;
    }
    cost.took = start.elapsed();
    let status = if problems.is_empty() {
        SourceStatus::ok(Source::IbSmp)
    } else {
        SourceStatus::failed(Source::IbSmp, problems.join("; "))
    };
    Some((status.took(cost.took), cost))
}

/// The local adapters and their ports, by SMP alone: the adapter names from the opener, then
/// NodeInfo and every port's PortInfo along the empty route `0`. Role, PCI address and netdevs
/// are unknown (no sysfs is read). Errors are per adapter, in the returned list.
pub fn local_cas(opener: &mut dyn SmpOpener) -> (Vec<Nic>, Vec<String>, u64) {
    let mut errors = Vec::new();
    let mut sent = 0u64;
    let names = match opener.ca_names() {
        Ok(n) => n,
        Err(e) => {
            return (
                Vec::new(),
                vec![format!("listing adapters: {}", crate::error::chain(&e))],
                0,
            );
        }
    };
    let mut nics = Vec::new();
    for ca in names {
        // Port 0 lets libibumad pick the adapter's first usable port.
        let mut ch = match opener.open(&ca, 0) {
            Ok(ch) => ch,
            Err(e) => {
                errors.push(format!("{ca}: {}", crate::error::chain(&e)));
                continue;
            }
        };
        let ni = match ch.get(&[0], Attribute::NodeInfo, 0) {
            Ok(d) => mad::node_info(&d),
            Err(e) => {
                errors.push(format!("{ca}: NodeInfo: {}", crate::error::chain(&e)));
                sent += ch.sent();
                continue;
            }
        };
        let mut nic = Nic {
            name: ca.clone(),
            node_guid: mad::guid_text(ni.node_guid),
            sys_image_guid: mad::guid_text(ni.system_image_guid),
            role: NicRole::Unknown,
            ..Nic::default()
        };
        for port in 1..=ni.num_ports {
            match ch.get(&[0], Attribute::PortInfo, u32::from(port)) {
                Ok(d) => {
                    let pi = mad::port_info(&d);
                    nic.ports.push(NicPort {
                        port: u32::from(port),
                        state: pi.state,
                        phys_state: PhysState::from_iba(pi.phys_state),
                        link_layer: LinkLayer::Infiniband,
                        lid: u32::from(pi.lid),
                        sm_lid: u32::from(pi.sm_lid),
                        subnet_prefix: if pi.gid_prefix == 0 {
                            String::new()
                        } else {
                            let b = pi.gid_prefix.to_be_bytes();
                            format!(
                                "{:02x}{:02x}:{:02x}{:02x}:{:02x}{:02x}:{:02x}{:02x}",
                                b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
                            )
                        },
                        ..NicPort::default()
                    });
                }
                Err(e) => errors.push(format!(
                    "{ca} port {port}: PortInfo: {}",
                    crate::error::chain(&e)
                )),
            }
        }
        sent += ch.sent();
        nics.push(nic);
    }
    (nics, errors, sent)
}

#[cfg(test)]
mod tests;
