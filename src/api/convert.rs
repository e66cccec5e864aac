//! Conversion between the model ([`crate::model`]) and the generated proto types
//! ([`crate::proto::v1`]), both ways: the server sends the model, `nodetopo query` reads it back.
//!
//! Optional model fields map to empty strings in proto3 and back; an unknown enum number from a
//! newer writer reads as the model's `Unknown`.

use std::time::SystemTime;

use crate::{model as m, proto::v1 as p};

/// Maps a model enum to a proto enum and back; unknown numbers read as the first variant.
macro_rules! enum_map {
    ($model:ty, $proto:ty, { $($mv:ident => $pv:ident),+ $(,)? }) => {
        impl From<$model> for $proto {
            fn from(v: $model) -> Self {
                match v { $(<$model>::$mv => <$proto>::$pv),+ }
            }
        }
        impl From<$proto> for $model {
            fn from(v: $proto) -> Self {
                match v { $(<$proto>::$pv => <$model>::$mv),+ }
            }
        }
    };
}

enum_map!(m::GpuFamily, p::GpuFamily, {
    Unknown => Unspecified, Kepler => Kepler, Maxwell => Maxwell, Pascal => Pascal,
    Volta => Volta, Turing => Turing, Ampere => Ampere, Ada => Ada, Hopper => Hopper,
    Blackwell => Blackwell,
});
enum_map!(m::MigMode, p::MigMode, {
    Unknown => Unspecified, Unsupported => Unsupported, Disabled => Disabled, Enabled => Enabled,
});
enum_map!(m::NvLinkRemoteType, p::NvLinkRemoteType, {
    Unknown => Unspecified, Gpu => Gpu, Switch => Switch, Ibmnpu => Ibmnpu,
});
enum_map!(m::Connection, p::Connection, {
    Unknown => Unspecified, NvLink => Nvlink, Internal => Internal, Pix => Pix, Pxb => Pxb,
    Phb => Phb, Node => Node, Sys => Sys,
});
enum_map!(m::P2pStatus, p::P2pStatus, {
    Unknown => Unspecified, Ok => Ok, NotSupported => NotSupported, Error => Error,
});
enum_map!(m::FabricRegistration, p::FabricRegistration, {
    Unknown => Unspecified, NotSupported => NotSupported, NotStarted => NotStarted,
    InProgress => InProgress, Completed => Completed,
});
enum_map!(m::FabricHealth, p::FabricHealth, {
    Unknown => Unspecified, Healthy => Healthy, Unhealthy => Unhealthy,
    LimitedCapacity => LimitedCapacity,
});
enum_map!(m::FabricState, p::FabricState, {
    Unknown => Unspecified, None => None, Pending => Pending, Ready => Ready,
    Degraded => Degraded, Inconsistent => Inconsistent, Error => Error,
});
enum_map!(m::PlatformStatus, p::PlatformStatus, {
    Unknown => Unspecified, Ok => Ok, NotSupported => NotSupported, Error => Error,
});
enum_map!(m::NicRole, p::NicRole, {
    Unknown => Unspecified, Compute => Compute, Storage => Storage, Virtual => Virtual,
});
enum_map!(m::LinkLayer, p::LinkLayer, {
    Unknown => Unspecified, Infiniband => Infiniband, Ethernet => Ethernet,
});
enum_map!(m::PortState, p::PortState, {
    Unknown => Unspecified, Down => Down, Init => Init, Armed => Armed, Active => Active,
    ActiveDefer => ActiveDefer,
});

/// A proto enum number as a model enum; numbers this build does not know read as unknown.
fn en<P, M>(n: i32) -> M
where
    P: TryFrom<i32> + Default,
    M: From<P>,
{
    M::from(P::try_from(n).unwrap_or_default())
}

/// A model enum as its proto number.
fn num<M, P>(v: M) -> i32
where
    P: From<M> + Into<i32>,
{
    P::from(v).into()
}

fn opt_str(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The proto's name for who reads the environment of `GetPlacementHints`.
pub fn consumer_to_proto(c: crate::hints::Consumer) -> p::Consumer {
    match c {
        crate::hints::Consumer::Vllm => p::Consumer::Vllm,
        _ => p::Consumer::Unspecified,
    }
}

/// Who reads the environment, from the request's enum value; `None` for a value this build does
/// not know (a newer client).
pub fn consumer_from_proto(v: i32) -> Option<crate::hints::Consumer> {
    match p::Consumer::try_from(v).ok()? {
        p::Consumer::Unspecified => Some(crate::hints::Consumer::Generic),
        p::Consumer::Vllm => Some(crate::hints::Consumer::Vllm),
    }
}

impl From<&m::NodeTopology> for p::NodeTopology {
    fn from(t: &m::NodeTopology) -> Self {
        Self {
            node_name: t.node_name.clone(),
            revision: t.revision,
            probe_time: t.probe_time.map(prost_types::Timestamp::from),
            driver: Some(p::DriverInfo {
                driver_version: t.driver.driver_version.clone().unwrap_or_default(),
                cuda_driver_version: t.driver.cuda_driver_version.clone().unwrap_or_default(),
                nvml_version: t.driver.nvml_version.clone().unwrap_or_default(),
            }),
            gpus: t.gpus.iter().map(gpu_to).collect(),
            gpu_pairs: t
                .gpu_pairs
                .iter()
                .map(|x| p::GpuPair {
                    a: x.a,
                    b: x.b,
                    connection: num::<_, p::Connection>(x.connection),
                    nvlink_count: x.nvlink_count,
                    p2p_nvlink: num::<_, p::P2pStatus>(x.p2p_nvlink),
                    pcie: num::<_, p::Connection>(x.pcie),
                })
                .collect(),
            fabric: Some(p::Fabric {
                state: num::<_, p::FabricState>(t.fabric.state),
                reason: t.fabric.reason.clone(),
                domain: t.fabric.domain.clone().unwrap_or_default(),
                cluster_uuid: t.fabric.cluster_uuid.clone().unwrap_or_default(),
                clique_id: t.fabric.clique_id,
            }),
            nics: t.nics.iter().map(nic_to).collect(),
            gpu_nic_affinity: t
                .gpu_nic_affinity
                .iter()
                .map(|a| p::GpuNicAffinity {
                    gpu: a.gpu,
                    nic: a.nic.clone(),
                    connection: num::<_, p::Connection>(a.connection),
                    rank: a.rank,
                })
                .collect(),
            sources: t
                .sources
                .iter()
                .map(|s| p::SourceStatus {
                    source: s.source.to_string(),
                    ok: s.ok,
                    error: s.error.clone(),
                    stale: s.stale,
                })
                .collect(),
            rail_pairing: Some(p::RailPairing {
                rail_aligned: t.rail_pairing.rail_aligned,
                pairs: t.rail_pairing.pairs.iter().map(rail_to).collect(),
                gpu_rails: t.rail_pairing.gpu_rails.iter().map(rail_to).collect(),
                gpus_per_rail: t.rail_pairing.gpus_per_rail,
            }),
            gpudirect: Some(p::GpuDirect {
                ready: t.gpudirect.ready,
                method: t.gpudirect.method.to_string(),
                reason: t.gpudirect.reason.clone(),
            }),
            network: Some(p::NetworkPlacement {
                infiniband: Some(placement_to(&t.network.infiniband)),
                roce: Some(placement_to(&t.network.roce)),
            }),
        }
    }
}

fn placement_to(f: &m::FabricPlacement) -> p::FabricPlacement {
    p::FabricPlacement {
        leaf: f.leaf.clone().unwrap_or_default(),
        su: f.su.clone().unwrap_or_default(),
        block: f.block.clone().unwrap_or_default(),
        reason: f.reason.clone(),
        rails: f
            .rails
            .iter()
            .map(|r| p::PortRail {
                nic: r.nic.clone(),
                port: r.port,
                rail: r.rail.clone(),
            })
            .collect(),
        rail_optimised: f.rail_optimised,
    }
}

fn placement_from(f: Option<&p::FabricPlacement>) -> m::FabricPlacement {
    let f = f.cloned().unwrap_or_default();
    m::FabricPlacement {
        leaf: opt_str(&f.leaf),
        su: opt_str(&f.su),
        block: opt_str(&f.block),
        reason: f.reason,
        rails: f
            .rails
            .iter()
            .map(|r| m::PortRail {
                nic: r.nic.clone(),
                port: r.port,
                rail: r.rail.clone(),
            })
            .collect(),
        rail_optimised: f.rail_optimised,
    }
}

fn neighbor_to(n: &m::PortNeighbor) -> p::PortNeighbor {
    p::PortNeighbor {
        status: n.status.to_string(),
        detail: n.detail.clone(),
        leaf_id: n.leaf_id.clone(),
        leaf_port: n.leaf_port.clone(),
        uplink_ids: n.uplink_ids.clone(),
    }
}

fn neighbor_from(n: &p::PortNeighbor) -> m::PortNeighbor {
    m::PortNeighbor {
        status: n.status.as_str().into(),
        detail: n.detail.clone(),
        leaf_id: n.leaf_id.clone(),
        leaf_port: n.leaf_port.clone(),
        uplink_ids: n.uplink_ids.clone(),
    }
}

fn gpu_to(g: &m::Gpu) -> p::Gpu {
    p::Gpu {
        index: g.index,
        uuid: g.uuid.clone(),
        name: g.name.clone(),
        serial: g.serial.clone().unwrap_or_default(),
        pci_bus_id: g.pci_bus_id.clone(),
        memory_total_bytes: g.memory_total_bytes,
        compute_major: g.compute_major,
        compute_minor: g.compute_minor,
        family: num::<_, p::GpuFamily>(g.family),
        mig_mode: num::<_, p::MigMode>(g.mig_mode),
        mig_mode_pending: num::<_, p::MigMode>(g.mig_mode_pending),
        numa_node: g.numa_node,
        cpu_affinity: g.cpu_affinity.clone(),
        nvlinks: g
            .nvlinks
            .iter()
            .map(|l| p::NvLink {
                link: l.link,
                version: l.version.clone(),
                remote_type: num::<_, p::NvLinkRemoteType>(l.remote_type),
                remote_pci_bus_id: l.remote_pci_bus_id.clone().unwrap_or_default(),
            })
            .collect(),
        fabric: g.fabric.as_ref().map(|f| p::GpuFabricInfo {
            api_version: f.api_version,
            registration: num::<_, p::FabricRegistration>(f.registration),
            status: f.status,
            cluster_uuid: f.cluster_uuid.clone(),
            clique_id: f.clique_id,
            health_mask: f.health_mask,
            health_summary: num::<_, p::FabricHealth>(f.health_summary),
            health_problems: f.health_problems.iter().map(ToString::to_string).collect(),
        }),
        platform: Some(platform_to(&g.platform)),
    }
}

fn platform_to(pl: &m::GpuPlatform) -> p::GpuPlatform {
    p::GpuPlatform {
        status: num::<_, p::PlatformStatus>(pl.status),
        reason: pl.reason.clone(),
        api_version: pl.api_version,
        chassis_serial: pl.chassis_serial.clone().unwrap_or_default(),
        slot_number: pl.slot_number,
        tray_index: pl.tray_index,
        host_id: pl.host_id,
        module_id: pl.module_id,
        peer_type: pl.peer_type,
        ib_guid: pl.ib_guid.clone().unwrap_or_default(),
    }
}

fn platform_from(pl: Option<&p::GpuPlatform>) -> m::GpuPlatform {
    let Some(pl) = pl else {
        return m::GpuPlatform::default();
    };
    m::GpuPlatform {
        status: en::<p::PlatformStatus, _>(pl.status),
        reason: pl.reason.clone(),
        api_version: pl.api_version,
        chassis_serial: opt_str(&pl.chassis_serial),
        slot_number: pl.slot_number,
        tray_index: pl.tray_index,
        host_id: pl.host_id,
        module_id: pl.module_id,
        peer_type: pl.peer_type,
        ib_guid: opt_str(&pl.ib_guid),
    }
}

fn rail_to(r: &m::RailPair) -> p::RailPair {
    p::RailPair {
        gpu: r.gpu,
        nic: r.nic.clone(),
        port: r.port,
        connection: num::<_, p::Connection>(r.connection),
    }
}

fn rail_from(r: &p::RailPair) -> m::RailPair {
    m::RailPair {
        gpu: r.gpu,
        nic: r.nic.clone(),
        port: r.port,
        connection: en::<p::Connection, _>(r.connection),
    }
}

fn nic_to(n: &m::Nic) -> p::Nic {
    p::Nic {
        name: n.name.clone(),
        pci_address: n.pci_address.clone(),
        node_guid: n.node_guid.clone(),
        sys_image_guid: n.sys_image_guid.clone(),
        fw_version: n.fw_version.clone(),
        board_id: n.board_id.clone(),
        hca_type: n.hca_type.clone(),
        numa_node: n.numa_node,
        netdevs: n.netdevs.clone(),
        virtual_function: n.virtual_function,
        bonded: n.bonded,
        role: num::<_, p::NicRole>(n.role),
        role_overridden: n.role_overridden,
        ports: n
            .ports
            .iter()
            .map(|x| p::NicPort {
                port: x.port,
                state: num::<_, p::PortState>(x.state),
                phys_state: x.phys_state.to_string(),
                link_layer: num::<_, p::LinkLayer>(x.link_layer),
                rate_gbps: x.rate_gbps,
                lid: x.lid,
                sm_lid: x.sm_lid,
                port_guid: x.port_guid.clone(),
                subnet_prefix: x.subnet_prefix.clone(),
                gids: x
                    .gids
                    .iter()
                    .map(|g| p::Gid {
                        index: g.index,
                        gid: g.gid.clone(),
                        r#type: g.gid_type.to_string(),
                        netdev: g.netdev.clone(),
                    })
                    .collect(),
                neighbor: x.neighbor.as_ref().map(neighbor_to),
            })
            .collect(),
        verbs: n.verbs.as_ref().map(|v| p::VerbsCheck {
            usable: v.usable,
            error: v.error.clone(),
            consistent_with_sysfs: v.consistent_with_sysfs,
        }),
    }
}

impl From<&p::NodeTopology> for m::NodeTopology {
    fn from(t: &p::NodeTopology) -> Self {
        let driver = t.driver.clone().unwrap_or_default();
        let fabric = t.fabric.clone().unwrap_or_default();
        let rail = t.rail_pairing.clone().unwrap_or_default();
        let gd = t.gpudirect.clone().unwrap_or_default();
        let net = t.network.clone().unwrap_or_default();
        Self {
            node_name: t.node_name.clone(),
            revision: t.revision,
            probe_time: t.probe_time.and_then(|ts| SystemTime::try_from(ts).ok()),
            driver: m::DriverInfo {
                driver_version: opt_str(&driver.driver_version),
                cuda_driver_version: opt_str(&driver.cuda_driver_version),
                nvml_version: opt_str(&driver.nvml_version),
            },
            gpus: t.gpus.iter().map(gpu_from).collect(),
            gpu_pairs: t
                .gpu_pairs
                .iter()
                .map(|x| m::GpuPair {
                    a: x.a,
                    b: x.b,
                    connection: en::<p::Connection, _>(x.connection),
                    nvlink_count: x.nvlink_count,
                    p2p_nvlink: en::<p::P2pStatus, _>(x.p2p_nvlink),
                    pcie: en::<p::Connection, _>(x.pcie),
                })
                .collect(),
            fabric: m::Fabric {
                state: en::<p::FabricState, _>(fabric.state),
                reason: fabric.reason,
                domain: opt_str(&fabric.domain),
                cluster_uuid: opt_str(&fabric.cluster_uuid),
                clique_id: fabric.clique_id,
            },
            nics: t.nics.iter().map(nic_from).collect(),
            gpu_nic_affinity: t
                .gpu_nic_affinity
                .iter()
                .map(|a| m::GpuNicAffinity {
                    gpu: a.gpu,
                    nic: a.nic.clone(),
                    connection: en::<p::Connection, _>(a.connection),
                    rank: a.rank,
                })
                .collect(),
            rail_pairing: m::RailPairing {
                rail_aligned: rail.rail_aligned,
                pairs: rail.pairs.iter().map(rail_from).collect(),
                gpu_rails: rail.gpu_rails.iter().map(rail_from).collect(),
                gpus_per_rail: rail.gpus_per_rail,
            },
            gpudirect: m::GpuDirect {
                ready: gd.ready,
                method: gd.method.into(),
                reason: gd.reason,
            },
            network: m::NetworkPlacement {
                infiniband: placement_from(net.infiniband.as_ref()),
                roce: placement_from(net.roce.as_ref()),
            },
            // A source this build does not know (from a newer agent) has no place in the model.
            sources: t
                .sources
                .iter()
                .filter_map(|s| {
                    Some(m::SourceStatus {
                        source: s.source.parse().ok()?,
                        ok: s.ok,
                        error: s.error.clone(),
                        stale: s.stale,
                        took: std::time::Duration::ZERO,
                    })
                })
                .collect(),
        }
    }
}

fn gpu_from(g: &p::Gpu) -> m::Gpu {
    m::Gpu {
        index: g.index,
        uuid: g.uuid.clone(),
        name: g.name.clone(),
        serial: opt_str(&g.serial),
        pci_bus_id: g.pci_bus_id.clone(),
        memory_total_bytes: g.memory_total_bytes,
        compute_major: g.compute_major,
        compute_minor: g.compute_minor,
        family: en::<p::GpuFamily, _>(g.family),
        mig_mode: en::<p::MigMode, _>(g.mig_mode),
        mig_mode_pending: en::<p::MigMode, _>(g.mig_mode_pending),
        numa_node: g.numa_node,
        cpu_affinity: g.cpu_affinity.clone(),
        nvlinks: g
            .nvlinks
            .iter()
            .map(|l| m::NvLink {
                link: l.link,
                version: l.version.clone(),
                remote_type: en::<p::NvLinkRemoteType, _>(l.remote_type),
                remote_pci_bus_id: opt_str(&l.remote_pci_bus_id),
            })
            .collect(),
        fabric: g.fabric.as_ref().map(|f| m::GpuFabricInfo {
            api_version: f.api_version,
            registration: en::<p::FabricRegistration, _>(f.registration),
            status: f.status,
            cluster_uuid: f.cluster_uuid.clone(),
            clique_id: f.clique_id,
            health_mask: f.health_mask,
            health_summary: en::<p::FabricHealth, _>(f.health_summary),
            health_problems: f
                .health_problems
                .iter()
                .map(|s| s.as_str().into())
                .collect(),
        }),
        platform: platform_from(g.platform.as_ref()),
    }
}

fn nic_from(n: &p::Nic) -> m::Nic {
    m::Nic {
        name: n.name.clone(),
        pci_address: n.pci_address.clone(),
        node_guid: n.node_guid.clone(),
        sys_image_guid: n.sys_image_guid.clone(),
        fw_version: n.fw_version.clone(),
        board_id: n.board_id.clone(),
        hca_type: n.hca_type.clone(),
        numa_node: n.numa_node,
        netdevs: n.netdevs.clone(),
        virtual_function: n.virtual_function,
        bonded: n.bonded,
        role: en::<p::NicRole, _>(n.role),
        role_overridden: n.role_overridden,
        ports: n
            .ports
            .iter()
            .map(|x| m::NicPort {
                port: x.port,
                state: en::<p::PortState, _>(x.state),
                phys_state: x.phys_state.as_str().into(),
                link_layer: en::<p::LinkLayer, _>(x.link_layer),
                rate_gbps: x.rate_gbps,
                lid: x.lid,
                sm_lid: x.sm_lid,
                port_guid: x.port_guid.clone(),
                subnet_prefix: x.subnet_prefix.clone(),
                gids: x
                    .gids
                    .iter()
                    .map(|g| m::Gid {
                        index: g.index,
                        gid: g.gid.clone(),
                        gid_type: g.r#type.as_str().into(),
                        netdev: g.netdev.clone(),
                    })
                    .collect(),
                neighbor: x.neighbor.as_ref().map(neighbor_from),
            })
            .collect(),
        verbs: n.verbs.as_ref().map(|v| m::VerbsCheck {
            usable: v.usable,
            error: v.error.clone(),
            consistent_with_sysfs: v.consistent_with_sysfs,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topology with every field set to a non-default value.
    pub(crate) fn full() -> m::NodeTopology {
        m::NodeTopology {
            node_name: "gpu-node-1".into(),
            revision: 42,
            probe_time: Some(humantime::parse_rfc3339("2026-11-29T05:00:00.123456789Z").unwrap()),
            driver: m::DriverInfo {
                driver_version: Some("580.159.04".into()),
                cuda_driver_version: Some("13.0".into()),
                nvml_version: Some("13.580.159.04".into()),
            },
            gpus: vec![m::Gpu {
                index: 1,
                uuid: "GPU-1".into(),
                name: "NVIDIA H200".into(),
                serial: Some("1650".into()),
                pci_bus_id: "00000000:00:06.0".into(),
                memory_total_bytes: 150_754_820_096,
                compute_major: 9,
                compute_minor: 0,
                family: m::GpuFamily::Hopper,
                mig_mode: m::MigMode::Disabled,
                mig_mode_pending: m::MigMode::Enabled,
                numa_node: Some(-1),
                cpu_affinity: "0-63".into(),
                nvlinks: vec![m::NvLink {
                    link: 3,
                    version: "4.0".into(),
                    remote_type: m::NvLinkRemoteType::Switch,
                    remote_pci_bus_id: Some("00000000:00:00.0".into()),
                }],
                fabric: Some(m::GpuFabricInfo {
                    api_version: 3,
                    registration: m::FabricRegistration::Completed,
                    status: 1,
                    cluster_uuid: "c".into(),
                    clique_id: 7,
                    health_mask: 2,
                    health_summary: m::FabricHealth::LimitedCapacity,
                    health_problems: vec!["degraded-bandwidth".into()],
                }),
                platform: m::GpuPlatform {
                    status: m::PlatformStatus::Ok,
                    reason: "r".into(),
                    api_version: 2,
                    chassis_serial: Some("1821325190123".into()),
                    slot_number: Some(0),
                    tray_index: Some(3),
                    host_id: Some(1),
                    module_id: Some(2),
                    peer_type: Some(4),
                    ib_guid: Some("0x0002c90300a1b2c3".into()),
                },
            }],
            gpu_pairs: vec![m::GpuPair {
                a: 0,
                b: 1,
                connection: m::Connection::NvLink,
                nvlink_count: 18,
                p2p_nvlink: m::P2pStatus::NotSupported,
                pcie: m::Connection::Phb,
            }],
            fabric: m::Fabric {
                state: m::FabricState::Degraded,
                reason: "r".into(),
                domain: Some("c.7".into()),
                cluster_uuid: Some("c".into()),
                clique_id: Some(0),
            },
            nics: vec![m::Nic {
                name: "mlx5_0".into(),
                pci_address: "0000:1a:00.0".into(),
                node_guid: "g".into(),
                sys_image_guid: "s".into(),
                fw_version: "28.1".into(),
                board_id: "MT_1".into(),
                hca_type: "MT4129".into(),
                numa_node: Some(1),
                netdevs: vec!["ib0".into()],
                virtual_function: true,
                bonded: true,
                role: m::NicRole::Storage,
                role_overridden: true,
                ports: vec![m::NicPort {
                    port: 1,
                    state: m::PortState::ActiveDefer,
                    phys_state: "LinkUp".into(),
                    link_layer: m::LinkLayer::Ethernet,
                    rate_gbps: 400.0,
                    lid: 5,
                    sm_lid: 1,
                    port_guid: "pg".into(),
                    subnet_prefix: "fe80::".into(),
                    gids: vec![m::Gid {
                        index: 3,
                        gid: "::1".into(),
                        gid_type: "RoCE v2".into(),
                        netdev: "eth0".into(),
                    }],
                    neighbor: Some(m::PortNeighbor {
                        status: m::NeighborStatus::NoSwitch,
                        detail: "d".into(),
                        leaf_id: "0x0000000000200001".into(),
                        leaf_port: "Ethernet12".into(),
                        uplink_ids: vec!["a".into(), "b".into()],
                    }),
                }],
                verbs: Some(m::VerbsCheck {
                    usable: true,
                    error: "e".into(),
                    consistent_with_sysfs: true,
                }),
            }],
            gpu_nic_affinity: vec![m::GpuNicAffinity {
                gpu: 1,
                nic: "mlx5_0".into(),
                connection: m::Connection::Pxb,
                rank: 2,
            }],
            rail_pairing: m::RailPairing {
                rail_aligned: true,
                pairs: vec![m::RailPair {
                    gpu: 1,
                    nic: "mlx5_0".into(),
                    port: 1,
                    connection: m::Connection::Pix,
                }],
                gpu_rails: vec![m::RailPair {
                    gpu: 2,
                    nic: "mlx5_1".into(),
                    port: 2,
                    connection: m::Connection::Pxb,
                }],
                gpus_per_rail: 3,
            },
            gpudirect: m::GpuDirect {
                ready: true,
                method: "dma-buf".into(),
                reason: "ok".into(),
            },
            network: m::NetworkPlacement {
                infiniband: m::FabricPlacement {
                    leaf: Some("l".into()),
                    su: Some("s".into()),
                    block: Some("b".into()),
                    reason: "r".into(),
                    rails: vec![m::PortRail {
                        nic: "mlx5_0".into(),
                        port: 1,
                        rail: "rail-0".into(),
                    }],
                    rail_optimised: Some(true),
                },
                roce: m::FabricPlacement {
                    leaf: Some("rl".into()),
                    su: None,
                    block: None,
                    reason: "rr".into(),
                    rails: Vec::new(),
                    rail_optimised: Some(false),
                },
            },
            sources: vec![m::SourceStatus {
                source: m::Source::Nvml,
                ok: false,
                error: "boom".into(),
                stale: true,
                took: std::time::Duration::ZERO,
            }],
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let t = full();
        let wire = p::NodeTopology::from(&t);
        let bytes = prost::Message::encode_to_vec(&wire);
        let decoded: p::NodeTopology = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(m::NodeTopology::from(&decoded), t);
    }

    #[test]
    fn round_trip_of_default() {
        let t = m::NodeTopology::default();
        assert_eq!(m::NodeTopology::from(&p::NodeTopology::from(&t)), t);
    }

    #[test]
    fn unknown_enum_number_reads_as_unknown() {
        let mut wire = p::NodeTopology::from(&full());
        wire.gpu_pairs[0].connection = 999;
        let back = m::NodeTopology::from(&wire);
        assert_eq!(back.gpu_pairs[0].connection, m::Connection::Unknown);
    }
}
