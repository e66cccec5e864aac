//! The raw AF_PACKET socket that hears LLDP frames on one netdev: the I/O edge of
//! [`super`]. Needs CAP_NET_RAW in the user namespace that owns the network namespace (see
//! SECURITY.md).
//!
//! The socket is opened with protocol 0 (it hears nothing), joined to the three LLDP multicast
//! groups on the netdev (a NIC's filter drops them otherwise), and only then bound to the netdev
//! with ethertype 0x88cc, so no frame of another netdev or protocol is ever queued on it, and
//! none this host sends (a local lldpd's own LLDPDUs). It is non-blocking and registered
//! with tokio, so waiting for a frame parks no thread.
//!
//! `rustix` creates the socket, resolves the netdev and reads; the two calls it does not wrap
//! (`setsockopt(SOL_PACKET, ...)` with a `packet_mreq`, and `bind` with a `sockaddr_ll`) go
//! through `libc`, each with its `// SAFETY:` note.
#![allow(unsafe_code)]

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
    time::SystemTime,
};

use rustix::net::{AddressFamily, SocketFlags, SocketType};
use tokio::io::{Interest, unix::AsyncFd};

use super::{
    cache::{Failure, FailureKind},
    frame::{ETHERTYPE_LLDP, LLDP_MULTICAST, LldpFrame, parse_frame},
};

/// Receive buffer: larger than any LLDP frame (an LLDPDU fits one untagged 1500-octet frame).
const FRAME_BUF: usize = 9216;

/// Why a netdev could not be listened on.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// `socket(AF_PACKET, SOCK_RAW)` was refused: the process lacks CAP_NET_RAW.
    #[error(
        "listening for LLDP on {netdev} needs CAP_NET_RAW (a raw AF_PACKET socket); the process does not have it"
    )]
    PermissionDenied {
        /// The network interface (netdev) name.
        netdev: String,
        /// The refusal.
        #[source]
        source: io::Error,
    },
    /// No netdev of that name in this network namespace.
    #[error("no network interface {netdev:?} in this network namespace")]
    NoSuchNetdev {
        /// The network interface (netdev) name.
        netdev: String,
        /// The lookup error.
        #[source]
        source: io::Error,
    },
    /// Another socket call failed.
    #[error("{op} on the LLDP socket of {netdev}")]
    Socket {
        /// The network interface (netdev) name.
        netdev: String,
        /// Which call.
        op: &'static str,
        /// Its error.
        #[source]
        source: io::Error,
    },
}

impl CaptureError {
    /// The failure as a status reports it.
    pub fn failure(&self) -> Failure {
        let kind = match self {
            CaptureError::PermissionDenied { .. } => FailureKind::PermissionDenied,
            CaptureError::NoSuchNetdev { .. } => FailureKind::NoSuchNetdev,
            CaptureError::Socket { .. } => FailureKind::Socket,
        };
        Failure {
            kind,
            message: crate::error::chain(self),
        }
    }
}

/// An AF_PACKET socket bound to one netdev that hears only LLDP frames sent to it.
#[derive(Debug)]
pub struct LldpSocket {
    fd: AsyncFd<OwnedFd>,
    netdev: String,
    ifindex: u32,
}

impl LldpSocket {
    /// Opens the socket on `netdev`. Must run inside a tokio runtime with I/O enabled.
    pub fn open(netdev: &str) -> Result<Self, CaptureError> {
        let socket_err = |op, source| CaptureError::Socket {
            netdev: netdev.to_string(),
            op,
            source,
        };
        let fd = rustix::net::socket_with(
            AddressFamily::PACKET,
            SocketType::RAW,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| match e {
            rustix::io::Errno::PERM | rustix::io::Errno::ACCESS => CaptureError::PermissionDenied {
                netdev: netdev.to_string(),
                source: e.into(),
            },
            e => socket_err("socket(AF_PACKET, SOCK_RAW)", e.into()),
        })?;
        let ifindex = rustix::net::netdevice::name_to_index(&fd, netdev).map_err(|e| {
            if e == rustix::io::Errno::NODEV {
                CaptureError::NoSuchNetdev {
                    netdev: netdev.to_string(),
                    source: e.into(),
                }
            } else {
                socket_err("looking up the interface index", e.into())
            }
        })?;
        let ifindex_c = libc::c_int::try_from(ifindex).map_err(|_| {
            socket_err(
                "looking up the interface index",
                io::Error::other(format!("index {ifindex} out of range")),
            )
        })?;
        for group in LLDP_MULTICAST {
            join_multicast(&fd, ifindex_c, group)
                .map_err(|e| socket_err("setsockopt(PACKET_ADD_MEMBERSHIP)", e))?;
        }
        // A socket bound to one ethertype is not given outgoing frames (only ETH_P_ALL sockets
        // are), so a local lldpd's LLDPDUs never reach it; PACKET_IGNORE_OUTGOING (Linux 4.20+)
        // says so explicitly and is not needed where it is missing.
        if let Err(e) = set_ignore_outgoing(&fd) {
            tracing::debug!(netdev, error = %e, "PACKET_IGNORE_OUTGOING is not supported");
        }
        bind_lldp(&fd, ifindex_c).map_err(|e| socket_err("bind(AF_PACKET, ETH_P_LLDP)", e))?;
        // SAFETY: an `OwnedFd` is open until dropped and always returns the same descriptor;
        // the `AsyncFd` owns it, so it stays open for the registration's whole lifetime.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| socket_err("registering with the async runtime", e.into_parts().1))?;
        Ok(Self {
            fd,
            netdev: netdev.to_string(),
            ifindex,
        })
    }

    /// The name of the netdev this socket listens on.
    pub fn netdev(&self) -> &str {
        &self.netdev
    }

    /// The netdev's kernel interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Waits for the next LLDP frame that parses, and returns it with the time it was read.
    /// Frames that do not parse are logged (debug) and skipped. Cancel-safe: dropping the future
    /// loses no frame that was not returned. An error (the netdev went away: `ENETDOWN`) ends the
    /// socket's use.
    pub async fn next_frame(&self) -> Result<(LldpFrame, SystemTime), CaptureError> {
        let mut buf = vec![0u8; FRAME_BUF];
        loop {
            let n = self
                .fd
                .async_io(Interest::READABLE, |fd| {
                    rustix::net::recv(fd, &mut buf[..], rustix::net::RecvFlags::TRUNC)
                        .map(|(_, full_len)| full_len)
                        .map_err(io::Error::from)
                })
                .await
                .map_err(|e| CaptureError::Socket {
                    netdev: self.netdev.clone(),
                    op: "recv",
                    source: e,
                })?;
            let at = SystemTime::now();
            if n > buf.len() {
                tracing::debug!(netdev = %self.netdev, len = n, "skipping an oversized frame");
                continue;
            }
            match parse_frame(&buf[..n]) {
                Ok(f) => return Ok((f, at)),
                Err(e) => {
                    tracing::debug!(netdev = %self.netdev, error = %e, "skipping a frame that is not a valid LLDPDU");
                }
            }
        }
    }
}

/// Joins the netdev's multicast group `group` (`PACKET_MR_MULTICAST`); dropped with the socket.
fn join_multicast(fd: &OwnedFd, ifindex: libc::c_int, group: [u8; 6]) -> io::Result<()> {
    let mut address = [0u8; 8];
    address[..6].copy_from_slice(&group);
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex,
        mr_type: libc::PACKET_MR_MULTICAST as libc::c_ushort,
        mr_alen: 6,
        mr_address: address,
    };
    setsockopt(fd, libc::PACKET_ADD_MEMBERSHIP, &mreq)
}

/// `PACKET_IGNORE_OUTGOING`: frames this host sends are not queued on the socket.
fn set_ignore_outgoing(fd: &OwnedFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    setsockopt(fd, libc::PACKET_IGNORE_OUTGOING, &on)
}

/// `setsockopt(fd, SOL_PACKET, name, value)`.
fn setsockopt<T>(fd: &OwnedFd, name: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is an open socket owned by the caller for the whole call; `value` points to a
    // live, initialised `T` of `len` bytes, which the kernel only reads. Callers pass the C type
    // the option expects (`packet_mreq` for PACKET_ADD_MEMBERSHIP, `int` for
    // PACKET_IGNORE_OUTGOING); a wrong size would be refused with EINVAL, not misread.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            name,
            std::ptr::from_ref(value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Binds the socket to `ifindex` for ethertype 0x88cc.
fn bind_lldp(fd: &OwnedFd, ifindex: libc::c_int) -> io::Result<()> {
    // SAFETY: `sockaddr_ll` is a plain C struct of integers and a byte array, for which all
    // zeroes is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = ETHERTYPE_LLDP.to_be();
    addr.sll_ifindex = ifindex;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fd` is an open AF_PACKET socket owned by the caller for the whole call; `addr` is
    // a live, initialised `sockaddr_ll` of `len` bytes (the address type AF_PACKET expects),
    // which the kernel only reads.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
