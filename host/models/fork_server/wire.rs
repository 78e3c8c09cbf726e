//! Messages between the host and its forker: one postcard-encoded message per packet of a
//! `SOCK_SEQPACKET` socket pair (so boundaries survive), with a connection's descriptor passed
//! alongside `Serve` (a listening socket alongside `Listen`) as `SCM_RIGHTS`. Both ends are the same binary, so a compact encoding
//! without field names is safe, and it keeps the per-connection messages cheap to read.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use porthost_services::Limits;
use porthost_services::meter::Totals;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::gate::{Refusal, Rules};

/// Large enough for a port's options; a bigger message is refused rather than cut.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// What a child needs to serve one connection of a port: the service and its options (built
/// once per port in the forker, inherited by every child) and the port's limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSpec {
    pub port: u16,
    pub service: String,
    /// Sent as TOML text: postcard, having no field names, cannot carry a free-form table.
    #[serde(with = "toml_text")]
    pub options: toml::Table,
    pub base_dir: PathBuf,
    pub limits: Limits,
    /// For a `prefork` port: the workers the fork server forks for it at once and keeps.
    pub pool: Option<PoolSpec>,
}

/// A prefork port's pool: how many workers, and after how many connections one is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub workers: usize,
    pub recycle_after: Option<u64>,
}

/// Whom a child's connection is with, as its child (and an `exec` program's UCSPI-TCP
/// variables) see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// The client: the one a PROXY header named, if the port takes them, not necessarily the
    /// socket's peer.
    pub peer: std::net::SocketAddr,
    /// The address the client connected to, when a PROXY header named it; otherwise the
    /// socket's own address stands, which the child reads itself.
    pub local: Option<std::net::SocketAddr>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ToForker {
    /// Build this port's service, to serve its connections from now on.
    Port { port_id: u64, spec: ChildSpec },
    /// Fork a child for the connection whose descriptor comes with this message (and, for an
    /// `exec` port, the write end of the pipe its program's stderr goes to, second).
    Serve {
        conn: u64,
        port_id: u64,
        client: Client,
    },
    /// Send a signal to a connection's child (SIGTERM, then SIGKILL, when draining).
    Signal { conn: u64, signal: i32 },
    /// The port is gone; its children may still be running.
    Forget { port_id: u64 },
    /// Accept the port's clients on the listening socket that comes with this message, and
    /// admit them by these rules: the fork server accepts, decides, forks and reports, as the
    /// textbook's forking server does, and the host only hears of it.
    Listen { port_id: u64, rules: Rules },
    /// Stop accepting: accept and serve the clients already queued (as a port that stops
    /// does), close the socket, then say [`FromForker::Unlistened`].
    Unlisten { port_id: u64 },
    /// The grace period is over for a connection the fork server accepted: write `reply` to
    /// its client (the reason it is cut off), shut the socket down, and SIGTERM its child.
    Close { conn: u64, reply: Vec<u8> },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum FromForker {
    /// A child was forked for the connection.
    Forked { conn: u64, pid: i32 },
    /// What the connection's child has served so far (sent by the child itself, about once a
    /// second and when it is done, so a child that is killed loses at most its last second).
    Served { conn: u64, totals: Totals },
    /// The child was reaped; `status` says how it ended, `clean` when it exited with 0.
    Exited {
        conn: u64,
        pid: i32,
        /// `("code", "0")` or `("signal", "SIGKILL")`.
        how: (String, String),
        status: String,
        clean: bool,
    },
    /// No child could be started for the connection.
    Failed { conn: u64, reason: String },
    /// The fork server accepted and admitted a client of a listening port and forked `pid`
    /// to serve it; `conn` is the connection's id from now on. For an `exec` port, the read
    /// end of the program's stderr pipe comes with it.
    Accepted {
        port_id: u64,
        conn: u64,
        pid: i32,
        peer: std::net::SocketAddr,
    },
    /// The fork server turned a client of a listening port away (and wrote its line).
    Refused {
        port_id: u64,
        peer: std::net::SocketAddr,
        refusal: Refusal,
    },
    /// The port's socket is closed in the fork server: it accepts no one else there.
    Unlistened { port_id: u64 },
    /// A prefork worker has finished serving a connection (`pid`: the worker), or died while
    /// serving it (`clean: false`, `status` says how).
    Finished {
        conn: u64,
        pid: i32,
        status: String,
        clean: bool,
    },
    /// A prefork port's worker started or ended.
    Worker {
        port_id: u64,
        pid: i32,
        change: WorkerChange,
    },
    /// Several reports at once: what one turn of the fork server's loop did.
    Batch(Vec<FromForker>),
}

/// What happened to a prefork worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerChange {
    Started,
    /// Reaped after serving `served` connections, `how` as in [`FromForker::Exited`]; the
    /// fork server forks another in its place while the port is there.
    Ended {
        how: (String, String),
        status: String,
        clean: bool,
        served: u64,
    },
}

/// Sends one message, with the descriptors to pass (at most 4). On a non-blocking socket a full
/// buffer is a `WouldBlock` error for the caller to wait on.
pub fn send<T: Serialize>(
    fd: BorrowedFd<'_>,
    message: &T,
    pass: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    let bytes = postcard::to_allocvec(message).map_err(std::io::Error::other)?;
    let iov = [IoSlice::new(&bytes)];
    let fds: Vec<RawFd> = pass.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    sendmsg::<()>(fd.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// Receives one message and the descriptors that came with it; `None` at end of stream.
#[allow(unsafe_code)]
pub fn recv<T: DeserializeOwned>(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> std::io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut passed = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel has just installed these descriptors in this process for this
            // message; nothing else knows or owns them.
            passed.extend(
                fds.into_iter()
                    .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) }),
            );
        }
    }
    let (bytes, truncated) = (msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC));
    if bytes == 0 {
        return Ok(None);
    }
    if truncated {
        return Err(std::io::Error::other(
            "message larger than the packet buffer",
        ));
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        // Descriptors the kernel could not install here (this process is at its limit) are
        // gone: the message without them would be taken for something else.
        return Err(std::io::Error::other(
            "descriptors passed with the message were dropped (too many open files?)",
        ));
    }
    let message = postcard::from_bytes(&buf[..bytes]).map_err(std::io::Error::other)?;
    Ok(Some((message, passed)))
}

/// A TOML table as its text, for [`ChildSpec::options`].
mod toml_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};

    pub fn serialize<S: Serializer>(table: &toml::Table, to: S) -> Result<S::Ok, S::Error> {
        to.serialize_str(&toml::to_string(table).map_err(S::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<toml::Table, D::Error> {
        let text = String::deserialize(from)?;
        toml::from_str(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use std::os::fd::AsFd;

    #[test]
    fn messages_and_descriptors_cross_a_socket_pair() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let spec = ChildSpec {
            port: 7003,
            service: "palindrome-v1".into(),
            options: toml::toml! { strict = true },
            base_dir: "config".into(),
            limits: Limits {
                max_line_bytes: 100,
                idle_timeout: Some(std::time::Duration::from_secs(7)),
            },
            pool: Some(PoolSpec {
                workers: 3,
                recycle_after: None,
            }),
        };
        send(a.as_fd(), &ToForker::Port { port_id: 1, spec }, &[]).unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        send(
            a.as_fd(),
            &ToForker::Serve {
                conn: 9,
                port_id: 1,
                client: Client {
                    peer: "10.1.2.3:4".parse().unwrap(),
                    local: Some("192.0.2.1:80".parse().unwrap()),
                },
            },
            &[file.as_fd()],
        )
        .unwrap();
        drop(a);
        let mut buf = vec![0; MAX_MESSAGE];
        let (first, fds) = recv::<ToForker>(b.as_fd(), &mut buf).unwrap().unwrap();
        assert!(
            matches!(first, ToForker::Port { port_id: 1, spec } if spec.options["strict"].as_bool() == Some(true) && spec.limits.idle_timeout == Some(std::time::Duration::from_secs(7)) && spec.pool.is_some_and(|p| p.workers == 3))
        );
        assert!(fds.is_empty());
        let (second, fds) = recv::<ToForker>(b.as_fd(), &mut buf).unwrap().unwrap();
        assert!(matches!(
            second,
            ToForker::Serve {
                conn: 9,
                port_id: 1,
                client: Client { local: Some(local), .. },
            } if local == "192.0.2.1:80".parse().unwrap()
        ));
        assert_eq!(fds.len(), 1);
        assert!(recv::<ToForker>(b.as_fd(), &mut buf).unwrap().is_none());
    }

    #[test]
    fn the_forkers_reports_cross_intact() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let totals = Totals {
            lines: 3,
            replies: 2,
            ..Totals::default()
        };
        send(a.as_fd(), &FromForker::Served { conn: 5, totals }, &[]).unwrap();
        let exited = FromForker::Exited {
            conn: 5,
            pid: 4321,
            how: ("signal".into(), "SIGKILL".into()),
            status: "killed by SIGKILL".into(),
            clean: false,
        };
        send(a.as_fd(), &exited, &[]).unwrap();
        let mut buf = vec![0; MAX_MESSAGE];
        let (served, _) = recv::<FromForker>(b.as_fd(), &mut buf).unwrap().unwrap();
        assert!(matches!(served, FromForker::Served { conn: 5, totals: t } if t == totals));
        let (ended, _) = recv::<FromForker>(b.as_fd(), &mut buf).unwrap().unwrap();
        assert!(matches!(
            ended,
            FromForker::Exited { conn: 5, pid: 4321, ref how, clean: false, .. } if how.1 == "SIGKILL"
        ));
    }
}
