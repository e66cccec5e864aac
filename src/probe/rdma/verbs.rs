//! ibverbs check of every RDMA device (Cargo feature `verbs`).
//!
//! sysfs says a device exists; ibverbs says whether this process can use it (in a container:
//! `/dev/infiniband` is mounted and a provider library loads). The library is reached through
//! the small [`Verbs`] trait so the cross-check ([`check`]) is tested without hardware; the FFI
//! implementation ([`Ibverbs`]) is the only `unsafe` code here.

#![allow(unsafe_code)]

use std::ffi::CStr;

use crate::model::{LinkLayer, Nic, PortState, Source, SourceStatus, VerbsCheck};

/// One port as ibverbs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerbsPort {
    /// Port number (from 1).
    pub port: u32,
    /// Logical port state, as `ibv_query_port` reports it.
    pub state: PortState,
    /// Link layer, as `ibv_query_port` reports it.
    pub link_layer: LinkLayer,
}

/// One device as ibverbs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerbsDevice {
    /// Device name (`mlx5_0`).
    pub name: String,
    /// Its ports, or why the device could not be opened or queried.
    pub ports: Result<Vec<VerbsPort>, String>,
}

/// Access to the ibverbs library.
pub trait Verbs {
    /// Every device ibverbs lists, opened and queried. An empty list when ibverbs lists none
    /// (including a kernel without uverbs); `Err` only when listing itself failed.
    fn devices(&self) -> Result<Vec<VerbsDevice>, String>;
}

/// Checks every NIC against what `verbs` reports, filling [`Nic::verbs`], and returns the
/// `verbs` source status.
pub fn check(verbs: &dyn Verbs, nics: &mut [Nic]) -> SourceStatus {
    let devices = match verbs.devices() {
        Ok(d) => d,
        Err(e) => {
            for n in nics.iter_mut() {
                n.verbs = Some(VerbsCheck {
                    usable: false,
                    error: format!("ibverbs failed: {e}"),
                    consistent_with_sysfs: false,
                });
            }
            return SourceStatus::failed(Source::Verbs, e);
        }
    };
    if devices.is_empty() && !nics.is_empty() {
        let why = "ibverbs lists no devices (no uverbs in the kernel, no /dev/infiniband in this \
                   container, or no provider library)";
        for n in nics.iter_mut() {
            n.verbs = Some(VerbsCheck {
                usable: false,
                error: why.into(),
                consistent_with_sysfs: false,
            });
        }
        let names: Vec<&str> = nics.iter().map(|n| n.name.as_str()).collect();
        return SourceStatus::failed(
            Source::Verbs,
            format!("{why}; not usable here: {}", names.join(", ")),
        );
    }
    let mut problems = Vec::new();
    for n in nics.iter_mut() {
        let v = match devices.iter().find(|d| d.name == n.name) {
            None => VerbsCheck {
                usable: false,
                error: "ibverbs does not list this device".into(),
                consistent_with_sysfs: false,
            },
            Some(VerbsDevice { ports: Err(e), .. }) => VerbsCheck {
                usable: false,
                error: e.clone(),
                consistent_with_sysfs: false,
            },
            Some(VerbsDevice {
                ports: Ok(ports), ..
            }) => {
                let diffs = compare(n, ports);
                VerbsCheck {
                    usable: true,
                    consistent_with_sysfs: diffs.is_empty(),
                    error: diffs.join(", "),
                }
            }
        };
        if !v.usable || !v.consistent_with_sysfs {
            problems.push(format!("{}: {}", n.name, v.error));
        }
        n.verbs = Some(v);
    }
    if problems.is_empty() {
        SourceStatus::ok(Source::Verbs)
    } else {
        SourceStatus::failed(Source::Verbs, problems.join("; "))
    }
}

/// Differences between the sysfs ports of `nic` and the verbs ports.
fn compare(nic: &Nic, ports: &[VerbsPort]) -> Vec<String> {
    let mut diffs = Vec::new();
    for p in &nic.ports {
        match ports.iter().find(|v| v.port == p.port) {
            None => diffs.push(format!("port {} unknown to ibverbs", p.port)),
            Some(v) => {
                if v.state != p.state {
                    diffs.push(format!(
                        "port {} state: sysfs {:?}, ibverbs {:?}",
                        p.port, p.state, v.state
                    ));
                }
                if v.link_layer != p.link_layer {
                    diffs.push(format!(
                        "port {} link layer: sysfs {:?}, ibverbs {:?}",
                        p.port, p.link_layer, v.link_layer
                    ));
                }
            }
        }
    }
    for v in ports {
        if !nic.ports.iter().any(|p| p.port == v.port) {
            diffs.push(format!("port {} not in sysfs", v.port));
        }
    }
    diffs
}

/// The system's libibverbs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ibverbs;

fn port_state(s: u32) -> PortState {
    use rdma_sys::ibv_port_state as st;
    match s {
        st::IBV_PORT_DOWN => PortState::Down,
        st::IBV_PORT_INIT => PortState::Init,
        st::IBV_PORT_ARMED => PortState::Armed,
        st::IBV_PORT_ACTIVE => PortState::Active,
        st::IBV_PORT_ACTIVE_DEFER => PortState::ActiveDefer,
        _ => PortState::Unknown,
    }
}

fn link_layer(l: u8) -> LinkLayer {
    // IBV_LINK_LAYER_INFINIBAND = 1, IBV_LINK_LAYER_ETHERNET = 2 (an anonymous enum in
    // verbs.h that the bindings do not name).
    match l {
        1 => LinkLayer::Infiniband,
        2 => LinkLayer::Ethernet,
        _ => LinkLayer::Unknown,
    }
}

impl Ibverbs {
    /// Opens and queries one device.
    ///
    /// # Safety
    /// `dev` must be an entry of a live list from `ibv_get_device_list`.
    unsafe fn query(dev: *mut rdma_sys::ibv_device) -> Result<Vec<VerbsPort>, String> {
        // SAFETY: `dev` is a valid device from the live list (caller's contract).
        let ctx = unsafe { rdma_sys::ibv_open_device(dev) };
        if ctx.is_null() {
            return Err(format!(
                "ibv_open_device failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: zeroed plain-old-data struct, filled by the library.
        let mut attr: rdma_sys::ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: `ctx` is an open context and `attr` a writable struct of the right type.
        let rc = unsafe { rdma_sys::ibv_query_device(ctx, &mut attr) };
        let result = if rc != 0 {
            Err(format!(
                "ibv_query_device failed: {}",
                std::io::Error::from_raw_os_error(rc)
            ))
        } else {
            let mut ports = Vec::new();
            let mut err = None;
            for port in 1..=attr.phys_port_cnt {
                // SAFETY: zeroed plain-old-data struct, filled by the library.
                let mut pa: rdma_sys::ibv_port_attr = unsafe { std::mem::zeroed() };
                // SAFETY: `ctx` is open, `port` is within 1..=phys_port_cnt, and `pa` is the
                // full-size struct the extended query expects.
                let rc = unsafe { rdma_sys::___ibv_query_port(ctx, port, &mut pa) };
                if rc != 0 {
                    err = Some(format!(
                        "ibv_query_port({port}) failed: {}",
                        std::io::Error::from_raw_os_error(rc)
                    ));
                    break;
                }
                ports.push(VerbsPort {
                    port: u32::from(port),
                    state: port_state(pa.state),
                    link_layer: link_layer(pa.link_layer),
                });
            }
            err.map_or(Ok(ports), Err)
        };
        // SAFETY: `ctx` was opened above and is closed once.
        unsafe { rdma_sys::ibv_close_device(ctx) };
        result
    }
}

impl Verbs for Ibverbs {
    fn devices(&self) -> Result<Vec<VerbsDevice>, String> {
        let mut n: std::os::raw::c_int = 0;
        // SAFETY: `n` is a valid out-pointer; the list is freed below.
        let list = unsafe { rdma_sys::ibv_get_device_list(&mut n) };
        if list.is_null() {
            // NULL with ENOSYS: the kernel has no uverbs. Any NULL means nothing is usable here;
            // report zero devices and let the cross-check say so per NIC.
            return Ok(Vec::new());
        }
        let count = usize::try_from(n).unwrap_or(0);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            // SAFETY: the list holds `n` valid entries.
            let dev = unsafe { *list.add(i) };
            if dev.is_null() {
                break;
            }
            // SAFETY: `dev` is valid; the name is a NUL-terminated string owned by the list.
            let name_ptr = unsafe { rdma_sys::ibv_get_device_name(dev) };
            let name = if name_ptr.is_null() {
                String::new()
            } else {
                // SAFETY: non-null, NUL-terminated, alive while the list is.
                unsafe { CStr::from_ptr(name_ptr) }
                    .to_string_lossy()
                    .into_owned()
            };
            // SAFETY: `dev` belongs to the live list.
            let ports = unsafe { Self::query(dev) };
            out.push(VerbsDevice { name, ports });
        }
        // SAFETY: `list` came from ibv_get_device_list and is freed once.
        unsafe { rdma_sys::ibv_free_device_list(list) };
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NicPort;

    struct Fake(Result<Vec<VerbsDevice>, String>);

    impl Verbs for Fake {
        fn devices(&self) -> Result<Vec<VerbsDevice>, String> {
            self.0.clone()
        }
    }

    fn nic(name: &str, state: PortState, ll: LinkLayer) -> Nic {
        Nic {
            name: name.into(),
            ports: vec![NicPort {
                port: 1,
                state,
                link_layer: ll,
                ..NicPort::default()
            }],
            ..Nic::default()
        }
    }

    fn dev(name: &str, state: PortState, ll: LinkLayer) -> VerbsDevice {
        VerbsDevice {
            name: name.into(),
            ports: Ok(vec![VerbsPort {
                port: 1,
                state,
                link_layer: ll,
            }]),
        }
    }

    #[test]
    fn consistent_device_is_usable() {
        let mut nics = vec![nic("mlx5_0", PortState::Active, LinkLayer::Infiniband)];
        let s = check(
            &Fake(Ok(vec![dev(
                "mlx5_0",
                PortState::Active,
                LinkLayer::Infiniband,
            )])),
            &mut nics,
        );
        assert!(s.ok, "{s:?}");
        let v = nics[0].verbs.clone().unwrap();
        assert!(v.usable && v.consistent_with_sysfs && v.error.is_empty());
    }

    #[test]
    fn disagreement_is_reported() {
        let mut nics = vec![nic("mlx5_0", PortState::Active, LinkLayer::Infiniband)];
        let s = check(
            &Fake(Ok(vec![dev(
                "mlx5_0",
                PortState::Down,
                LinkLayer::Ethernet,
            )])),
            &mut nics,
        );
        assert!(!s.ok);
        let v = nics[0].verbs.clone().unwrap();
        assert!(v.usable && !v.consistent_with_sysfs);
        assert!(
            v.error.contains("state") && v.error.contains("link layer"),
            "{}",
            v.error
        );
    }

    #[test]
    fn missing_and_unopenable_devices() {
        let mut nics = vec![
            nic("mlx5_0", PortState::Active, LinkLayer::Infiniband),
            nic("mlx5_1", PortState::Active, LinkLayer::Infiniband),
        ];
        let s = check(
            &Fake(Ok(vec![VerbsDevice {
                name: "mlx5_1".into(),
                ports: Err("ibv_open_device failed: Permission denied".into()),
            }])),
            &mut nics,
        );
        assert!(!s.ok);
        assert!(s.error.contains("mlx5_0") && s.error.contains("Permission denied"));
        assert!(!nics[0].verbs.as_ref().unwrap().usable);
        assert!(!nics[1].verbs.as_ref().unwrap().usable);
    }

    #[test]
    fn zero_devices_and_zero_nics_is_ok() {
        let s = check(&Fake(Ok(vec![])), &mut []);
        assert!(s.ok);
    }

    #[test]
    fn zero_devices_with_sysfs_nics_fails_once() {
        let mut nics = vec![
            nic("mlx5_0", PortState::Active, LinkLayer::Infiniband),
            nic("mlx5_1", PortState::Active, LinkLayer::Infiniband),
        ];
        let s = check(&Fake(Ok(vec![])), &mut nics);
        assert!(!s.ok);
        assert_eq!(s.error.matches("ibverbs lists no devices").count(), 1);
        assert!(s.error.ends_with("mlx5_0, mlx5_1"), "{}", s.error);
        assert!(nics.iter().all(|n| !n.verbs.as_ref().unwrap().usable));
    }

    #[test]
    fn listing_failure_marks_every_nic() {
        let mut nics = vec![nic("mlx5_0", PortState::Active, LinkLayer::Infiniband)];
        let s = check(&Fake(Err("boom".into())), &mut nics);
        assert!(!s.ok && s.error == "boom");
        assert!(nics[0].verbs.as_ref().unwrap().error.contains("boom"));
    }

    #[test]
    fn live_library_lists_what_sysfs_has() {
        // ibverbs lists a device for each `class/infiniband_verbs/uverbsN` (its `ibdev` names
        // the device); a machine without uverbs lists none, which is not an error. A wrong
        // binding (bad struct layout, bad name pointer) lists other names or a different count.
        let mut want: Vec<String> = std::fs::read_dir("/sys/class/infiniband_verbs")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("uverbs"))
            .filter_map(|e| std::fs::read_to_string(e.path().join("ibdev")).ok())
            .map(|s| s.trim().to_string())
            .collect();
        want.sort();
        let mut got: Vec<String> = Ibverbs
            .devices()
            .expect("listing never fails")
            .into_iter()
            .map(|d| d.name)
            .collect();
        got.sort();
        eprintln!("ibverbs devices on this machine: {got:?}");
        assert_eq!(got, want);
    }
}
