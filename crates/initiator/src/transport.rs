//! Sequential PDU exchange on one TCP connection, used before the full feature
//! phase (login, RFC 7143 §6.3) and for discovery sessions (SendTargets, §12.3 / Appendix C).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use iscsi_proto::{Digests, Limits, Pdu, PduDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::Error;

/// Upper bound on bytes read for one PDU in the sequential phase (header + 16 MiB).
const MAX_READ: usize = 17 * 1024 * 1024;

/// A connection in its request/response phase.
#[derive(Debug)]
pub struct Transport {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes received but not yet decoded.
    pub rbuf: BytesMut,
    /// The decoder (login limits until switched).
    pub decoder: PduDecoder,
    /// Digests for sending.
    pub digests: Digests,
    /// The portal.
    pub portal: SocketAddr,
    /// Per-receive timeout.
    pub timeout: Duration,
}

impl Transport {
    /// Connect to `portal` within `timeout`.
    pub async fn connect(portal: SocketAddr, timeout: Duration) -> Result<Transport, Error> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(portal))
            .await
            .map_err(|_| Error::Timeout("TCP connect"))?
            .map_err(|source| Error::Io { portal, source })?;
        let _ = stream.set_nodelay(true);
        Ok(Transport {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            decoder: PduDecoder::new(Limits::default()),
            digests: Digests::NONE,
            portal,
            timeout,
        })
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            portal: self.portal,
            source,
        }
    }

    /// Encode and send one PDU.
    pub async fn send(&mut self, pdu: &Pdu) -> Result<(), Error> {
        let bytes = pdu.to_bytes(self.digests)?;
        self.stream.write_all(&bytes).await.map_err(|e| self.io(e))
    }

    /// Receive one PDU within the timeout.
    pub async fn recv(&mut self) -> Result<Pdu, Error> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(p) = self.decoder.decode(&mut self.rbuf)? {
                return Ok(p);
            }
            if self.rbuf.len() > MAX_READ {
                return Err(Error::Protocol("PDU larger than the read bound".into()));
            }
            self.rbuf.reserve(16 * 1024);
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf))
                .await
                .map_err(|_| Error::Timeout("waiting for a PDU"))?
                .map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(self.io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }
}
