//! The libibumad edge: directed-route SMPs sent and received through `/dev/infiniband/umad*`
//! (the `umad` feature; links `-libumad`).
//!
//! Only the few functions needed are declared, by hand, from `<infiniband/umad.h>` of rdma-core.
//! Every call is bounded: a send has a timeout and the receive waits at most that long, per
//! attempt, for the given number of retries. Under the ibsim simulator the same calls are
//! answered by `libumad2sim.so` (`LD_PRELOAD`).
#![allow(unsafe_code)]

use std::{
    ffi::{CString, c_char, c_int, c_long, c_void},
    time::Instant,
};

use super::{
    SmpChannel, SmpError, SmpOpener,
    mad::{self, Attribute, DATA_SIZE, MAD_SIZE},
};

/// `UMAD_CA_NAME_LEN`.
const CA_NAME_LEN: usize = 20;
/// `UMAD_MAX_DEVICES`.
const MAX_DEVICES: usize = 32;
/// `ETIMEDOUT`.
const ETIMEDOUT: c_int = 110;
/// `EAGAIN`.
const EAGAIN: c_int = 11;

#[link(name = "ibumad")]
unsafe extern "C" {
    fn umad_init() -> c_int;
    fn umad_get_cas_names(cas: *mut [c_char; CA_NAME_LEN], max: c_int) -> c_int;
    fn umad_open_port(ca_name: *const c_char, portnum: c_int) -> c_int;
    fn umad_close_port(portid: c_int) -> c_int;
    fn umad_register(
        portid: c_int,
        mgmt_class: c_int,
        mgmt_version: c_int,
        rmpp_version: u8,
        method_mask: *mut c_long,
    ) -> c_int;
    fn umad_unregister(portid: c_int, agentid: c_int) -> c_int;
    fn umad_size() -> c_int;
    fn umad_get_mad(umad: *mut c_void) -> *mut c_void;
    fn umad_set_addr(umad: *mut c_void, dlid: c_int, dqp: c_int, sl: c_int, qkey: c_int) -> c_int;
    fn umad_send(
        portid: c_int,
        agentid: c_int,
        umad: *mut c_void,
        length: c_int,
        timeout_ms: c_int,
        retries: c_int,
    ) -> c_int;
    fn umad_recv(portid: c_int, umad: *mut c_void, length: *mut c_int, timeout_ms: c_int) -> c_int;
    fn umad_status(umad: *mut c_void) -> c_int;
}

fn errno_text(rc: c_int) -> String {
    std::io::Error::from_raw_os_error(rc.saturating_abs()).to_string()
}

/// libibumad, initialised once per opener.
#[derive(Debug)]
pub struct Umad {
    budget: super::QueryBudget,
    init: Result<(), String>,
    next_tid: u64,
    any_port: bool,
}

impl Umad {
    /// Initialises libibumad. A failure is kept and reported by every later call.
    pub fn new(budget: super::QueryBudget) -> Self {
        // SAFETY: umad_init takes no arguments and only sets up library state; it may be called
        // more than once.
        let rc = unsafe { umad_init() };
        let init = if rc < 0 {
            Err(format!("libibumad could not initialise ({rc})"))
        } else {
            Ok(())
        };
        Self {
            budget,
            init,
            // The kernel owns the upper 32 bits of a TID; start the lower ones at the pid so
            // that two processes on one port are told apart.
            next_tid: u64::from(std::process::id()) << 16,
            any_port: false,
        }
    }

    /// When a port has no umad device of its own, sends its SMPs out of the adapter's default
    /// port along `0,<port>` instead. The ibsim simulator presents one umad port per adapter
    /// and routes by the path; the `only` mode, made for it, sets this.
    pub fn any_port(mut self, yes: bool) -> Self {
        self.any_port = yes;
        self
    }
}

const EINVAL: c_int = 22;
const ENODEV: c_int = 19;

impl SmpOpener for Umad {
    fn ca_names(&mut self) -> Result<Vec<String>, SmpError> {
        self.init.clone().map_err(SmpError::NoAccess)?;
        let mut names = [[0 as c_char; CA_NAME_LEN]; MAX_DEVICES];
        // SAFETY: `names` holds MAX_DEVICES arrays of CA_NAME_LEN chars, as the function expects
        // for `max` = MAX_DEVICES; it writes NUL-terminated names into at most that many.
        let n = unsafe { umad_get_cas_names(names.as_mut_ptr(), MAX_DEVICES as c_int) };
        if n < 0 {
            return Err(SmpError::NoAccess(format!(
                "listing InfiniBand adapters failed: {}",
                errno_text(n)
            )));
        }
        let n = usize::try_from(n).unwrap_or(0).min(MAX_DEVICES);
        Ok(names[..n]
            .iter()
            .map(|raw| {
                let bytes: Vec<u8> = raw
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .collect())
    }

    fn open(&mut self, ca: &str, port: u32) -> Result<Box<dyn SmpChannel + '_>, SmpError> {
        self.init.clone().map_err(SmpError::NoAccess)?;
        let name = CString::new(ca)
            .map_err(|_| SmpError::Io(format!("adapter name {ca:?} has a NUL byte")))?;
        let portnum = c_int::try_from(port).map_err(|_| SmpError::Io("port number".into()))?;
        // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
        let mut fd = unsafe { umad_open_port(name.as_ptr(), portnum) };
        if (fd == -EINVAL || fd == -ENODEV) && self.any_port && portnum != 0 {
            // SAFETY: as above; port 0 asks libibumad for the adapter's default port.
            fd = unsafe { umad_open_port(name.as_ptr(), 0) };
        }
        if fd < 0 {
            return Err(SmpError::NoAccess(format!(
                "opening the umad device of {ca} port {port} (/dev/infiniband/umad*): {}",
                errno_text(fd)
            )));
        }
        // SAFETY: `fd` is an open umad port; a null method mask registers a client agent (it
        // receives only replies to its own requests).
        let agent = unsafe {
            umad_register(
                fd,
                c_int::from(mad::CLASS_SM_DIRECTED_ROUTE),
                1,
                0,
                std::ptr::null_mut(),
            )
        };
        if agent < 0 {
            // SAFETY: `fd` is open and closed once here.
            unsafe { umad_close_port(fd) };
            return Err(SmpError::NoAccess(format!(
                "registering for directed-route SMPs on {ca} port {port}: {} (sending SMPs \
                 needs the umad device opened read-write)",
                errno_text(agent)
            )));
        }
        // SAFETY: umad_size has no preconditions.
        let size = usize::try_from(unsafe { umad_size() }).unwrap_or(0);
        Ok(Box::new(Channel {
            fd,
            agent,
            // u64 words keep the buffer 8-byte aligned for the kernel's header.
            buf: vec![0u64; (size + MAD_SIZE).div_ceil(8) + 1],
            budget: self.budget,
            tid: &mut self.next_tid,
            sent: 0,
        }))
    }
}

/// One registered agent on one open umad port.
struct Channel<'a> {
    fd: c_int,
    agent: c_int,
    buf: Vec<u64>,
    budget: super::QueryBudget,
    tid: &'a mut u64,
    sent: u64,
}

impl Channel<'_> {
    fn umad(&mut self) -> *mut c_void {
        self.buf.as_mut_ptr().cast()
    }

    /// The MAD inside the buffer.
    fn mad_bytes(&mut self) -> &mut [u8] {
        let umad = self.umad();
        // SAFETY: `buf` is at least umad_size() + MAD_SIZE bytes, so the MAD that
        // umad_get_mad points to (just past the header) lies inside it, and `self` is borrowed
        // mutably for the slice's life.
        unsafe {
            let p = umad_get_mad(umad).cast::<u8>();
            std::slice::from_raw_parts_mut(p, MAD_SIZE)
        }
    }

    fn once(
        &mut self,
        request: &[u8; MAD_SIZE],
        tid: u64,
        attribute: Attribute,
    ) -> Result<Option<[u8; DATA_SIZE]>, SmpError> {
        let timeout = self.budget.timeout;
        let ms = c_int::try_from(timeout.as_millis())
            .unwrap_or(c_int::MAX)
            .max(1);
        self.buf.fill(0);
        self.mad_bytes().copy_from_slice(request);
        let umad = self.umad();
        // SAFETY: `umad` is this channel's buffer, big enough for a header and a MAD.
        unsafe { umad_set_addr(umad, i32::from(mad::PERMISSIVE_LID), 0, 0, 0) };
        self.sent += 1;
        // SAFETY: the buffer holds a complete request of MAD_SIZE bytes after the header; fd
        // and agent are open and registered. Retries are ours (below), not the kernel's.
        let rc = unsafe { umad_send(self.fd, self.agent, umad, MAD_SIZE as c_int, ms, 0) };
        if rc < 0 {
            return Err(SmpError::Io(format!("umad_send: {}", errno_text(rc))));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let wait = c_int::try_from(left.as_millis())
                .unwrap_or(c_int::MAX)
                .max(1);
            let mut len = MAD_SIZE as c_int;
            self.buf.fill(0);
            let umad = self.umad();
            // SAFETY: the buffer has room for the header and `len` bytes of MAD; the call
            // waits at most `wait` ms.
            let rc = unsafe { umad_recv(self.fd, umad, &mut len, wait) };
            if rc < 0 {
                if rc == -ETIMEDOUT || rc == -EAGAIN {
                    return Ok(None);
                }
                return Err(SmpError::Io(format!("umad_recv: {}", errno_text(rc))));
            }
            // SAFETY: the buffer holds the header umad_recv just wrote.
            let status = unsafe { umad_status(umad) };
            let bytes = self.mad_bytes().to_vec();
            if mad::tid(&bytes).map(|t| t & 0xffff_ffff) != Some(tid & 0xffff_ffff) {
                continue; // a late reply to an earlier attempt
            }
            if status == ETIMEDOUT {
                return Ok(None);
            }
            if status != 0 {
                return Err(SmpError::Io(format!(
                    "receive status {}",
                    errno_text(status)
                )));
            }
            return mad::decode_reply(&bytes, attribute)
                .map(Some)
                .map_err(SmpError::Mad);
        }
    }
}

impl SmpChannel for Channel<'_> {
    fn get(
        &mut self,
        path: &[u8],
        attribute: Attribute,
        modifier: u32,
    ) -> Result<[u8; DATA_SIZE], SmpError> {
        let attempts = self.budget.retries + 1;
        for _ in 0..attempts {
            *self.tid = self.tid.wrapping_add(1) & 0xffff_ffff;
            let tid = *self.tid;
            let request = mad::encode_get(path, attribute, modifier, tid).map_err(SmpError::Mad)?;
            if let Some(data) = self.once(&request, tid, attribute)? {
                return Ok(data);
            }
        }
        Err(SmpError::Timeout {
            attempts,
            timeout: self.budget.timeout,
        })
    }

    fn sent(&self) -> u64 {
        self.sent
    }
}

impl Drop for Channel<'_> {
    fn drop(&mut self) {
        // SAFETY: the agent and port were opened by `Umad::open` and are released once.
        unsafe {
            umad_unregister(self.fd, self.agent);
            umad_close_port(self.fd);
        }
    }
}
