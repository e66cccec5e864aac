//! Hardware probes: NVML (GPUs, NVLink, fabric), sysfs and ibverbs (RDMA NICs, PCIe tree), composed into a
//! [`crate::model::NodeTopology`].
//!
//! Every probe reports its outcome as a [`crate::model::SourceStatus`]; a failing
//! source never aborts the others.

pub mod ib;
pub mod lldp;
pub mod network;
pub mod nvml;
pub mod pci;
pub mod rails;
pub mod rdma;
pub mod sysfs;

use std::time::SystemTime;

use crate::model::{Fabric, FabricState, NodeTopology, Source, SourceStatus};

use self::{
    network::FabricNames,
    nvml::prober::{GpuProber, ProbeOptions},
    sysfs::SysfsRoot,
};

/// Whether and how the InfiniBand ports' leaves are looked for by SMP queries.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::EnumMessage,
)]
#[strum(serialize_all = "kebab-case")]
pub enum IbSmpMode {
    /// No SMP queries.
    Off,
    /// Query the InfiniBand ports of the compute rails found in sysfs (needs the `umad`
    /// feature; a build without it sends none).
    #[default]
    On,
    /// Take the adapters and ports from libibumad and SMP alone, reading no RDMA sysfs (for
    /// the ibsim simulator, which answers only libibumad calls).
    Only,
}

/// Options of the fabric placement probes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkOptions {
    /// SMP queries on InfiniBand.
    pub ib_smp: IbSmpMode,
    /// Timeout and retries of one SMP query.
    pub budget: ib::QueryBudget,
    /// Names for switch IDs and hashes (the mapping file).
    pub names: FabricNames,
    /// LLDP on the RoCE compute ports (needs [`Prober::with_lldp_runtime`]).
    pub lldp: lldp::LldpMode,
    /// How long the first probe waits for every RoCE compute port's first LLDP frame.
    pub lldp_wait: std::time::Duration,
}

/// Opens live NVML, or says why it is not available.
fn open_live(
    options: ProbeOptions,
    nvml_lib: Option<&std::ffi::OsStr>,
) -> Result<GpuProber, String> {
    nvml::live::LiveNvml::init(nvml_lib)
        .map(|n| GpuProber::new(Box::new(n), options))
        .map_err(|e| format!("NVML is not available: {e}"))
}

/// Composes every probe of this node. Keeps NVML open between calls to [`Prober::probe`].
#[derive(Debug)]
pub struct Prober {
    gpu: Result<GpuProber, String>,
    sysfs: SysfsRoot,
    node_name: String,
    nic_roles: rails::RoleOverrides,
    network: NetworkOptions,
    /// Leaves' uplinks from earlier probes, and since when.
    uplinks: (std::time::Instant, ib::UplinkCache),
    /// The LLDP listeners, once a runtime is given.
    lldp: Option<lldp::LldpSession>,
    /// How to open live NVML again while it is not available (see [`Prober::live`]).
    reopen: Option<(ProbeOptions, Option<std::ffi::OsString>)>,
}

impl Prober {
    /// A prober. `gpu` is the GPU prober, or why there is none (e.g. NVML is not installed).
    pub fn new(gpu: Result<GpuProber, String>, sysfs: SysfsRoot, node_name: String) -> Self {
        Self {
            gpu,
            sysfs,
            node_name,
            nic_roles: rails::RoleOverrides::default(),
            network: NetworkOptions::default(),
            uplinks: (std::time::Instant::now(), ib::UplinkCache::new()),
            lldp: None,
            reopen: None,
        }
    }

    /// Lets the probe listen for LLDP (as [`NetworkOptions::lldp`] says) with listeners on
    /// `handle`'s runtime, which other threads must drive (a multi-thread runtime). Without
    /// it no LLDP is heard. Call after [`Prober::with_network`].
    pub fn with_lldp_runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.lldp = (self.network.lldp != lldp::LldpMode::Off)
            .then(|| lldp::LldpSession::new(handle, self.network.lldp, self.network.lldp_wait));
        self
    }

    /// The LLDP listeners, when the probe has them.
    pub fn lldp(&self) -> Option<&lldp::LldpSession> {
        self.lldp.as_ref()
    }

    /// Replaces the GPU prober (a snapshot read again), keeping everything else.
    pub fn set_gpu(&mut self, gpu: Result<GpuProber, String>) {
        self.gpu = gpu;
    }

    /// Sets the fabric placement options (SMP queries, the mapping file).
    pub fn with_network(mut self, network: NetworkOptions) -> Self {
        self.network = network;
        self
    }

    /// Sets the operator's NIC roles (`--nic-role`), applied before rails are derived.
    pub fn with_nic_roles(mut self, roles: rails::RoleOverrides) -> Self {
        self.nic_roles = roles;
        self
    }

    /// A prober over live NVML (`nvml_lib` overrides the library path); a machine without NVML
    /// gets a prober that reports zero GPUs, and tries to open NVML again on every probe until it
    /// succeeds: the driver (a GPU operator's driver container, say) may come up after the agent.
    pub fn live(
        sysfs: SysfsRoot,
        node_name: String,
        options: ProbeOptions,
        nvml_lib: Option<&std::ffi::OsStr>,
    ) -> Self {
        let mut p = Self::new(open_live(options, nvml_lib), sysfs, node_name);
        p.reopen = Some((options, nvml_lib.map(std::ffi::OsStr::to_os_string)));
        p
    }

    /// The GPU prober, when NVML is available.
    pub fn gpu_prober(&self) -> Option<&GpuProber> {
        self.gpu.as_ref().ok()
    }

    /// Probes everything once. `now` is the probe time to record.
    pub fn probe(&mut self, now: SystemTime) -> NodeTopology {
        let mut topo = NodeTopology {
            node_name: self.node_name.clone(),
            probe_time: Some(now),
            ..NodeTopology::default()
        };
        if let (Err(_), Some((options, lib))) = (&self.gpu, &self.reopen) {
            self.gpu = open_live(*options, lib.as_deref());
            if self.gpu.is_ok() {
                tracing::info!("NVML is available now");
            }
        }
        match &mut self.gpu {
            Ok(p) => {
                let r = p.probe(&self.sysfs);
                topo.driver = r.driver;
                topo.gpus = r.gpus;
                topo.gpu_pairs = r.pairs;
                topo.fabric = r.fabric;
                topo.sources.extend(r.sources);
            }
            Err(why) => {
                topo.fabric = Fabric {
                    state: FabricState::None,
                    reason: "no GPUs".into(),
                    ..Fabric::default()
                };
                topo.sources
                    .push(SourceStatus::failed(Source::Nvml, why.clone()));
                topo.sources
                    .push(SourceStatus::failed(Source::Fabric, "not probed: no NVML"));
            }
        }
        let mut opener = smp_opener(&self.network);
        let mut local_queries = 0u64;
        match (self.network.ib_smp, opener.as_deref_mut()) {
            (IbSmpMode::Only, Some(o)) => {
                let start = std::time::Instant::now();
                let (nics, errors, sent) = ib::local_cas(o);
                local_queries = sent;
                let probe = rdma::sysfs::RdmaProbe {
                    nics,
                    errors,
                    note: Some("adapters and ports from libibumad and SMP (--ib-smp only)".into()),
                    took: start.elapsed(),
                };
                rdma::finish(&self.sysfs, &mut topo, probe, None, &self.nic_roles);
            }
            _ => rdma::fill_with(&self.sysfs, &mut topo, &self.nic_roles),
        }
        if let Some(o) = opener.as_deref_mut()
            && self.network.ib_smp != IbSmpMode::Off
            && let Some((status, cost)) = {
                if self.uplinks.0.elapsed() > ib::UPLINKS_KEPT {
                    self.uplinks = (std::time::Instant::now(), ib::UplinkCache::new());
                }
                ib::fill(&mut topo.nics, o, &mut self.uplinks.1)
            }
        {
            tracing::info!(
                ports = cost.ports,
                queries = cost.queries,
                local_queries,
                took_us = u64::try_from(cost.took.as_micros()).unwrap_or(u64::MAX),
                "ib-smp: leaves looked for"
            );
            topo.sources.push(status);
        }
        if let Some(l) = self.lldp.as_mut()
            && let Some(status) = {
                let start = std::time::Instant::now();
                l.probe(&mut topo.nics).map(|s| s.took(start.elapsed()))
            }
        {
            topo.sources.push(status);
        }
        topo.network = network::place(&topo.nics, &self.network.names);
        topo
    }
}

/// The SMP opener of this build: libibumad with the `umad` feature, none without.
#[cfg(feature = "umad")]
fn smp_opener(opts: &NetworkOptions) -> Option<Box<dyn ib::SmpOpener>> {
    (opts.ib_smp != IbSmpMode::Off).then(|| {
        let umad = ib::umad::Umad::new(opts.budget).any_port(opts.ib_smp == IbSmpMode::Only);
        Box::new(umad) as Box<dyn ib::SmpOpener>
    })
}

/// The SMP opener of this build: libibumad with the `umad` feature, none without.
#[cfg(not(feature = "umad"))]
fn smp_opener(_opts: &NetworkOptions) -> Option<Box<dyn ib::SmpOpener>> {
    None
}
