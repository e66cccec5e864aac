//! Reading sysfs under a configurable root (`--sysfs-root`, `/host-sys` in the DaemonSet).
//!
//! Every sysfs reader in nodetopo goes through [`SysfsRoot`], so fixtures are just directories.

use std::{
    io,
    path::{Path, PathBuf},
};

/// A sysfs tree rooted at a directory (normally `/sys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysfsRoot {
    root: PathBuf,
}

impl Default for SysfsRoot {
    fn default() -> Self {
        Self::new("/sys")
    }
}

impl SysfsRoot {
    /// A tree rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/rel`.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }

    /// Reads an attribute file, trimmed. `Ok(None)` when the file does not exist.
    pub fn read_attr(&self, path: &Path) -> io::Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The device directory of a PCI function, `bus/pci/devices/<bdf>`.
    pub fn pci_device(&self, bdf: &str) -> PathBuf {
        self.path("bus/pci/devices").join(bdf)
    }

    /// NUMA node of a PCI function from `numa_node`; `None` when absent, unparsable or -1.
    pub fn pci_numa_node(&self, bdf: &str) -> Option<i32> {
        let v = self
            .read_attr(&self.pci_device(bdf).join("numa_node"))
            .ok()
            .flatten()?;
        v.parse::<i32>().ok().filter(|n| *n >= 0)
    }
}

/// Converts NVML's bus id (`00000000:00:06.0`, upper-case hex, 8-digit domain) to the sysfs
/// form (`0000:00:06.0`). Returns `None` for text that is not a PCI address.
pub fn sysfs_bdf(nvml_bus_id: &str) -> Option<String> {
    let mut parts = nvml_bus_id.trim().splitn(3, ':');
    let domain = u32::from_str_radix(parts.next()?, 16).ok()?;
    let bus = u8::from_str_radix(parts.next()?, 16).ok()?;
    let (dev, func) = parts.next()?.split_once('.')?;
    let dev = u8::from_str_radix(dev, 16).ok()?;
    let func = u8::from_str_radix(func, 16).ok()?;
    if dev > 0x1f || func > 7 {
        return None;
    }
    Some(format!("{domain:04x}:{bus:02x}:{dev:02x}.{func:x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_conversion() {
        assert_eq!(
            sysfs_bdf("00000000:00:06.0").as_deref(),
            Some("0000:00:06.0")
        );
        assert_eq!(
            sysfs_bdf("00000000:1B:00.0").as_deref(),
            Some("0000:1b:00.0")
        );
        assert_eq!(
            sysfs_bdf("00010000:C1:00.1").as_deref(),
            Some("10000:c1:00.1")
        );
        assert_eq!(sysfs_bdf("garbage"), None);
        assert_eq!(sysfs_bdf("0000:00:20.0"), None);
    }

    #[test]
    fn numa_node_minus_one_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("bus/pci/devices/0000:00:06.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("numa_node"), "-1\n").unwrap();
        let root = SysfsRoot::new(dir.path());
        assert_eq!(root.pci_numa_node("0000:00:06.0"), None);
        std::fs::write(dev.join("numa_node"), "1\n").unwrap();
        assert_eq!(root.pci_numa_node("0000:00:06.0"), Some(1));
        std::fs::write(dev.join("numa_node"), "garbage").unwrap();
        assert_eq!(root.pci_numa_node("0000:00:06.0"), None);
        assert_eq!(root.pci_numa_node("0000:ff:00.0"), None);
    }
}
