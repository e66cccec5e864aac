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
        read_attr(path)
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

/// Reads one sysfs attribute, trimmed; `Ok(None)` when it does not exist. sysfs hands out an
/// attribute (at most a page) in one read, so this does open, one read and close, which matters
/// for GID tables of 255 entries per RoCE port. Longer files are read to the end.
pub fn read_attr(path: &Path) -> std::io::Result<Option<String>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    read_open(&mut f)
}

/// Reads an open attribute file: one `read` for the usual small attribute, trimmed; not UTF-8
/// is an `InvalidData` error.
fn read_open(f: &mut std::fs::File) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let mut buf = [0u8; 4096];
    let n = f.read(&mut buf)?;
    let mut bytes = buf[..n].to_vec();
    if n == buf.len() {
        f.read_to_end(&mut bytes)?;
    }
    String::from_utf8(bytes)
        .map(|s| Some(s.trim().to_string()))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Reads many attributes of one directory (a GID table) with the directory opened once, so
/// each entry costs an `openat` of one name instead of a walk of the whole path.
pub(crate) struct DirAttrs {
    dir: Option<rustix::fd::OwnedFd>,
    path: std::path::PathBuf,
}

impl DirAttrs {
    pub(crate) fn open(path: &Path) -> Self {
        use rustix::fs::{CWD, Mode, OFlags, openat};
        let dir = openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok();
        Self {
            dir,
            path: path.to_path_buf(),
        }
    }

    /// Like [`read_attr`] for `<dir>/<name>`.
    pub(crate) fn read(&self, name: &str) -> std::io::Result<Option<String>> {
        use rustix::fs::{Mode, OFlags, openat};
        let Some(dir) = &self.dir else {
            return read_attr(&self.path.join(name));
        };
        let fd = match openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        read_open(&mut std::fs::File::from(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_and_sysfs_addresses_are_one_type() {
        let a = |s: &str| crate::model::PciAddress::parse(s).map(|a| a.to_string());
        assert_eq!(a("00000000:00:06.0").as_deref(), Some("0000:00:06.0"));
        assert_eq!(a("00000000:1B:00.0").as_deref(), Some("0000:1b:00.0"));
        assert_eq!(a("00010000:C1:00.1").as_deref(), Some("10000:c1:00.1"));
        assert_eq!(a("garbage"), None);
        assert_eq!(a("0000:00:20.0"), None);
        // The two parsers this replaces disagreed on the short form; now it is refused.
        assert_eq!(a("0:0:6.0"), None);
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
