//! RDMA devices from sysfs (`class/infiniband/<dev>`), under a [`SysfsRoot`].
//!
//! One [`Nic`] per device with its ports and, for RoCE, its GID table. A missing, unreadable
//! or garbled attribute is recorded as one message naming the device, port and file; the rest
//! of the device and every other device are still read. The parsers are pure and never panic.

use std::{fs, path::Path};

use crate::model::{
    Gid, GidType, LinkLayer, Nic, NicPort, NodeType, PhysState, PortState, Source, SourceStatus,
};

use crate::probe::sysfs::{DirAttrs, SysfsRoot, read_attr};

/// Upper bound on GID table entries read per port (the hardware has at most a few hundred).
const MAX_GIDS: u32 = 4096;

/// What the RDMA probe found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RdmaProbe {
    /// Devices, sorted by name.
    pub nics: Vec<Nic>,
    /// One message per item that could not be read.
    pub errors: Vec<String>,
    /// A remark for the status when nothing is wrong but something is worth saying.
    pub note: Option<String>,
    /// How long the sysfs walk took (set by the caller that timed it).
    pub took: std::time::Duration,
}

impl RdmaProbe {
    /// The source status: ok unless an item failed; the note (if any) goes in the message.
    pub fn status(&self) -> SourceStatus {
        if self.errors.is_empty() {
            let mut s = SourceStatus::ok(Source::Rdma).took(self.took);
            if let Some(n) = &self.note {
                s.error = n.clone();
            }
            s
        } else {
            SourceStatus::failed(Source::Rdma, self.errors.join("; ")).took(self.took)
        }
    }
}

/// Parses a port rate such as `400 Gb/sec (4X NDR)` or `2.5 Gb/sec (1X SDR)` to Gb/s.
pub fn parse_rate_gbps(s: &str) -> Option<f64> {
    let mut it = s.split_whitespace();
    let v: f64 = it.next()?.parse().ok()?;
    if !v.is_finite() || v < 0.0 || it.next()? != "Gb/sec" {
        return None;
    }
    Some(v)
}

/// Parses a logical port state (`4: ACTIVE`): the number and the kernel's name must agree.
pub fn parse_port_state(s: &str) -> Option<PortState> {
    let (num, name) = s.split_once(':')?;
    let st = PortState::from_iba(num.trim().parse().ok()?);
    (st.kernel_name() == Some(name.trim())).then_some(st)
}

/// Parses a physical port state (`5: LinkUp`) by its name (`LinkUp`; the kernel's `Phy Test`
/// is [`PhysState::PhyTest`]).
pub fn parse_phys_state(s: &str) -> Option<PhysState> {
    let (num, name) = s.split_once(':')?;
    num.trim().parse::<u8>().ok()?;
    let name = name.trim();
    if name == "Phy Test" {
        return Some(PhysState::PhyTest);
    }
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| PhysState::from(name))
}

/// Parses `node_type` (`1: CA`). The number and the name must agree; the kernel's
/// `<unknown>` and anything else is `None`.
pub fn parse_node_type(s: &str) -> Option<NodeType> {
    let (num, name) = s.split_once(':')?;
    let t = NodeType::from_code(num.trim().parse().ok()?);
    (t.kernel_name() == Some(name.trim())).then_some(t)
}

/// Parses `link_layer` (`InfiniBand` or `Ethernet`).
pub fn parse_link_layer(s: &str) -> Option<LinkLayer> {
    match s.trim() {
        "InfiniBand" => Some(LinkLayer::Infiniband),
        "Ethernet" => Some(LinkLayer::Ethernet),
        _ => None,
    }
}

/// Parses a LID (`0x1b`; sysfs writes LIDs in hex).
pub fn parse_lid(s: &str) -> Option<u32> {
    let h = s.trim().strip_prefix("0x")?;
    if h.is_empty() || h.len() > 8 {
        return None;
    }
    u32::from_str_radix(h, 16).ok()
}

fn hex_groups<const N: usize>(s: &str) -> Option<[u16; N]> {
    let mut out = [0u16; N];
    let mut it = s.trim().split(':');
    for slot in &mut out {
        let g = it.next()?;
        if g.len() != 4 || !g.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *slot = u16::from_str_radix(g, 16).ok()?;
    }
    it.next().is_none().then_some(out)
}

/// Parses a 64-bit GUID as sysfs writes it (`0c42:a103:0065:4d2e`), normalized to lower case.
pub fn parse_guid(s: &str) -> Option<String> {
    let g = hex_groups::<4>(s)?;
    Some(format!(
        "{:04x}:{:04x}:{:04x}:{:04x}",
        g[0], g[1], g[2], g[3]
    ))
}

/// A parsed 128-bit GID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GidValue(pub [u16; 8]);

impl GidValue {
    /// Parses `fe80:0000:0000:0000:0c42:a103:0065:4d2e` (eight groups of four hex digits).
    pub fn parse(s: &str) -> Option<Self> {
        hex_groups::<8>(s).map(Self)
    }

    /// All zero (an unused table entry).
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|g| *g == 0)
    }

    /// The subnet prefix (first 64 bits) in GUID form.
    pub fn prefix(&self) -> String {
        let g = self.0;
        format!("{:04x}:{:04x}:{:04x}:{:04x}", g[0], g[1], g[2], g[3])
    }

    /// The interface id (last 64 bits) in GUID form.
    pub fn interface_id(&self) -> String {
        let g = self.0;
        format!("{:04x}:{:04x}:{:04x}:{:04x}", g[4], g[5], g[6], g[7])
    }

    /// An IPv4-mapped GID (`::ffff:a.b.c.d`), as RoCE uses for IPv4 addresses.
    pub fn is_ipv4_mapped(&self) -> bool {
        self.0[..5].iter().all(|g| *g == 0) && self.0[5] == 0xffff
    }

    /// Canonical text: eight lower-case groups of four.
    pub fn text(&self) -> String {
        self.0
            .iter()
            .map(|g| format!("{g:04x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Reads attributes of one item and collects one message per failure.
struct Reader<'a> {
    errors: &'a mut Vec<String>,
    item: String,
}

impl Reader<'_> {
    /// Raw read: `None` (and a message) when missing, unreadable or not UTF-8.
    fn raw(&mut self, dir: &Path, file: &str) -> Option<String> {
        match read_attr(&dir.join(file)) {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                self.errors
                    .push(format!("{}: {file} is missing", self.item));
                None
            }
            Err(e) => {
                self.errors
                    .push(format!("{}: cannot read {file}: {e}", self.item));
                None
            }
        }
    }

    /// Raw read where absence is normal: `None` without a message when missing.
    fn optional(&mut self, dir: &Path, file: &str) -> Option<String> {
        match read_attr(&dir.join(file)) {
            Ok(v) => v,
            Err(e) => {
                self.errors
                    .push(format!("{}: cannot read {file}: {e}", self.item));
                None
            }
        }
    }

    /// Reads and parses; a message names the file and the bad value.
    fn parsed<T>(
        &mut self,
        dir: &Path,
        file: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let v = self.raw(dir, file)?;
        let r = parse(&v);
        if r.is_none() {
            self.errors
                .push(format!("{}: {file}: unparsable value {v:?}", self.item));
        }
        r
    }
}

/// Sorted entry names of a directory; `None` when it does not exist.
fn list_dir(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort_by_cached_key(|a| natural_key(a));
    Ok(names)
}

/// Sort key that orders `mlx5_2` before `mlx5_10` and `gids/2` before `gids/10`.
fn natural_key(s: &str) -> (String, u64, String) {
    let split = s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, num) = s.split_at(split);
    (head.to_string(), num.parse().unwrap_or(0), s.to_string())
}

/// Probes every RDMA device under `root`.
pub fn probe(root: &SysfsRoot) -> RdmaProbe {
    let class = root.path("class/infiniband");
    let names = match list_dir(&class) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return RdmaProbe {
                note: no_device_note(root),
                ..RdmaProbe::default()
            };
        }
        Err(e) => {
            return RdmaProbe {
                errors: vec![format!("cannot list class/infiniband: {e}")],
                ..RdmaProbe::default()
            };
        }
    };
    let mut out = RdmaProbe::default();
    for name in names {
        let dir = class.join(&name);
        // An entry that is no directory (any more): it vanished after the listing (its link
        // dangles), or its link loops. There is nothing of it to read: left out, and said.
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                out.errors
                    .push(format!("{name}: not a device directory; left out"));
                continue;
            }
            Err(e) => {
                out.errors.push(format!("{name}: {e}; left out"));
                continue;
            }
        }
        let nic = probe_device(&dir, &name, &mut out.errors);
        out.nics.push(nic);
    }
    if out.nics.is_empty() {
        out.note = no_device_note(root);
    }
    out
}

/// When no device exists but RDMA kernel modules are loaded, say so.
fn no_device_note(root: &SysfsRoot) -> Option<String> {
    let loaded: Vec<&str> = ["mlx5_core", "mlx5_ib", "ib_core", "ib_uverbs"]
        .into_iter()
        .filter(|m| root.path("module").join(m).is_dir())
        .collect();
    (!loaded.is_empty()).then(|| {
        format!(
            "no RDMA devices, although kernel modules {} are loaded",
            loaded.join(", ")
        )
    })
}

fn probe_device(dir: &Path, name: &str, errors: &mut Vec<String>) -> Nic {
    let mut r = Reader {
        errors,
        item: name.to_string(),
    };
    let mut nic = Nic {
        name: name.to_string(),
        bonded: name.contains("_bond_"),
        ..Nic::default()
    };
    nic.node_guid = r.parsed(dir, "node_guid", parse_guid).unwrap_or_default();
    nic.sys_image_guid = r
        .parsed(dir, "sys_image_guid", parse_guid)
        .unwrap_or_default();
    nic.fw_version = r.raw(dir, "fw_ver").unwrap_or_default();
    nic.board_id = r.raw(dir, "board_id").unwrap_or_default();
    nic.hca_type = r.raw(dir, "hca_type").unwrap_or_default();

    // The PCI function behind the device.
    let dev = dir.join("device");
    let real_dev =
        super::pci::resolve_link(dir).and_then(|d| super::pci::resolve_link(&d.join("device")));
    match real_dev {
        Ok(pci) => {
            let leaf = pci.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            match crate::model::PciAddress::parse(leaf) {
                Some(a) => nic.pci_address = a.to_string(),
                None => r.errors.push(format!(
                    "{name}: device link leads to {leaf:?}, not a PCI function"
                )),
            }
            nic.numa_node = match r.optional(&pci, "numa_node") {
                Some(v) => match v.parse::<i32>() {
                    Ok(n) => (n >= 0).then_some(n),
                    Err(_) => {
                        r.errors
                            .push(format!("{name}: device/numa_node: unparsable value {v:?}"));
                        None
                    }
                },
                None => None,
            };
            nic.virtual_function = pci.join("physfn").exists();
            nic.netdevs = match list_dir(&pci.join("net")) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    r.errors
                        .push(format!("{name}: cannot list device/net: {e}"));
                    Vec::new()
                }
            };
        }
        Err(e) => {
            let target = fs::read_link(&dev)
                .map(|t| format!(" (-> {})", t.display()))
                .unwrap_or_default();
            r.errors
                .push(format!("{name}: device link does not resolve{target}: {e}"));
        }
    }

    let ports_dir = dir.join("ports");
    match list_dir(&ports_dir) {
        Ok(ports) => {
            for p in ports {
                match p.parse::<u32>() {
                    Ok(n) => {
                        let mut pr = Reader {
                            errors: &mut *r.errors,
                            item: format!("{name} port {n}"),
                        };
                        nic.ports.push(probe_port(&mut pr, &ports_dir.join(&p), n));
                    }
                    Err(_) => r
                        .errors
                        .push(format!("{name}: ports/{p} is not a port number")),
                }
            }
        }
        Err(e) => r.errors.push(format!("{name}: cannot list ports: {e}")),
    }
    nic
}

fn probe_port(r: &mut Reader<'_>, dir: &Path, port: u32) -> NicPort {
    let mut p = NicPort {
        port,
        ..NicPort::default()
    };
    p.state = r.parsed(dir, "state", parse_port_state).unwrap_or_default();
    p.phys_state = r
        .parsed(dir, "phys_state", parse_phys_state)
        .unwrap_or_default();
    p.link_layer = r
        .parsed(dir, "link_layer", parse_link_layer)
        .unwrap_or_default();
    p.rate_gbps = r.parsed(dir, "rate", parse_rate_gbps).unwrap_or_default();
    p.lid = r.parsed(dir, "lid", parse_lid).unwrap_or_default();
    p.sm_lid = r.parsed(dir, "sm_lid", parse_lid).unwrap_or_default();

    let gids = dir.join("gids");
    if let Some(g0) = r.parsed(dir, "gids/0", GidValue::parse) {
        p.subnet_prefix = g0.prefix();
        p.port_guid = g0.interface_id();
    }
    // The GID table matters for RoCE (the GID index selects RoCE v1/v2 and the address). On
    // InfiniBand only GID 0 is in use, so only it is read. sysfs has a file for every entry of
    // the table (0..len), so the walk stops at the first missing index.
    let last = if p.link_layer == LinkLayer::Ethernet {
        MAX_GIDS
    } else {
        0
    };
    let table = DirAttrs::open(&gids);
    for i in 0..=last {
        let file = i.to_string();
        let value = match table.read(&file) {
            Ok(Some(v)) => v,
            Ok(None) => break,
            Err(e) => {
                if i != 0 {
                    r.errors
                        .push(format!("{}: cannot read gids/{i}: {e}", r.item));
                }
                continue;
            }
        };
        let Some(g) = GidValue::parse(&value) else {
            if i != 0 {
                r.errors
                    .push(format!("{}: gids/{i}: unparsable value {value:?}", r.item));
            }
            continue;
        };
        if g.is_zero() {
            continue;
        }
        let attrs = dir.join("gid_attrs");
        let gid_type = GidType::from(r.optional(&attrs.join("types"), &file).unwrap_or_default());
        let netdev = if p.link_layer == LinkLayer::Ethernet {
            r.optional(&attrs.join("ndevs"), &file).unwrap_or_default()
        } else {
            String::new()
        };
        p.gids.push(Gid {
            index: i,
            gid: g.text(),
            gid_type,
            netdev,
        });
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate_gbps("400 Gb/sec (4X NDR)"), Some(400.0));
        assert_eq!(parse_rate_gbps("25 Gb/sec (1X EDR)"), Some(25.0));
        assert_eq!(parse_rate_gbps("100 Gb/sec (2X HDR)"), Some(100.0));
        assert_eq!(parse_rate_gbps("2.5 Gb/sec (1X SDR)"), Some(2.5));
        assert_eq!(parse_rate_gbps("200 Gb/sec"), Some(200.0));
        assert_eq!(parse_rate_gbps(""), None);
        assert_eq!(parse_rate_gbps("fast"), None);
        assert_eq!(parse_rate_gbps("400 Mb/sec"), None);
        assert_eq!(parse_rate_gbps("NaN Gb/sec"), None);
        assert_eq!(parse_rate_gbps("-1 Gb/sec"), None);
    }

    #[test]
    fn node_types() {
        assert_eq!(parse_node_type("1: CA\n"), Some(NodeType::Ca));
        assert_eq!(parse_node_type("2: switch"), Some(NodeType::Switch));
        assert_eq!(parse_node_type("4: RNIC"), Some(NodeType::Rnic));
        assert_eq!(parse_node_type("6: usNIC UDP"), Some(NodeType::UsnicUdp));
        assert_eq!(parse_node_type("1: switch"), None);
        assert_eq!(parse_node_type("9: <unknown>"), None);
        assert_eq!(parse_node_type("CA"), None);
        assert_eq!(parse_node_type(""), None);
    }

    #[test]
    fn states() {
        assert_eq!(parse_port_state("4: ACTIVE"), Some(PortState::Active));
        assert_eq!(parse_port_state("1: DOWN"), Some(PortState::Down));
        assert_eq!(
            parse_port_state("5: ACTIVE_DEFER"),
            Some(PortState::ActiveDefer)
        );
        assert_eq!(parse_port_state("4: DOWN"), None);
        assert_eq!(parse_port_state("ACTIVE"), None);
        assert_eq!(parse_port_state("0: NOP"), None);
        // The sysfs number is the code PortInfo carries: both read through one table.
        for code in 1..=5 {
            let st = PortState::from_iba(code);
            let name = st.kernel_name().expect("a known state");
            assert_eq!(parse_port_state(&format!("{code}: {name}")), Some(st));
        }
        for (code, name) in [(5, "LinkUp"), (3, "Disabled"), (7, "Phy Test")] {
            assert_eq!(
                parse_phys_state(&format!("{code}: {name}")),
                Some(PhysState::from_iba(code))
            );
        }
        assert_eq!(parse_phys_state("5: LinkUp"), Some(PhysState::LinkUp));
        assert_eq!(parse_phys_state("3: Disabled"), Some(PhysState::Disabled));
        assert_eq!(parse_phys_state("7: Phy Test"), Some(PhysState::PhyTest));
        assert_eq!(
            parse_phys_state("9: Future"),
            Some(PhysState::Other("Future".into()))
        );
        assert_eq!(parse_phys_state("x: LinkUp"), None);
        assert_eq!(parse_phys_state("5:"), None);
        assert_eq!(parse_link_layer("InfiniBand"), Some(LinkLayer::Infiniband));
        assert_eq!(parse_link_layer("Ethernet"), Some(LinkLayer::Ethernet));
        assert_eq!(parse_link_layer("ethernet"), None);
    }

    #[test]
    fn lids_and_guids() {
        assert_eq!(parse_lid("0x1"), Some(1));
        assert_eq!(parse_lid("0x1b"), Some(0x1b));
        assert_eq!(parse_lid("27"), None);
        assert_eq!(parse_lid("0x"), None);
        assert_eq!(parse_lid("0x123456789"), None);
        assert_eq!(
            parse_guid("0C42:a103:0065:4d2e").as_deref(),
            Some("0c42:a103:0065:4d2e")
        );
        assert_eq!(parse_guid("0c42:a103:0065"), None);
        assert_eq!(parse_guid("0c42:a103:0065:4d2e:0000"), None);
        assert_eq!(parse_guid("0c42:a13:0065:4d2e"), None);
    }

    #[test]
    fn gids() {
        let g = GidValue::parse("fe80:0000:0000:0000:0c42:a103:0065:4d2e").unwrap();
        assert_eq!(g.prefix(), "fe80:0000:0000:0000");
        assert_eq!(g.interface_id(), "0c42:a103:0065:4d2e");
        assert!(!g.is_zero() && !g.is_ipv4_mapped());
        let v4 = GidValue::parse("0000:0000:0000:0000:0000:ffff:0a00:0001").unwrap();
        assert!(v4.is_ipv4_mapped());
        assert!(
            GidValue::parse("0000:0000:0000:0000:0000:0000:0000:0000")
                .unwrap()
                .is_zero()
        );
        assert_eq!(GidValue::parse("fe80::1"), None);
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["mlx5_10", "mlx5_2", "mlx5_bond_0", "mlx5_1"];
        v.sort_by_key(|a| natural_key(a));
        assert_eq!(v, vec!["mlx5_1", "mlx5_2", "mlx5_10", "mlx5_bond_0"]);
    }

    #[test]
    fn no_class_dir_is_empty_and_ok() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysfsRoot::new(dir.path());
        let r = probe(&root);
        assert!(r.nics.is_empty() && r.errors.is_empty() && r.note.is_none());
        assert!(r.status().ok);
        std::fs::create_dir_all(dir.path().join("module/mlx5_core")).unwrap();
        let r = probe(&root);
        let s = r.status();
        assert!(s.ok);
        assert!(s.error.contains("mlx5_core"), "{}", s.error);
        // As on an H200 machine: the class directory exists but is empty.
        std::fs::create_dir_all(dir.path().join("class/infiniband")).unwrap();
        std::fs::create_dir_all(dir.path().join("module/ib_core")).unwrap();
        let r = probe(&root);
        assert!(r.nics.is_empty() && r.errors.is_empty());
        assert_eq!(
            r.status().error,
            "no RDMA devices, although kernel modules mlx5_core, ib_core are loaded"
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in any::<String>()) {
            let _ = parse_rate_gbps(&s);
            let _ = parse_port_state(&s);
            let _ = parse_phys_state(&s);
            let _ = parse_link_layer(&s);
            let _ = parse_lid(&s);
            let _ = parse_guid(&s);
            let _ = GidValue::parse(&s).map(|g| (g.text(), g.prefix(), g.is_ipv4_mapped()));
            let _ = crate::model::PciAddress::parse(&s);
            let _ = crate::probe::pci::parse_cpulist(&s);
        }

        #[test]
        fn structured_inputs_never_panic(
            s in "[0-9a-fA-Fx:. ,/()-]{0,64}",
        ) {
            let _ = parse_rate_gbps(&s);
            let _ = parse_lid(&s);
            let _ = parse_guid(&s);
            let _ = GidValue::parse(&s);
            let _ = crate::model::PciAddress::parse(&s);
            let _ = crate::probe::pci::parse_cpulist(&s);
        }

        #[test]
        fn guid_round_trip(words in any::<[u16; 4]>()) {
            let s = format!("{:04x}:{:04x}:{:04x}:{:04x}", words[0], words[1], words[2], words[3]);
            prop_assert_eq!(parse_guid(&s), Some(s.clone()));
        }

        #[test]
        fn rate_round_trip(v in 0u32..100_000) {
            prop_assert_eq!(parse_rate_gbps(&format!("{v} Gb/sec (4X NDR)")), Some(f64::from(v)));
        }
    }
}
