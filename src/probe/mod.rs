//! Hardware probes: NVML (GPUs, NVLink, fabric), sysfs and ibverbs (RDMA NICs, PCIe tree), composed into a
//! [`crate::model::NodeTopology`].
//!
//! Every probe reports its outcome as a [`crate::model::SourceStatus`]; a failing
//! source never aborts the others.

pub mod config;
pub mod ib;
pub mod lldp;
pub mod network;
pub mod nvml;
pub mod pci;
pub mod rails;
pub mod rdma;
pub mod sysfs;

use std::{
    ffi::{OsStr, OsString},
    path::PathBuf,
    time::{Instant, SystemTime},
};

use crate::model::{Fabric, FabricState, NodeTopology, Source, SourceStatus};

pub use self::config::{GpuSource, ProbeConfig, SetupError};
use self::{
    network::FabricNames,
    nvml::{
        live::LiveNvml,
        prober::{GpuProber, ProbeOptions},
        snapshot::NvmlSnapshot,
    },
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
fn open_live(options: ProbeOptions, nvml_lib: Option<&OsStr>) -> Result<GpuProber, String> {
    LiveNvml::init(nvml_lib)
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
    uplinks: (Instant, ib::UplinkCache),
    /// The LLDP listeners, once a runtime is given.
    lldp: Option<lldp::LldpSession>,
    /// What each probe does first about the GPU prober.
    refresh: GpuRefresh,
}

/// What each probe does first about the GPU prober.
#[derive(Debug)]
enum GpuRefresh {
    /// Nothing: it was given.
    Keep,
    /// Opens live NVML again while it is not available (see [`Prober::live`]).
    Reopen(ProbeOptions, Option<OsString>),
    /// Reads the snapshot again.
    Reload(PathBuf, ProbeOptions),
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
            uplinks: (Instant::now(), ib::UplinkCache::new()),
            lldp: None,
            refresh: GpuRefresh::Keep,
        }
    }

    /// The prober that `cfg` describes: the one constructor of `nodetopo probe` and the agent.
    /// With `lldp_runtime` the probe listens for LLDP as `cfg.network` says, on that runtime
    /// (which other threads must drive); without it no LLDP is heard. A snapshot to replay is
    /// read on every probe, so a bad file shows as a failed NVML source, not here.
    pub fn from_config(
        cfg: &ProbeConfig,
        lldp_runtime: Option<tokio::runtime::Handle>,
    ) -> Result<Self, SetupError> {
        let sysfs = SysfsRoot::new(&cfg.sysfs_root);
        let node = cfg.node_name.clone();
        let lib = cfg.nvml_lib.as_deref().map(|p| p.as_os_str());
        let mut prober = match &cfg.gpu {
            GpuSource::Live => Self::live(sysfs, node, cfg.options, lib),
            GpuSource::Record(path) => {
                let live = LiveNvml::init(lib).map_err(SetupError::RecordWithoutNvml)?;
                let by = format!("nodetopo {} --record on {node}", env!("CARGO_PKG_VERSION"));
                NvmlSnapshot::capture(&live, by)
                    .save(path)
                    .map_err(|e| SetupError::Record(path.clone(), e))?;
                tracing::info!(path = %path.display(), "snapshot recorded");
                Self::new(Ok(GpuProber::new(Box::new(live), cfg.options)), sysfs, node)
            }
            GpuSource::Replay(path) => {
                let mut p = Self::new(Err("not loaded yet".into()), sysfs, node);
                p.refresh = GpuRefresh::Reload(path.clone(), cfg.options);
                p
            }
        };
        prober.nic_roles = cfg.nic_roles.clone();
        prober.network = cfg.network.clone();
        if let Some(handle) = lldp_runtime {
            prober = prober.with_lldp_runtime(handle);
        }
        Ok(prober)
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
        nvml_lib: Option<&OsStr>,
    ) -> Self {
        let mut p = Self::new(open_live(options, nvml_lib), sysfs, node_name);
        p.refresh = GpuRefresh::Reopen(options, nvml_lib.map(OsStr::to_os_string));
        p
    }

    /// The GPU prober, when NVML is available.
    pub fn gpu_prober(&self) -> Option<&GpuProber> {
        self.gpu.as_ref().ok()
    }

    /// Probes everything once. `now` is the probe time to record. The stages run in this
    /// order, each adding to the topology: the GPUs (NVML), the RDMA NICs (sysfs, or libibumad
    /// with `--ib-smp only`), the InfiniBand ports' neighbours (SMP), the RoCE ports' neighbours
    /// (LLDP), and last the node's place in its fabrics, derived from those neighbours.
    pub fn probe(&mut self, now: SystemTime) -> NodeTopology {
        let mut topo = NodeTopology {
            node_name: self.node_name.clone(),
            probe_time: Some(now),
            ..NodeTopology::default()
        };
        self.refresh_gpu();
        self.gpus(&mut topo);
        let mut opener = smp_opener(&self.network);
        let local_queries = self.rdma(&mut topo, opener.as_deref_mut());
        if let Some(o) = opener.as_deref_mut() {
            self.ib_neighbours(&mut topo, o, local_queries);
        }
        self.lldp_neighbours(&mut topo);
        topo.network = network::place(&topo.nics, &self.network.names);
        topo
    }

    /// Opens NVML again while it is not available, or reads the snapshot again.
    fn refresh_gpu(&mut self) {
        match &self.refresh {
            GpuRefresh::Keep => {}
            GpuRefresh::Reopen(options, lib) => {
                if self.gpu.is_err() {
                    self.gpu = open_live(*options, lib.as_deref());
                    if self.gpu.is_ok() {
                        tracing::info!("NVML is available now");
                    }
                }
            }
            GpuRefresh::Reload(path, options) => {
                self.gpu = NvmlSnapshot::load(path)
                    .map(|s| GpuProber::new(Box::new(s), *options))
                    .map_err(|e| e.to_string());
            }
        }
    }

    /// The GPUs, their pairs and the NVLink fabric; without NVML, zero GPUs and why.
    fn gpus(&mut self, topo: &mut NodeTopology) {
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
    }

    /// The RDMA NICs, their roles and the GPU pairing: from sysfs, or with `--ib-smp only` from
    /// libibumad and SMP alone. Returns the SMP queries that took.
    fn rdma(
        &self,
        topo: &mut NodeTopology,
        opener: Option<&mut (dyn ib::SmpOpener + 'static)>,
    ) -> u64 {
        match (self.network.ib_smp, opener) {
            (IbSmpMode::Only, Some(o)) => {
                let start = Instant::now();
                let (nics, errors, sent) = ib::local_cas(o);
                let probe = rdma::sysfs::RdmaProbe {
                    nics,
                    errors,
                    note: Some("adapters and ports from libibumad and SMP (--ib-smp only)".into()),
                    took: start.elapsed(),
                };
                rdma::finish(&self.sysfs, topo, probe, None, &self.nic_roles);
                sent
            }
            _ => {
                rdma::fill_with(&self.sysfs, topo, &self.nic_roles);
                0
            }
        }
    }

    /// Each InfiniBand compute port's leaf and the leaf's uplinks, by SMP. The uplinks learnt
    /// are kept for [`ib::UPLINKS_KEPT`], then looked for again.
    fn ib_neighbours(
        &mut self,
        topo: &mut NodeTopology,
        opener: &mut (dyn ib::SmpOpener + 'static),
        local_queries: u64,
    ) {
        if self.network.ib_smp == IbSmpMode::Off {
            return;
        }
        if self.uplinks.0.elapsed() > ib::UPLINKS_KEPT {
            self.uplinks = (Instant::now(), ib::UplinkCache::new());
        }
        let Some((status, cost)) = ib::fill(&mut topo.nics, opener, &mut self.uplinks.1) else {
            return;
        };
        tracing::info!(
            ports = cost.ports,
            queries = cost.queries,
            local_queries,
            took_us = u64::try_from(cost.took.as_micros()).unwrap_or(u64::MAX),
            "ib-smp: leaves looked for"
        );
        topo.sources.push(status);
    }

    /// Each RoCE compute port's leaf, from the LLDP frames heard.
    fn lldp_neighbours(&mut self, topo: &mut NodeTopology) {
        let Some(l) = self.lldp.as_mut() else {
            return;
        };
        let start = Instant::now();
        if let Some(status) = l.probe(&mut topo.nics) {
            topo.sources.push(status.took(start.elapsed()));
        }
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
