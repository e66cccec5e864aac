//! GPUDirect RDMA readiness: can a NIC read and write GPU memory directly?
//!
//! Two mechanisms exist: the `nvidia_peermem` kernel module (peer-memory API), or dma-buf
//! (kernel 5.12 or newer, the NVIDIA kernel module and the RDMA user-verbs module). The facts
//! are gathered from sysfs ([`GpuDirectFacts::read`]) and judged by a pure function
//! ([`assess`]).

use crate::model::{GpuDirect, GpuDirectMethod};

use crate::probe::sysfs::SysfsRoot;

/// What the node shows about GPUDirect RDMA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuDirectFacts {
    /// `module/nvidia_peermem` exists.
    pub nvidia_peermem: bool,
    /// `module/nvidia` exists.
    pub nvidia: bool,
    /// `module/ib_uverbs` exists.
    pub ib_uverbs: bool,
    /// Kernel release (`6.8.0-45-generic`), when known.
    pub kernel_release: Option<String>,
    /// Number of RDMA devices found.
    pub nics: usize,
    /// Number of GPUs found.
    pub gpus: usize,
}

impl GpuDirectFacts {
    /// Reads the module directories under `root`, and the kernel release from
    /// `<root>/../proc/sys/kernel/osrelease` (so `/sys` gives `/proc`, and a fixture tree can
    /// carry its own).
    pub fn read(root: &SysfsRoot, nics: usize, gpus: usize) -> Self {
        let module = |m: &str| root.path("module").join(m).is_dir();
        let kernel_release = root
            .root()
            .parent()
            .map(|p| p.join("proc/sys/kernel/osrelease"))
            .and_then(|p| root.read_attr(&p).ok().flatten())
            .filter(|s| !s.is_empty());
        Self {
            nvidia_peermem: module("nvidia_peermem"),
            nvidia: module("nvidia"),
            ib_uverbs: module("ib_uverbs"),
            kernel_release,
            nics,
            gpus,
        }
    }
}

/// `(major, minor)` of a kernel release such as `6.8.0-45-generic` or `5.15.167.4-microsoft`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.trim().split(['.', '-']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Judges readiness from the facts, and says why in `reason`.
pub fn assess(f: &GpuDirectFacts) -> GpuDirect {
    let not_ready = |reason: String| GpuDirect {
        ready: false,
        method: GpuDirectMethod::None,
        reason,
    };
    if f.nics == 0 {
        return not_ready("no RDMA devices".into());
    }
    if f.gpus == 0 {
        return not_ready("no GPUs".into());
    }
    if f.nvidia_peermem {
        return GpuDirect {
            ready: true,
            method: GpuDirectMethod::NvidiaPeermem,
            reason: "kernel module nvidia_peermem is loaded".into(),
        };
    }
    let kernel = f.kernel_release.as_deref().and_then(kernel_version);
    let kernel_text = f.kernel_release.as_deref().unwrap_or("unknown");
    let kernel_ok = kernel.is_some_and(|v| v >= (5, 12));
    if f.nvidia && f.ib_uverbs && kernel_ok {
        return GpuDirect {
            ready: true,
            method: GpuDirectMethod::DmaBuf,
            reason: format!(
                "nvidia_peermem is not loaded; dma-buf is possible: kernel {kernel_text} (>= 5.12), \
                 modules nvidia and ib_uverbs loaded (needs the open NVIDIA kernel modules, \
                 which sysfs does not show)"
            ),
        };
    }
    let mut missing = Vec::new();
    if !f.nvidia {
        missing.push("module nvidia is not loaded".to_string());
    }
    if !f.ib_uverbs {
        missing.push("module ib_uverbs is not loaded".to_string());
    }
    if !kernel_ok {
        missing.push(format!("kernel {kernel_text} is not known to be >= 5.12"));
    }
    not_ready(format!(
        "nvidia_peermem is not loaded and dma-buf is not available: {}",
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> GpuDirectFacts {
        GpuDirectFacts {
            nvidia_peermem: false,
            nvidia: true,
            ib_uverbs: true,
            kernel_release: Some("6.8.0-45-generic".into()),
            nics: 2,
            gpus: 8,
        }
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.8.0-45-generic"), Some((6, 8)));
        assert_eq!(kernel_version("5.4"), Some((5, 4)));
        assert_eq!(
            kernel_version("5.15.167.4-microsoft-standard"),
            Some((5, 15))
        );
        assert_eq!(kernel_version("linux"), None);
        assert_eq!(kernel_version(""), None);
    }

    #[test]
    fn peermem_wins() {
        let g = assess(&GpuDirectFacts {
            nvidia_peermem: true,
            kernel_release: None,
            ..facts()
        });
        assert!(g.ready);
        assert_eq!(g.method, GpuDirectMethod::NvidiaPeermem);
    }

    #[test]
    fn dma_buf_needs_kernel_and_modules() {
        let g = assess(&facts());
        assert!(g.ready);
        assert_eq!(g.method, GpuDirectMethod::DmaBuf);
        let old = assess(&GpuDirectFacts {
            kernel_release: Some("5.4.0-100-generic".into()),
            ..facts()
        });
        assert!(!old.ready);
        assert!(old.reason.contains("5.4.0-100-generic"), "{}", old.reason);
        let no_uverbs = assess(&GpuDirectFacts {
            ib_uverbs: false,
            ..facts()
        });
        assert!(!no_uverbs.ready);
        assert!(
            no_uverbs.reason.contains("ib_uverbs"),
            "{}",
            no_uverbs.reason
        );
    }

    #[test]
    fn no_nics_is_not_ready() {
        let g = assess(&GpuDirectFacts {
            nics: 0,
            nvidia_peermem: true,
            ..facts()
        });
        assert!(!g.ready);
        assert_eq!(g.reason, "no RDMA devices");
    }

    #[test]
    fn reads_modules_and_kernel_from_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        std::fs::create_dir_all(sys.join("module/nvidia_peermem")).unwrap();
        std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(dir.path().join("proc/sys/kernel/osrelease"), "6.1.0\n").unwrap();
        let f = GpuDirectFacts::read(&SysfsRoot::new(&sys), 1, 1);
        assert!(f.nvidia_peermem && !f.nvidia && !f.ib_uverbs);
        assert_eq!(f.kernel_release.as_deref(), Some("6.1.0"));
    }
}
