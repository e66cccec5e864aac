//! From the model's NICs to the netdevs to listen on, and from what was heard back to each
//! port's [`PortNeighbor`]: pure, the statuses and the clock passed in.
//!
//! - Listened on: every port of a compute rail ([`crate::model::Nic::is_rail`]: never storage,
//!   front-end or virtual NICs) whose link layer is Ethernet and whose state is ACTIVE, through
//!   its netdev ([`port_netdev`]).
//! - A rail's Ethernet port that is not active gets `not-active` and is not listened on.
//! - The leaf is the chassis ID as read (`aa:bb:cc:dd:ee:01`, or a name), the leaf port the port
//!   ID as read; [`crate::probe::network`] spells them as label values.
//! - An expired answer is kept as the port's leaf with the status `expired`; a failure keeps
//!   the last known answer in the fields, with the failure as the status.

use std::collections::BTreeMap;

use super::{FailureKind, Heard, LldpStatus};
use crate::model::{
    LinkLayer, NeighborStatus, Nic, NicPort, PortNeighbor, PortState, Source, SourceStatus,
};

/// The netdev of one port: a netdev of the port's GIDs that is one of the NIC's own (PCI
/// function's) netdevs; else the NIC's only netdev when it has one port (a bonded NIC's GIDs
/// name the bond, but LLDP is per physical link); else the first netdev of the port's GIDs.
pub fn port_netdev(nic: &Nic, port: &NicPort) -> Option<String> {
    let gid_netdevs = || {
        port.gids
            .iter()
            .map(|g| g.netdev.as_str())
            .filter(|n| !n.is_empty())
    };
    if let Some(n) = gid_netdevs().find(|n| nic.netdevs.iter().any(|m| m == n)) {
        return Some(n.to_string());
    }
    if nic.ports.len() == 1 && nic.netdevs.len() == 1 {
        return Some(nic.netdevs[0].clone());
    }
    gid_netdevs().next().map(str::to_string)
}

fn is_active(p: &NicPort) -> bool {
    matches!(p.state, PortState::Active | PortState::ActiveDefer)
}

fn listened(nic: &Nic, p: &NicPort) -> bool {
    nic.is_rail() && p.link_layer == LinkLayer::Ethernet
}

/// The netdevs to listen on: those of the active Ethernet ports of the compute rails, sorted
/// and distinct.
pub fn netdevs(nics: &[Nic]) -> Vec<String> {
    let mut out: Vec<String> = nics
        .iter()
        .flat_map(|n| n.ports.iter().map(move |p| (n, p)))
        .filter(|(n, p)| listened(n, p) && is_active(p))
        .filter_map(|(n, p)| port_netdev(n, p))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn heard_detail(h: &Heard) -> String {
    format!(
        "last frame at {}, TTL {} s",
        humantime::format_rfc3339_seconds(h.received_at),
        h.neighbor.ttl_s
    )
}

/// The neighbour of a port whose netdev `netdev` has `status`.
pub fn neighbor_of(netdev: &str, status: &LldpStatus) -> PortNeighbor {
    let with_last = |mut nb: PortNeighbor, last: Option<&Heard>| {
        if let Some(h) = last {
            nb.leaf_id = h.neighbor.chassis_id.to_string();
            nb.leaf_port = h.neighbor.port_id.to_string();
            nb.detail = format!(
                "{}; last known answer kept ({})",
                nb.detail,
                heard_detail(h)
            );
        }
        nb
    };
    match status {
        LldpStatus::Current(h) => PortNeighbor::found(
            h.neighbor.chassis_id.to_string(),
            h.neighbor.port_id.to_string(),
        ),
        LldpStatus::Expired(h) => with_last(
            PortNeighbor::failed(
                NeighborStatus::Expired,
                format!(
                    "{netdev}: LLDP {}: {}",
                    status.name(),
                    if h.neighbor.ttl_s == 0 {
                        "the switch sent a shutdown LLDPDU (TTL 0)"
                    } else {
                        "the TTL ran out"
                    }
                ),
            ),
            Some(h),
        ),
        LldpStatus::NoFrameYet => PortNeighbor::failed(
            NeighborStatus::NoFrameYet,
            format!(
                "{netdev}: LLDP {}: listening, no frame heard yet (switches send every 30 s by default)",
                status.name()
            ),
        ),
        LldpStatus::Failed {
            failure,
            last_known,
        } => with_last(
            PortNeighbor::failed(
                match failure.kind {
                    FailureKind::PermissionDenied => NeighborStatus::NoAccess,
                    FailureKind::NoSuchNetdev | FailureKind::Socket => NeighborStatus::Error,
                },
                format!("{netdev}: LLDP {}: {}", status.name(), failure.message),
            ),
            last_known.as_ref(),
        ),
        LldpStatus::NotWatched => PortNeighbor::failed(
            NeighborStatus::Error,
            format!("{netdev}: LLDP {}", status.name()),
        ),
    }
}

/// Sets the `neighbor` of every Ethernet port of the compute rails among `nics` from the LLDP
/// `statuses` (by netdev). Returns the `lldp` source status, or `None` when no such port exists.
/// The source fails when a listened port is not `current`, naming each.
pub fn fill(nics: &mut [Nic], statuses: &BTreeMap<String, LldpStatus>) -> Option<SourceStatus> {
    let mut problems = Vec::new();
    let mut any = false;
    for nic in nics.iter_mut() {
        let ports: Vec<(usize, Option<String>)> = nic
            .ports
            .iter()
            .enumerate()
            .filter(|(_, p)| listened(nic, p))
            .map(|(i, p)| (i, port_netdev(nic, p)))
            .collect();
        for (i, netdev) in ports {
            any = true;
            let p = &mut nic.ports[i];
            let nb = if !is_active(p) {
                PortNeighbor::failed(
                    NeighborStatus::NotActive,
                    format!("the port is {}", p.state),
                )
            } else {
                match &netdev {
                    None => PortNeighbor::failed(
                        NeighborStatus::Error,
                        "no netdev is known for this port",
                    ),
                    Some(n) => neighbor_of(n, statuses.get(n).unwrap_or(&LldpStatus::NotWatched)),
                }
            };
            if !matches!(nb.status, NeighborStatus::Ok | NeighborStatus::NotActive) {
                problems.push(format!(
                    "{}/{}: {} ({})",
                    nic.name, p.port, nb.status, nb.detail
                ));
            }
            p.neighbor = Some(nb);
        }
    }
    if !any {
        return None;
    }
    Some(if problems.is_empty() {
        SourceStatus::ok(Source::Lldp)
    } else {
        SourceStatus::failed(Source::Lldp, problems.join("; "))
    })
}

/// What of the statuses changes a port's neighbour: per netdev, the status name and the last
/// known chassis and port. The agent probes again when it changes (a first frame, a new
/// neighbour, a failure), not on every repeated frame.
pub fn digest(statuses: &BTreeMap<String, LldpStatus>) -> Vec<(String, &'static str, String)> {
    statuses
        .iter()
        .map(|(n, s)| {
            let who = s
                .last_known()
                .map(|h| format!("{} {}", h.neighbor.chassis_id, h.neighbor.port_id))
                .unwrap_or_default();
            (n.clone(), s.name(), who)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::{
        model::{Gid, NicRole},
        probe::lldp::{Failure, frame::parse_frame},
        probe::network::{FabricNames, place},
    };

    const MAC: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/lldp/lldpd-mac-ifname.bin"
    ));

    fn heard(at: u64) -> Heard {
        Heard::new(
            parse_frame(MAC).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(at),
        )
    }

    fn port(n: u32, state: PortState, netdev: &str) -> NicPort {
        NicPort {
            port: n,
            state,
            link_layer: LinkLayer::Ethernet,
            gids: vec![Gid {
                index: 1,
                gid: "fe80::1".into(),
                netdev: netdev.into(),
                ..Gid::default()
            }],
            ..NicPort::default()
        }
    }

    fn nic(name: &str, role: NicRole, netdevs: &[&str], ports: Vec<NicPort>) -> Nic {
        Nic {
            name: name.into(),
            role,
            netdevs: netdevs.iter().map(|s| s.to_string()).collect(),
            ports,
            ..Nic::default()
        }
    }

    fn node() -> Vec<Nic> {
        vec![
            nic(
                "mlx5_0",
                NicRole::Compute,
                &["eth2"],
                vec![port(1, PortState::Active, "eth2")],
            ),
            nic(
                "mlx5_1",
                NicRole::Compute,
                &["eth3"],
                vec![port(1, PortState::Active, "eth3")],
            ),
            nic(
                "mlx5_2",
                NicRole::Compute,
                &["eth4"],
                vec![port(1, PortState::Down, "eth4")],
            ),
            // Bonded storage: the GIDs name the bond.
            nic(
                "mlx5_bond_0",
                NicRole::Storage,
                &["eth8"],
                vec![port(1, PortState::Active, "bond0")],
            ),
            nic(
                "mlx5_5",
                NicRole::Virtual,
                &["eth9v0"],
                vec![port(1, PortState::Active, "eth9v0")],
            ),
        ]
    }

    #[test]
    fn only_active_compute_rails_are_listened_on() {
        assert_eq!(netdevs(&node()), ["eth2", "eth3"]);
        // A compute bond: the physical netdev, not the bond.
        let bonded = vec![nic(
            "mlx5_bond_1",
            NicRole::Compute,
            &["eth6"],
            vec![port(1, PortState::Active, "bond1")],
        )];
        assert_eq!(netdevs(&bonded), ["eth6"]);
        // InfiniBand ports never.
        let mut ib = node();
        for n in &mut ib {
            for p in &mut n.ports {
                p.link_layer = LinkLayer::Infiniband;
            }
        }
        assert!(netdevs(&ib).is_empty());
        assert!(fill(&mut ib, &BTreeMap::new()).is_none());
    }

    #[test]
    fn ports_take_the_chassis_and_port_and_the_node_its_leaf() {
        let h = heard(100);
        let chassis = h.neighbor.chassis_id.to_string();
        let statuses = BTreeMap::from([
            ("eth2".to_string(), LldpStatus::Current(h.clone())),
            ("eth3".to_string(), LldpStatus::Current(h.clone())),
        ]);
        let mut nics = node();
        let s = fill(&mut nics, &statuses).unwrap();
        assert!(s.ok, "{s:?}");
        let nb = nics[0].ports[0].neighbor.clone().unwrap();
        assert_eq!(nb.status, NeighborStatus::Ok);
        assert_eq!(nb.leaf_id, chassis);
        assert_eq!(nb.leaf_port, h.neighbor.port_id.to_string());
        assert_eq!(
            nics[2].ports[0].neighbor.as_ref().unwrap().status,
            NeighborStatus::NotActive
        );
        assert!(nics[3].ports[0].neighbor.is_none(), "storage untouched");
        assert!(nics[4].ports[0].neighbor.is_none(), "virtual untouched");
        let p = place(&nics, &FabricNames::default()).roce;
        assert_eq!(
            p.leaf,
            Some(crate::labels::syntax::id_label_value(&chassis)),
            "{p:?}"
        );
        assert!(!p.leaf.as_ref().unwrap().contains(':'));
        let names = FabricNames::parse(&format!("names:\n  \"{chassis}\": rack-12\n")).unwrap();
        assert_eq!(place(&nics, &names).roce.leaf.as_deref(), Some("rack-12"));
    }

    #[test]
    fn expired_keeps_the_last_answer_a_missing_frame_does_not_place() {
        let h = heard(100);
        let statuses = BTreeMap::from([
            ("eth2".to_string(), LldpStatus::Expired(h.clone())),
            ("eth3".to_string(), LldpStatus::Current(h.clone())),
        ]);
        let mut nics = node();
        let s = fill(&mut nics, &statuses).unwrap();
        assert!(!s.ok && s.error.contains("expired"), "{s:?}");
        let nb = nics[0].ports[0].neighbor.clone().unwrap();
        assert_eq!(nb.status, NeighborStatus::Expired);
        assert_eq!(nb.leaf_id, h.neighbor.chassis_id.to_string());
        assert!(
            nb.detail.contains("last known answer kept"),
            "{}",
            nb.detail
        );
        assert!(place(&nics, &FabricNames::default()).roce.leaf.is_some());

        let statuses = BTreeMap::from([
            ("eth2".to_string(), LldpStatus::NoFrameYet),
            ("eth3".to_string(), LldpStatus::Current(h.clone())),
        ]);
        let mut nics = node();
        fill(&mut nics, &statuses).unwrap();
        assert_eq!(
            nics[0].ports[0].neighbor.as_ref().unwrap().status,
            NeighborStatus::NoFrameYet
        );
        let p = place(&nics, &FabricNames::default()).roce;
        assert!(p.leaf.is_none() && p.su.is_none(), "{p:?}");
        assert!(p.reason.contains("mlx5_0/1: no-frame-yet"), "{}", p.reason);
    }

    #[test]
    fn failures_name_their_kind_and_keep_the_last_answer() {
        let h = heard(100);
        let failed = |kind, last: Option<Heard>| LldpStatus::Failed {
            failure: Failure {
                kind,
                message: "why".into(),
            },
            last_known: last,
        };
        for (st, want, leaf) in [
            (
                failed(FailureKind::PermissionDenied, None),
                NeighborStatus::NoAccess,
                "",
            ),
            (
                failed(FailureKind::NoSuchNetdev, None),
                NeighborStatus::Error,
                "",
            ),
            (
                failed(FailureKind::Socket, Some(h.clone())),
                NeighborStatus::Error,
                "x",
            ),
            (LldpStatus::NotWatched, NeighborStatus::Error, ""),
        ] {
            let nb = neighbor_of("eth2", &st);
            assert_eq!(nb.status, want, "{st:?}");
            assert!(nb.detail.contains(st.name()), "{}", nb.detail);
            assert_eq!(nb.leaf_id.is_empty(), leaf.is_empty(), "{nb:?}");
        }
    }

    #[test]
    fn digest_ignores_repeated_frames() {
        let a = BTreeMap::from([("eth2".to_string(), LldpStatus::Current(heard(100)))]);
        let b = BTreeMap::from([("eth2".to_string(), LldpStatus::Current(heard(130)))]);
        let c = BTreeMap::from([("eth2".to_string(), LldpStatus::Expired(heard(130)))]);
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(digest(&b), digest(&c));
    }
}
