//! GPU, NVLink and fabric probe over any [`NvmlSource`] (live or replayed).
//!
//! [`GpuProber`] keeps static facts between probes (keyed by GPU UUID, so a replaced GPU is
//! re-read): NUMA node, CPU affinity, platform info (physical rack and tray), driver versions and
//! every pair's P2P status and common ancestor. A re-probe then asks only what can change: device presence and identity (cheap),
//! MIG mode, NVLink state and fabric state.
//!
//! P2P-status calls dominate NVML's cost (about 1.65 ms each on H200). Where every active link
//! of both GPUs ends at an NVSwitch, the pair is P2P over NVLink without asking; this shortcut can
//! be turned off ([`ProbeOptions::query_all_p2p`]).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::model::PciAddress;
use crate::model::{
    Connection, DriverInfo, Fabric, Gpu, GpuFamily, GpuPair, GpuPlatform, MigMode, NvLink,
    NvLinkRemoteType, P2pStatus, PlatformStatus, Source, SourceStatus, cpulist_from_mask,
};

use super::{
    DeviceIdentity, Fact, NvmlFailure, NvmlSource, RawNvLink, cuda_version_string, fabric,
    nvlink_version_name, platform,
};
use crate::probe::sysfs::SysfsRoot;

/// Options for the GPU probe.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeOptions {
    /// Ask NVML for every pair's P2P status even where NVSwitch links make the answer certain.
    pub query_all_p2p: bool,
}

/// What one GPU probe found.
#[derive(Debug, Clone, Default)]
pub struct GpuProbeResult {
    /// Driver, CUDA driver and NVML versions.
    pub driver: DriverInfo,
    /// Every GPU NVML counts and could identify, by index.
    pub gpus: Vec<Gpu>,
    /// Every ordered pair of distinct GPUs: the `nvidia-smi topo -m` matrix.
    pub pairs: Vec<GpuPair>,
    /// The node's multi-node NVLink domain, derived from every GPU's fabric info.
    pub fabric: Fabric,
    /// `nvml` and `fabric` source statuses.
    pub sources: Vec<SourceStatus>,
}

#[derive(Debug, Clone)]
struct StaticGpu {
    numa_node: Option<i32>,
    cpu_affinity: String,
}

#[derive(Debug, Clone)]
struct StaticPair {
    p2p: Option<Fact<u32>>,
    ancestor: u32,
}

/// A GPU prober that keeps NVML open and caches static facts between probes.
pub struct GpuProber {
    src: Box<dyn NvmlSource>,
    options: ProbeOptions,
    driver: Option<DriverInfo>,
    gpus: HashMap<String, StaticGpu>,
    /// Platform answers other than errors, by GPU UUID.
    platforms: HashMap<String, GpuPlatform>,
    pairs: HashMap<(String, String), StaticPair>,
}

impl std::fmt::Debug for GpuProber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuProber")
            .field("options", &self.options)
            .field("cached_gpus", &self.gpus.len())
            .field("cached_pairs", &self.pairs.len())
            .finish()
    }
}

/// Collects problems of one source; "not supported" answers are not problems.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn note(&mut self, what: String, e: &NvmlFailure) {
        if !e.is_not_supported() {
            self.0.push(format!("{what}: {e}"));
        }
    }

    fn status(self, source: Source) -> SourceStatus {
        if self.0.is_empty() {
            SourceStatus::ok(source)
        } else {
            SourceStatus::failed(source, self.0.join("; "))
        }
    }
}

impl GpuProber {
    /// A prober over `src`.
    pub fn new(src: Box<dyn NvmlSource>, options: ProbeOptions) -> Self {
        Self {
            src,
            options,
            driver: None,
            gpus: HashMap::new(),
            platforms: HashMap::new(),
            pairs: HashMap::new(),
        }
    }

    /// The NVML source this prober asks: live NVML or a replayed snapshot.
    pub fn source(&self) -> &dyn NvmlSource {
        self.src.as_ref()
    }

    fn driver(&mut self, problems: &mut Problems) -> DriverInfo {
        if let Some(d) = &self.driver {
            return d.clone();
        }
        let mut ok = true;
        let mut take = |what: &str, f: Fact<String>| match f {
            Ok(v) => Some(v),
            Err(e) => {
                ok = false;
                problems.note(what.to_string(), &e);
                None
            }
        };
        let driver_version = take("driver version", self.src.driver_version());
        let nvml_version = take("NVML version", self.src.nvml_version());
        let cuda = self.src.cuda_driver_version().map(cuda_version_string);
        let cuda_driver_version = take("CUDA driver version", cuda);
        let d = DriverInfo {
            driver_version,
            cuda_driver_version,
            nvml_version,
        };
        if ok {
            self.driver = Some(d.clone());
        }
        d
    }

    /// Probes GPUs, NVLinks, pairs and the fabric.
    pub fn probe(&mut self, sysfs: &SysfsRoot) -> GpuProbeResult {
        let start = Instant::now();
        let mut fabric_took = Duration::ZERO;
        let mut problems = Problems::default();
        let driver = self.driver(&mut problems);
        let count = match self.src.device_count() {
            Ok(n) => n,
            Err(e) => {
                let status = SourceStatus::failed(Source::Nvml, format!("device count: {e}"))
                    .took(start.elapsed());
                return GpuProbeResult {
                    driver,
                    fabric: fabric::derive_domain(&[]),
                    sources: vec![
                        status,
                        SourceStatus::failed(Source::Fabric, "no GPUs probed"),
                    ],
                    ..GpuProbeResult::default()
                };
            }
        };

        let mut gpus = Vec::with_capacity(count as usize);
        let mut raw_links: Vec<Vec<RawNvLink>> = Vec::with_capacity(count as usize);
        let mut fabric_facts = Vec::with_capacity(count as usize);
        for index in 0..count {
            let identity = match self.src.identity(index) {
                Ok(id) => id,
                Err(e) => {
                    problems.0.push(format!("GPU {index}: {e}"));
                    continue;
                }
            };
            let links = match self.src.nvlinks(index) {
                Ok(l) => l,
                Err(e) => {
                    problems.note(format!("GPU {index} NVLinks"), &e);
                    Vec::new()
                }
            };
            let gpu = self.build_gpu(index, identity, &links, sysfs, &mut problems);
            let asked = Instant::now();
            fabric_facts.push((index, self.src.fabric(index)));
            fabric_took += asked.elapsed();
            raw_links.push(links);
            gpus.push(gpu);
        }

        let derived = Instant::now();
        let (per_gpu_fabric, node_fabric) = fabric::from_facts(&fabric_facts);
        fabric_took += derived.elapsed();
        let mut fabric_problems = Problems::default();
        for ((index, fact), (gpu, info)) in
            fabric_facts.iter().zip(gpus.iter_mut().zip(per_gpu_fabric))
        {
            if let Err(e) = fact {
                fabric_problems.note(format!("GPU {index}"), e);
            }
            gpu.fabric = info;
        }

        let pairs = self.pairs(&gpus, &mut problems);
        // Forget cached facts of GPUs that are gone.
        self.gpus
            .retain(|uuid, _| gpus.iter().any(|g| &g.uuid == uuid));
        self.platforms
            .retain(|uuid, _| gpus.iter().any(|g| &g.uuid == uuid));
        self.pairs.retain(|(a, b), _| {
            gpus.iter().any(|g| &g.uuid == a) && gpus.iter().any(|g| &g.uuid == b)
        });

        GpuProbeResult {
            driver,
            gpus,
            pairs,
            fabric: node_fabric,
            sources: vec![
                problems
                    .status(Source::Nvml)
                    .took(start.elapsed().saturating_sub(fabric_took)),
                fabric_problems.status(Source::Fabric).took(fabric_took),
            ],
        }
    }

    fn build_gpu(
        &mut self,
        index: u32,
        id: DeviceIdentity,
        links: &[RawNvLink],
        sysfs: &SysfsRoot,
        problems: &mut Problems,
    ) -> Gpu {
        let stat = match self.gpus.get(&id.uuid) {
            Some(s) => s.clone(),
            None => {
                let numa_node = match self.src.numa_node(index) {
                    Ok(n) => i32::try_from(n).ok(),
                    Err(e) => {
                        problems.note(format!("GPU {index} NUMA node"), &e);
                        PciAddress::parse(&id.pci_bus_id)
                            .and_then(|a| sysfs.pci_numa_node(&a.to_string()))
                    }
                };
                let cpu_affinity = match self.src.cpu_affinity(index) {
                    Ok(words) => cpulist_from_mask(&words),
                    Err(e) => {
                        problems.note(format!("GPU {index} CPU affinity"), &e);
                        String::new()
                    }
                };
                let s = StaticGpu {
                    numa_node,
                    cpu_affinity,
                };
                self.gpus.insert(id.uuid.clone(), s.clone());
                s
            }
        };
        let platform = self.platform(index, &id.uuid, problems);
        let (mig_mode, mig_mode_pending) = match self.src.mig_mode(index) {
            Ok((cur, pend)) => (mig(cur), mig(pend)),
            Err(e) if e.is_not_supported() => (MigMode::Unsupported, MigMode::Unsupported),
            Err(e) => {
                problems.note(format!("GPU {index} MIG mode"), &e);
                (MigMode::Unknown, MigMode::Unknown)
            }
        };
        let nvlinks = links
            .iter()
            .filter(|l| l.active)
            .map(|l| NvLink {
                link: l.link,
                version: match &l.version {
                    Some(Ok(v)) => nvlink_version_name(*v),
                    Some(Err(e)) => {
                        problems.note(format!("GPU {index} link {} version", l.link), e);
                        String::new()
                    }
                    None => String::new(),
                },
                remote_type: match &l.remote_type {
                    Some(Ok(0)) => NvLinkRemoteType::Gpu,
                    Some(Ok(1)) => NvLinkRemoteType::Ibmnpu,
                    Some(Ok(2)) => NvLinkRemoteType::Switch,
                    Some(Err(e)) => {
                        problems.note(format!("GPU {index} link {} remote type", l.link), e);
                        NvLinkRemoteType::Unknown
                    }
                    _ => NvLinkRemoteType::Unknown,
                },
                remote_pci_bus_id: match &l.remote_pci_bus_id {
                    Some(Ok(b)) if !b.is_empty() => Some(b.clone()),
                    _ => None,
                },
            })
            .collect();
        Gpu {
            index,
            family: GpuFamily::from_compute_capability(id.compute_major, id.compute_minor),
            uuid: id.uuid,
            name: id.name,
            serial: id.serial,
            pci_bus_id: id.pci_bus_id,
            memory_total_bytes: id.memory_total_bytes,
            compute_major: id.compute_major,
            compute_minor: id.compute_minor,
            mig_mode,
            mig_mode_pending,
            numa_node: stat.numa_node,
            cpu_affinity: stat.cpu_affinity,
            nvlinks,
            fabric: None,
            platform,
        }
    }

    /// The GPU's platform info: cached, else asked (and cached unless the query failed). A
    /// failure is a problem of the NVML source; "not supported" is not.
    fn platform(&mut self, index: u32, uuid: &str, problems: &mut Problems) -> GpuPlatform {
        if let Some(p) = self.platforms.get(uuid) {
            return p.clone();
        }
        let (p, problem) = platform::decode(&self.src.platform(index));
        if let Some(e) = problem {
            problems.0.push(format!("GPU {index} platform info: {e}"));
        }
        if p.status != PlatformStatus::Error {
            self.platforms.insert(uuid.to_string(), p.clone());
        }
        p
    }

    fn pairs(&mut self, gpus: &[Gpu], problems: &mut Problems) -> Vec<GpuPair> {
        let mut out = Vec::new();
        for a in gpus {
            for b in gpus.iter().filter(|b| b.index != a.index) {
                let stat = self.static_pair(a, b, problems);
                out.push(pair_of(a, b, &stat, problems));
            }
        }
        out
    }

    /// The static facts of the ordered pair `a`, `b`: cached, else asked (and cached when every
    /// answer was good). P2P status is not asked where NVSwitch links make it certain.
    fn static_pair(&mut self, a: &Gpu, b: &Gpu, problems: &mut Problems) -> StaticPair {
        let key = (a.uuid.clone(), b.uuid.clone());
        if let Some(s) = self.pairs.get(&key) {
            return s.clone();
        }
        let ancestor = self
            .src
            .common_ancestor(a.index, b.index)
            .unwrap_or_else(|e| {
                problems.note(format!("GPUs {}-{} common ancestor", a.index, b.index), &e);
                u32::MAX
            });
        let switched = all_switch(a) && all_switch(b);
        let p2p = (self.options.query_all_p2p || !switched)
            .then(|| self.src.p2p_nvlink(a.index, b.index));
        let s = StaticPair { p2p, ancestor };
        if s.ancestor != u32::MAX && !matches!(s.p2p, Some(Err(_))) {
            self.pairs.insert(key, s.clone());
        }
        s
    }
}

/// The pair `a`, `b` from its static facts and the GPUs' current links.
fn pair_of(a: &Gpu, b: &Gpu, stat: &StaticPair, problems: &mut Problems) -> GpuPair {
    let p2p_nvlink = match &stat.p2p {
        None | Some(Ok(0)) => P2pStatus::Ok,
        Some(Ok(_)) => P2pStatus::NotSupported,
        Some(Err(e)) if e.is_not_supported() => P2pStatus::NotSupported,
        Some(Err(e)) => {
            problems.note(format!("GPUs {}-{} P2P status", a.index, b.index), e);
            P2pStatus::Error
        }
    };
    let pcie = pcie_level(stat.ancestor);
    let direct = direct_links(a, b);
    let nvlink_count = if direct > 0 {
        direct
    } else if all_switch(a) && all_switch(b) {
        a.switch_links().min(b.switch_links()) as u32
    } else {
        0
    };
    let nvlink = p2p_nvlink == P2pStatus::Ok && nvlink_count > 0;
    GpuPair {
        a: a.index,
        b: b.index,
        connection: if nvlink { Connection::NvLink } else { pcie },
        nvlink_count: if nvlink { nvlink_count } else { 0 },
        p2p_nvlink,
        pcie,
    }
}

fn mig(v: u32) -> MigMode {
    if v == 1 {
        MigMode::Enabled
    } else {
        MigMode::Disabled
    }
}

/// True when the GPU has active NVLinks and every one of them ends at an NVSwitch.
fn all_switch(g: &Gpu) -> bool {
    !g.nvlinks.is_empty()
        && g.nvlinks
            .iter()
            .all(|l| l.remote_type == NvLinkRemoteType::Switch)
}

/// Number of `a`'s active links whose far end is `b`.
fn direct_links(a: &Gpu, b: &Gpu) -> u32 {
    let target = PciAddress::parse(&b.pci_bus_id);
    a.nvlinks
        .iter()
        .filter(|l| l.remote_type == NvLinkRemoteType::Gpu)
        .filter(|l| {
            l.remote_pci_bus_id
                .as_deref()
                .and_then(PciAddress::parse)
                .is_some_and(|r| Some(r) == target)
        })
        .count() as u32
}

/// NVML topology level (`nvmlGpuTopologyLevel_t`) as a `topo -m` connection.
pub fn pcie_level(level: u32) -> Connection {
    match level {
        0 => Connection::Internal,
        10 => Connection::Pix,
        20 => Connection::Pxb,
        30 => Connection::Phb,
        40 => Connection::Node,
        50 => Connection::Sys,
        _ => Connection::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;
    use crate::probe::{
        nvml::snapshot::NvmlSnapshot,
        nvml::{FailureKind, RawFabric, RawPlatform},
    };

    const H200: &str = include_str!("../../../tests/fixtures/h200x4-hgx/snapshot.json");

    /// Counts the expensive and static calls made through it.
    struct Counting {
        inner: NvmlSnapshot,
        p2p: Arc<AtomicUsize>,
        static_calls: Arc<AtomicUsize>,
    }

    impl NvmlSource for Counting {
        fn driver_version(&self) -> Fact<String> {
            self.static_calls.fetch_add(1, Ordering::SeqCst);
            self.inner.driver_version()
        }
        fn cuda_driver_version(&self) -> Fact<i32> {
            self.inner.cuda_driver_version()
        }
        fn nvml_version(&self) -> Fact<String> {
            self.inner.nvml_version()
        }
        fn device_count(&self) -> Fact<u32> {
            self.inner.device_count()
        }
        fn identity(&self, i: u32) -> Fact<DeviceIdentity> {
            self.inner.identity(i)
        }
        fn numa_node(&self, i: u32) -> Fact<u32> {
            self.static_calls.fetch_add(1, Ordering::SeqCst);
            self.inner.numa_node(i)
        }
        fn mig_mode(&self, i: u32) -> Fact<(u32, u32)> {
            self.inner.mig_mode(i)
        }
        fn cpu_affinity(&self, i: u32) -> Fact<Vec<u64>> {
            self.static_calls.fetch_add(1, Ordering::SeqCst);
            self.inner.cpu_affinity(i)
        }
        fn nvlinks(&self, i: u32) -> Fact<Vec<RawNvLink>> {
            self.inner.nvlinks(i)
        }
        fn p2p_nvlink(&self, a: u32, b: u32) -> Fact<u32> {
            self.p2p.fetch_add(1, Ordering::SeqCst);
            self.inner.p2p_nvlink(a, b)
        }
        fn common_ancestor(&self, a: u32, b: u32) -> Fact<u32> {
            self.static_calls.fetch_add(1, Ordering::SeqCst);
            self.inner.common_ancestor(a, b)
        }
        fn fabric(&self, i: u32) -> Fact<RawFabric> {
            self.inner.fabric(i)
        }
        fn platform(&self, i: u32) -> Fact<RawPlatform> {
            self.static_calls.fetch_add(1, Ordering::SeqCst);
            self.inner.platform(i)
        }
    }

    fn counting(snap: NvmlSnapshot) -> (Counting, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let p2p = Arc::new(AtomicUsize::new(0));
        let st = Arc::new(AtomicUsize::new(0));
        (
            Counting {
                inner: snap,
                p2p: p2p.clone(),
                static_calls: st.clone(),
            },
            p2p,
            st,
        )
    }

    fn h200() -> NvmlSnapshot {
        NvmlSnapshot::parse(H200, "h200").unwrap()
    }

    #[test]
    fn switch_shortcut_skips_p2p_calls_and_agrees() {
        let sysfs = SysfsRoot::new("/nonexistent");
        let (src, p2p, _) = counting(h200());
        let mut fast = GpuProber::new(Box::new(src), ProbeOptions::default());
        let a = fast.probe(&sysfs);
        assert_eq!(
            p2p.load(Ordering::SeqCst),
            0,
            "NVSwitch pairs need no P2P call"
        );

        let (src, p2p, _) = counting(h200());
        let mut full = GpuProber::new(
            Box::new(src),
            ProbeOptions {
                query_all_p2p: true,
            },
        );
        let b = full.probe(&sysfs);
        assert_eq!(p2p.load(Ordering::SeqCst), 12);
        assert_eq!(a.pairs, b.pairs);
    }

    #[test]
    fn warm_probe_reuses_static_facts() {
        let sysfs = SysfsRoot::new("/nonexistent");
        let (src, p2p, st) = counting(h200());
        let mut p = GpuProber::new(
            Box::new(src),
            ProbeOptions {
                query_all_p2p: true,
            },
        );
        let first = p.probe(&sysfs);
        let (p2p_cold, static_cold) = (p2p.load(Ordering::SeqCst), st.load(Ordering::SeqCst));
        assert!(
            static_cold >= 4 + 4 + 4 + 12,
            "numa, affinity, platform and ancestors asked once each"
        );
        let second = p.probe(&sysfs);
        assert_eq!(
            p2p.load(Ordering::SeqCst),
            p2p_cold,
            "no P2P call when warm"
        );
        assert_eq!(
            st.load(Ordering::SeqCst),
            static_cold,
            "no static call when warm"
        );
        assert_eq!(first.gpus, second.gpus);
        assert_eq!(first.pairs, second.pairs);
    }

    #[test]
    fn a_replaced_gpu_is_read_again() {
        let sysfs = SysfsRoot::new("/nonexistent");
        let snap = h200();
        let mut swapped = snap.clone();
        if let Ok(id) = &mut swapped.devices[2].identity {
            id.uuid = "GPU-00000000-0000-0000-0000-00000000beef".into();
        }
        // The prober keeps its cache only within one source, so the test swaps that source's
        // data in place through a shared cell.
        struct Swap(std::sync::Mutex<NvmlSnapshot>, Arc<AtomicUsize>);
        impl NvmlSource for Swap {
            fn driver_version(&self) -> Fact<String> {
                self.0.lock().unwrap().driver_version()
            }
            fn cuda_driver_version(&self) -> Fact<i32> {
                self.0.lock().unwrap().cuda_driver_version()
            }
            fn nvml_version(&self) -> Fact<String> {
                self.0.lock().unwrap().nvml_version()
            }
            fn device_count(&self) -> Fact<u32> {
                self.0.lock().unwrap().device_count()
            }
            fn identity(&self, i: u32) -> Fact<DeviceIdentity> {
                self.0.lock().unwrap().identity(i)
            }
            fn numa_node(&self, i: u32) -> Fact<u32> {
                self.1.fetch_add(1, Ordering::SeqCst);
                self.0.lock().unwrap().numa_node(i)
            }
            fn mig_mode(&self, i: u32) -> Fact<(u32, u32)> {
                self.0.lock().unwrap().mig_mode(i)
            }
            fn cpu_affinity(&self, i: u32) -> Fact<Vec<u64>> {
                self.0.lock().unwrap().cpu_affinity(i)
            }
            fn nvlinks(&self, i: u32) -> Fact<Vec<RawNvLink>> {
                self.0.lock().unwrap().nvlinks(i)
            }
            fn p2p_nvlink(&self, a: u32, b: u32) -> Fact<u32> {
                self.0.lock().unwrap().p2p_nvlink(a, b)
            }
            fn common_ancestor(&self, a: u32, b: u32) -> Fact<u32> {
                self.0.lock().unwrap().common_ancestor(a, b)
            }
            fn fabric(&self, i: u32) -> Fact<RawFabric> {
                self.0.lock().unwrap().fabric(i)
            }
            fn platform(&self, i: u32) -> Fact<RawPlatform> {
                self.0.lock().unwrap().platform(i)
            }
        }
        let numa_calls = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Swap(std::sync::Mutex::new(snap), numa_calls.clone()));
        let mut p = GpuProber::new(Box::new(shared.clone()), ProbeOptions::default());
        p.probe(&sysfs);
        assert_eq!(numa_calls.load(Ordering::SeqCst), 4);
        *shared.0.lock().unwrap() = swapped;
        let r = p.probe(&sysfs);
        assert_eq!(
            numa_calls.load(Ordering::SeqCst),
            5,
            "only the new GPU is read again"
        );
        assert_eq!(r.gpus[2].uuid, "GPU-00000000-0000-0000-0000-00000000beef");
        assert_eq!(p.gpus.len(), 4, "the old GPU's facts are forgotten");
    }

    #[test]
    fn direct_nvlink_bridge_pairs_count_their_links() {
        // Two PCIe GPUs joined by an NVLink bridge with 4 links; no switch, so P2P is asked.
        let mut snap = h200();
        snap.devices.truncate(2);
        snap.device_count = Ok(2);
        snap.pairs.retain(|p| p.a < 2 && p.b < 2);
        let bus: Vec<String> = snap
            .devices
            .iter()
            .map(|d| d.identity.as_ref().unwrap().pci_bus_id.clone())
            .collect();
        for (i, d) in snap.devices.iter_mut().enumerate() {
            let other = bus[1 - i].clone();
            d.nvlinks = Ok((0..4)
                .map(|l| RawNvLink {
                    link: l,
                    active: true,
                    version: Some(Ok(4)),
                    remote_type: Some(Ok(0)),
                    remote_pci_bus_id: Some(Ok(other.clone())),
                })
                .chain((4..12).map(|l| RawNvLink {
                    link: l,
                    active: false,
                    version: None,
                    remote_type: None,
                    remote_pci_bus_id: None,
                }))
                .collect());
        }
        for p in &mut snap.pairs {
            p.common_ancestor = Ok(50);
        }
        let (src, p2p, _) = counting(snap.clone());
        let r = GpuProber::new(Box::new(src), ProbeOptions::default()).probe(&SysfsRoot::default());
        assert_eq!(
            p2p.load(Ordering::SeqCst),
            2,
            "no switch: P2P asked for both directions"
        );
        let pair = &r.pairs[0];
        assert_eq!(pair.cell(), "NV4");
        assert_eq!(pair.pcie, Connection::Sys);
        assert!(
            r.gpus
                .iter()
                .all(|g| g.nvlinks.len() == 4 && g.nvlinks[0].version == "3.0")
        );

        // Without P2P over NVLink the cell falls back to the PCIe level.
        for p in &mut snap.pairs {
            p.p2p_nvlink = Ok(5);
        }
        let r =
            GpuProber::new(Box::new(snap), ProbeOptions::default()).probe(&SysfsRoot::default());
        assert_eq!(r.pairs[0].cell(), "SYS");
        assert_eq!(r.pairs[0].p2p_nvlink, P2pStatus::NotSupported);
    }

    #[test]
    fn unsupported_answers_are_unknowns_not_errors() {
        let mut snap = h200();
        let ns = || NvmlFailure::new(FailureKind::NotSupported, "Not Supported");
        for d in &mut snap.devices {
            d.mig_mode = Err(ns());
            d.cpu_affinity = Err(ns());
            d.fabric = Err(ns());
        }
        let r =
            GpuProber::new(Box::new(snap), ProbeOptions::default()).probe(&SysfsRoot::default());
        assert!(r.sources.iter().all(|s| s.ok), "{:?}", r.sources);
        assert!(r.gpus.iter().all(|g| g.mig_mode == MigMode::Unsupported));
        assert!(r.gpus.iter().all(|g| g.cpu_affinity.is_empty()));
        assert_eq!(r.fabric.state, crate::model::FabricState::None);
    }

    #[test]
    fn platform_info_not_supported_is_no_failure_and_an_error_is() {
        let sysfs = SysfsRoot::default();
        // Recorded before platform info was asked: unknown, no failure.
        let r = GpuProber::new(Box::new(h200()), ProbeOptions::default()).probe(&sysfs);
        assert!(r.sources.iter().all(|s| s.ok), "{:?}", r.sources);
        assert!(
            r.gpus
                .iter()
                .all(|g| g.platform.status == PlatformStatus::Unknown)
        );

        let mut snap = h200();
        for d in &mut snap.devices {
            d.platform = Some(Err(NvmlFailure::new(
                FailureKind::NotSupported,
                "nvmlDeviceGetPlatformInfo returned 3",
            )));
        }
        let r = GpuProber::new(Box::new(snap.clone()), ProbeOptions::default()).probe(&sysfs);
        assert!(r.sources.iter().all(|s| s.ok), "{:?}", r.sources);
        assert!(
            r.gpus
                .iter()
                .all(|g| g.platform.status == PlatformStatus::NotSupported)
        );

        snap.devices[1].platform = Some(Err(NvmlFailure::new(
            FailureKind::NoPermission,
            "Insufficient Permissions",
        )));
        let r = GpuProber::new(Box::new(snap), ProbeOptions::default()).probe(&sysfs);
        let nvml = &r.sources[0];
        assert!(!nvml.ok, "{nvml:?}");
        assert!(
            nvml.error
                .contains("GPU 1 platform info: Insufficient Permissions"),
            "{}",
            nvml.error
        );
        assert_eq!(r.gpus[1].platform.status, PlatformStatus::Error);
        assert_eq!(r.gpus[0].platform.status, PlatformStatus::NotSupported);
    }

    #[test]
    fn no_device_count_keeps_probing_safe() {
        let mut snap = h200();
        snap.device_count = Err(NvmlFailure::new(FailureKind::Other, "Unknown Error"));
        let r =
            GpuProber::new(Box::new(snap), ProbeOptions::default()).probe(&SysfsRoot::default());
        assert!(r.gpus.is_empty());
        assert!(!r.sources[0].ok && r.sources[0].error.contains("Unknown Error"));
        assert_eq!(r.driver.driver_version.as_deref(), Some("580.159.04"));
    }
}
