//! Hardware probes: NVML (GPUs, NVLink, fabric), sysfs and ibverbs (RDMA NICs, PCIe tree), composed into a
//! [`crate::model::NodeTopology`].
//!
//! Every probe reports its outcome as a [`crate::model::SourceStatus`]; a failing
//! source never aborts the others.

pub mod nvml;
pub mod pci;
pub mod rails;
pub mod rdma;
pub mod sysfs;

use std::time::SystemTime;

use crate::model::{Fabric, FabricState, NodeTopology, Source, SourceStatus};

use self::{
    nvml::prober::{GpuProber, ProbeOptions},
    sysfs::SysfsRoot,
};

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
            reopen: None,
        }
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
        rdma::fill_with(&self.sysfs, &mut topo, &self.nic_roles);
        topo
    }
}
