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
///
/// Only a regular file is read: the file is opened without blocking (a FIFO or a device in its
/// place would otherwise hang the probe in `open` or `read`) and anything else is an
/// `InvalidInput` error naming its type.
pub fn read_attr(path: &Path) -> std::io::Result<Option<String>> {
    use rustix::fs::{CWD, Mode, openat};
    let fd = match openat(CWD, path, ATTR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    read_open(fd)
}

/// Reads a binary attribute (a VPD) whole, with the checks of [`read_attr`].
pub fn read_binary_attr(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let fd = rustix::fs::openat(rustix::fs::CWD, path, ATTR_FLAGS, rustix::fs::Mode::empty())?;
    regular(&fd)?;
    let mut bytes = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `InvalidInput` unless `fd` is a regular file.
fn regular(fd: &rustix::fd::OwnedFd) -> std::io::Result<()> {
    let kind = rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(fd)?.st_mode);
    if kind == rustix::fs::FileType::RegularFile {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("not a regular file but a {kind:?}"),
    ))
}

/// How an attribute is opened: read-only, close-on-exec, and never blocking.
const ATTR_FLAGS: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::CLOEXEC)
    .union(rustix::fs::OFlags::NONBLOCK);

/// Reads an open attribute file: one `read` for the usual small attribute, trimmed; not UTF-8
/// is an `InvalidData` error, and not a regular file an `InvalidInput` one.
fn read_open(fd: rustix::fd::OwnedFd) -> std::io::Result<Option<String>> {
    use std::io::Read;
    regular(&fd)?;
    let f = &mut std::fs::File::from(fd);
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
        use rustix::fs::{Mode, openat};
        let Some(dir) = &self.dir else {
            return read_attr(&self.path.join(name));
        };
        let fd = match openat(dir, name, ATTR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        read_open(fd)
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

    /// Runs `f` on a thread; panics if it takes longer than 5 s (a hang).
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the read returned in time")
    }

    #[test]
    fn a_fifo_directory_or_loop_in_place_of_an_attribute_is_an_error_not_a_hang() {
        use rustix::fs::{CWD, FileType, Mode, mknodat};
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("rate");
        mknodat(CWD, &fifo, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
        let dir = d.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(d.path().join("b"), d.path().join("a")).unwrap();
        std::os::unix::fs::symlink(d.path().join("a"), d.path().join("b")).unwrap();
        std::fs::write(d.path().join("ok"), "100 Gb/sec (4X EDR)\n").unwrap();
        std::fs::write(d.path().join("bin"), b"\xff\xfe").unwrap();
        let root = d.path().to_path_buf();
        let (plain, by_dir) = within_5s(move || {
            let names = ["rate", "state", "a", "ok", "bin", "gone"];
            let plain: Vec<_> = names.iter().map(|n| read_attr(&root.join(n))).collect();
            let attrs = DirAttrs::open(&root);
            let by_dir: Vec<_> = names.iter().map(|n| attrs.read(n)).collect();
            assert!(
                read_binary_attr(&root.join("rate")).is_err(),
                "a FIFO as VPD"
            );
            assert_eq!(read_binary_attr(&root.join("bin")).unwrap(), b"\xff\xfe");
            (plain, by_dir)
        });
        for results in [plain, by_dir] {
            let kind = |i: usize| results[i].as_ref().err().map(std::io::Error::kind);
            let e = results[0].as_ref().unwrap_err().to_string();
            assert!(
                e.contains("not a regular file") && e.contains("Fifo"),
                "{e}"
            );
            assert_eq!(kind(1), Some(io::ErrorKind::InvalidInput), "a directory");
            assert!(results[2].is_err(), "a symlink loop: {:?}", results[2]);
            assert_eq!(
                results[3].as_ref().unwrap().as_deref(),
                Some("100 Gb/sec (4X EDR)")
            );
            assert_eq!(kind(4), Some(io::ErrorKind::InvalidData), "not UTF-8");
            assert!(matches!(results[5], Ok(None)), "a vanished file");
        }
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
