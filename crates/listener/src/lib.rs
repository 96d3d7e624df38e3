//! TCP listeners for portshift's servers (iSCSI portals, the iSNS server, admin endpoints).
//!
//! The standard library and tokio listen with a backlog of 128. A burst of connection
//! attempts larger than that (a flood, or hundreds of hosts reconnecting after a restart)
//! overflows the kernel's accept queue while the server is still accepting; the dropped
//! SYNs are retried by the client only after its initial retransmission timeout (1 s on
//! Linux), so a legitimate client arriving during the burst waits a second for nothing.
//! [`BACKLOG`] leaves room for such bursts; the kernel caps it at `net.core.somaxconn`.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Listen backlog of every portshift server socket (capped by `net.core.somaxconn`).
pub const BACKLOG: i32 = 4096;

/// A blocking listener bound to `addr` (address reuse on, backlog [`BACKLOG`]).
pub fn bind_std(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A tokio listener bound to `addr`, as [`bind_std`]; must be called within a runtime.
pub fn bind(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let l = bind_std(addr)?;
    l.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 1,000 handshakes complete against a listener nobody accepts from. With the default
    /// backlog of 128 the 130th SYN is dropped at the full accept queue, and again at each
    /// retransmission, so its connect times out.
    #[test]
    fn a_burst_larger_than_128_is_queued() {
        let l = bind_std("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let mut conns = Vec::new();
        for _ in 0..1000 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                Ok(s) => conns.push(s),
                Err(e) => panic!("connection {} was not queued: {e}", conns.len() + 1),
            }
        }
        assert_eq!(conns.len(), 1000);
        drop(l);
    }
}
