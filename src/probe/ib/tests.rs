//! The discovery algorithm against a fabric held in memory: a directed route is walked hop by
//! hop, as a switch's SMA would, and answered with NodeInfo and PortInfo bytes.

use std::collections::BTreeMap;

use super::{mad::DATA_SIZE, *};
use crate::model::{NicRole, PortState};

#[derive(Clone)]
struct FakeNode {
    switch: bool,
    guid: u64,
    /// Port number to (peer node index, peer port, link up).
    ports: BTreeMap<u8, (usize, u8, bool)>,
    num_ports: u8,
}

#[derive(Clone, Default)]
struct Fabric {
    nodes: Vec<FakeNode>,
    /// Paths (as sent) that never answer.
    silent: Vec<Vec<u8>>,
}

impl Fabric {
    fn add(&mut self, switch: bool, guid: u64, num_ports: u8) -> usize {
        self.nodes.push(FakeNode {
            switch,
            guid,
            ports: BTreeMap::new(),
            num_ports,
        });
        self.nodes.len() - 1
    }

    fn link(&mut self, a: usize, pa: u8, b: usize, pb: u8, up: bool) {
        self.nodes[a].ports.insert(pa, (b, pb, up));
        self.nodes[b].ports.insert(pb, (a, pa, up));
    }
}

struct FakeChannel<'a> {
    fabric: &'a Fabric,
    origin: usize,
    sent: u64,
}

impl SmpChannel for FakeChannel<'_> {
    fn get(
        &mut self,
        path: &[u8],
        attribute: Attribute,
        modifier: u32,
    ) -> Result<[u8; DATA_SIZE], SmpError> {
        self.sent += 1;
        let timeout = Err(SmpError::Timeout {
            attempts: 1,
            timeout: Duration::from_millis(1),
        });
        if self.fabric.silent.iter().any(|p| p == path) {
            return timeout;
        }
        let (mut node, mut entered) = (self.origin, 0u8);
        for &hop in &path[1..] {
            match self.fabric.nodes[node].ports.get(&hop) {
                Some(&(peer, peer_port, true)) => {
                    node = peer;
                    entered = peer_port;
                }
                _ => return timeout,
            }
        }
        let n = &self.fabric.nodes[node];
        let mut d = [0u8; DATA_SIZE];
        match attribute {
            Attribute::NodeInfo => {
                d[2] = if n.switch { 2 } else { 1 };
                d[3] = n.num_ports;
                d[12..20].copy_from_slice(&n.guid.to_be_bytes());
                d[36] = entered;
            }
            Attribute::PortInfo => {
                let q = u8::try_from(modifier).unwrap();
                if q == 0 || q > n.num_ports {
                    return Err(SmpError::Mad(MadError::Status(0x1c)));
                }
                let up = n.ports.get(&q).is_some_and(|l| l.2);
                d[28] = q;
                d[32] = if up { 4 } else { 1 };
                d[33] = if up { 0x50 } else { 0x20 };
            }
        }
        Ok(d)
    }

    fn sent(&self) -> u64 {
        self.sent
    }
}

struct FakeOpener<'a> {
    fabric: &'a Fabric,
    /// Adapter name to node index.
    hosts: BTreeMap<String, usize>,
    denied: bool,
}

impl SmpOpener for FakeOpener<'_> {
    fn ca_names(&mut self) -> Result<Vec<String>, SmpError> {
        Ok(self.hosts.keys().cloned().collect())
    }

    fn open(&mut self, ca: &str, _port: u32) -> Result<Box<dyn SmpChannel + '_>, SmpError> {
        if self.denied {
            return Err(SmpError::NoAccess("permission denied".into()));
        }
        Ok(Box::new(FakeChannel {
            fabric: self.fabric,
            origin: self.hosts[ca],
            sent: 0,
        }))
    }
}

/// Two spines, two leaves (8 ports), two hosts: host A on leaf 1 port 1 and leaf 2 port 1
/// (two rails), host B on leaf 1 port 2 only. Leaf port 3 goes to spine 1, port 4 to spine 2.
fn two_level() -> (Fabric, usize, usize) {
    let mut f = Fabric::default();
    let s1 = f.add(true, 0x300001, 8);
    let s2 = f.add(true, 0x300002, 8);
    let l1 = f.add(true, 0x200001, 8);
    let l2 = f.add(true, 0x200002, 8);
    let a = f.add(false, 0x100001, 2);
    let b = f.add(false, 0x100002, 1);
    f.link(a, 1, l1, 1, true);
    f.link(a, 2, l2, 1, true);
    f.link(b, 1, l1, 2, true);
    for (l, _) in [(l1, 0), (l2, 1)] {
        f.link(l, 3, s1, if l == l1 { 1 } else { 2 }, true);
        f.link(l, 4, s2, if l == l1 { 1 } else { 2 }, true);
    }
    (f, a, b)
}

fn ib_port(n: u32, state: PortState, sm_lid: u32) -> NicPort {
    NicPort {
        port: n,
        state,
        sm_lid,
        link_layer: LinkLayer::Infiniband,
        ..NicPort::default()
    }
}

#[test]
fn leaf_and_spines_of_each_port() {
    let (f, a, _) = two_level();
    let mut ch = FakeChannel {
        fabric: &f,
        origin: a,
        sent: 0,
    };
    let mut cache = UplinkCache::new();
    let nb = discover_port(&mut ch, 1, &mut cache);
    assert_eq!(nb.status, NeighborStatus::Ok, "{}", nb.detail);
    assert_eq!(nb.leaf_id, "0x0000000000200001");
    assert_eq!(nb.leaf_port, "1");
    assert_eq!(nb.uplink_ids, ["0x0000000000300001", "0x0000000000300002"]);
    // 1 NodeInfo, 7 PortInfo, NodeInfo of the 3 other linked ports (host B, 2 spines).
    assert_eq!(ch.sent, 1 + 7 + 3);
    let nb2 = discover_port(&mut ch, 2, &mut cache);
    assert_eq!(nb2.leaf_id, "0x0000000000200002");
    assert_eq!(nb2.uplink_ids, nb.uplink_ids);
    // A leaf seen before costs one query.
    let before = ch.sent;
    let again = discover_port(&mut ch, 1, &mut cache);
    assert_eq!(again, nb);
    assert_eq!(ch.sent, before + 1);
}

#[test]
fn back_to_back_cable_is_no_switch() {
    let mut f = Fabric::default();
    let a = f.add(false, 0x100001, 1);
    let b = f.add(false, 0x100002, 1);
    f.link(a, 1, b, 1, true);
    let mut ch = FakeChannel {
        fabric: &f,
        origin: a,
        sent: 0,
    };
    let nb = discover_port(&mut ch, 1, &mut UplinkCache::new());
    assert_eq!(nb.status, NeighborStatus::NoSwitch);
    assert!(nb.detail.contains("0x0000000000100002"), "{}", nb.detail);
    assert!(nb.leaf_id.is_empty());
}

#[test]
fn silence_is_a_timeout_and_keeps_what_was_found() {
    let (mut f, a, _) = two_level();
    f.silent.push(vec![0, 1, 4]);
    let mut ch = FakeChannel {
        fabric: &f,
        origin: a,
        sent: 0,
    };
    let nb = discover_port(&mut ch, 1, &mut UplinkCache::new());
    assert_eq!(nb.status, NeighborStatus::Timeout);
    assert!(nb.detail.contains("leaf port 4"), "{}", nb.detail);
    assert_eq!(nb.leaf_id, "0x0000000000200001");
    // A port with nothing behind it times out at the first query.
    let mut ch = FakeChannel {
        fabric: &f,
        origin: a,
        sent: 0,
    };
    let nb = discover_port(&mut ch, 7, &mut UplinkCache::new());
    assert_eq!(nb.status, NeighborStatus::Timeout);
    assert_eq!(ch.sent, 1);
}

#[test]
fn fill_queries_only_active_rail_ports() {
    let (f, a, _) = two_level();
    let mut opener = FakeOpener {
        fabric: &f,
        hosts: [("mlx5_0".to_string(), a)].into(),
        denied: false,
    };
    let mut nics = vec![
        Nic {
            name: "mlx5_0".into(),
            role: NicRole::Compute,
            ports: vec![
                ib_port(1, PortState::Active, 1),
                ib_port(2, PortState::Down, 0),
            ],
            ..Nic::default()
        },
        Nic {
            name: "mlx5_0".into(),
            role: NicRole::Storage,
            ports: vec![ib_port(1, PortState::Active, 1)],
            ..Nic::default()
        },
        Nic {
            name: "mlx5_0".into(),
            role: NicRole::Compute,
            virtual_function: true,
            ports: vec![ib_port(1, PortState::Active, 1)],
            ..Nic::default()
        },
        Nic {
            name: "mlx5_0".into(),
            role: NicRole::Compute,
            ports: vec![NicPort {
                link_layer: LinkLayer::Ethernet,
                ..ib_port(1, PortState::Active, 0)
            }],
            ..Nic::default()
        },
    ];
    let mut cache = UplinkCache::new();
    let (status, cost) = fill(&mut nics, &mut opener, &mut cache).unwrap();
    assert!(status.ok, "{}", status.error);
    assert_eq!(cost.ports, 1);
    // The next probe with the kept uplinks asks one NodeInfo per port.
    let mut again = nics.clone();
    let (_, second) = fill(&mut again, &mut opener, &mut cache).unwrap();
    assert_eq!(second.queries, 1);
    assert_eq!(again, nics);
    let rail = &nics[0].ports;
    assert_eq!(
        rail[0].neighbor.as_ref().unwrap().status,
        NeighborStatus::Ok
    );
    assert_eq!(
        rail[1].neighbor.as_ref().unwrap().status,
        NeighborStatus::NotActive
    );
    assert!(
        nics[1].ports[0].neighbor.is_none(),
        "storage is never queried"
    );
    assert!(nics[2].ports[0].neighbor.is_none(), "a VF is never queried");
    assert!(nics[3].ports[0].neighbor.is_none(), "Ethernet is not SMP's");
    let placed =
        crate::probe::network::place(&nics, &crate::probe::network::FabricNames::default());
    assert_eq!(
        placed.infiniband.leaf.as_deref(),
        Some("0x0000000000200001")
    );
}

#[test]
fn init_without_sm_and_no_access_are_statuses() {
    let (f, a, _) = two_level();
    let mut opener = FakeOpener {
        fabric: &f,
        hosts: [("mlx5_0".to_string(), a)].into(),
        denied: true,
    };
    let mut nics = vec![Nic {
        name: "mlx5_0".into(),
        role: NicRole::Compute,
        ports: vec![
            ib_port(1, PortState::Active, 1),
            ib_port(2, PortState::Init, 0),
        ],
        ..Nic::default()
    }];
    let (status, _) = fill(&mut nics, &mut opener, &mut UplinkCache::new()).unwrap();
    assert!(!status.ok);
    let p = &nics[0].ports;
    assert_eq!(
        p[0].neighbor.as_ref().unwrap().status,
        NeighborStatus::NoAccess
    );
    assert_eq!(p[1].neighbor.as_ref().unwrap().status, NeighborStatus::NoSm);
    assert!(
        status.error.contains("mlx5_0/1: no-access"),
        "{}",
        status.error
    );
    assert!(status.error.contains("mlx5_0/2: no-sm"), "{}", status.error);
    // An adapter libibumad does not list (NICs from a recorded sysfs tree) is not queried.
    let mut opener = FakeOpener {
        fabric: &f,
        hosts: BTreeMap::new(),
        denied: false,
    };
    let mut other = vec![Nic {
        name: "mlx5_7".into(),
        role: NicRole::Compute,
        ports: vec![ib_port(1, PortState::Active, 1)],
        ..Nic::default()
    }];
    assert!(fill(&mut other, &mut opener, &mut UplinkCache::new()).is_none());
    assert!(other[0].ports[0].neighbor.is_none());
}

#[test]
fn local_adapters_by_smp() {
    let (f, a, b) = two_level();
    let mut opener = FakeOpener {
        fabric: &f,
        hosts: [("ibsim0".to_string(), a), ("ibsim1".to_string(), b)].into(),
        denied: false,
    };
    let (nics, errors, sent) = local_cas(&mut opener);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(nics.len(), 2);
    assert_eq!(nics[0].node_guid, "0x0000000000100001");
    assert_eq!(nics[0].ports.len(), 2);
    assert!(nics[0].ports.iter().all(|p| p.state == PortState::Active));
    assert_eq!(nics[1].ports.len(), 1);
    assert_eq!(sent, 1 + 2 + 1 + 1);
}
