//! The configuration table's measured figures against a real target: a portal thread serving
//! a loopback socket driven with raw PDUs at a known rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use balancer::{PortalLoad, SessionEntry};
use bytes::BytesMut;
use iscsi_proto::{DataOut, Digests, Limits, LoginRequest, Pdu, PduDecoder, ScsiCommand, Stage};
use iscsi_target::control::Control;
use iscsi_target::{LunConfig, Target, TargetConfig, TargetHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TARGET: &str = "iqn.2026-11.test:load";
/// Bytes of each READ.
const READ_LEN: usize = 512 * 1024;
/// READs per second: 40 of 512 KiB, about 21 MB/s.
const READS_PER_S: u32 = 40;
const MRDSL: usize = 256 * 1024;

/// A target with one portal on a 400 Mbit/s link and a 64 MiB null LUN.
fn target() -> TargetHandle {
    Target::start(TargetConfig {
        portals: vec!["127.0.0.1:0,speed=400Mbit".parse().unwrap()],
        luns: vec![LunConfig {
            iqn: TARGET.into(),
            path: "null:67108864".into(),
            size: None,
            ..Default::default()
        }],
        isns: Vec::new(),
        balance: Vec::new(),
        cooldown_ms: 0,
        pin: Vec::new(),
        max_moves: balancer::DEFAULT_MAX_MOVES,
        smoothing_ms: balancer::SMOOTHING_TAU_MS,
        admin: None,
        limits: Default::default(),
        ..Default::default()
    })
    .unwrap()
}

/// A client logged in to the target with raw PDUs, counting what it reads.
struct Client {
    s: TcpStream,
    decoder: PduDecoder,
    rbuf: BytesMut,
    /// Bytes read from the socket since login.
    read: usize,
    cmd_sn: u32,
    itt: u32,
}

impl Client {
    async fn login(addr: std::net::SocketAddr) -> Client {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mrdsl = MRDSL.to_string();
        let keys = [
            ("InitiatorName", "iqn.2026-11.test:reader"),
            ("TargetName", TARGET),
            ("AuthMethod", "None"),
            ("MaxRecvDataSegmentLength", mrdsl.as_str()),
        ];
        let mut b = BytesMut::new();
        Pdu::LoginRequest(LoginRequest::operational([0x80, 0, 0, 0, 0, 3], 1, &keys))
            .encode(&mut b, Digests::NONE)
            .unwrap();
        s.write_all(&b).await.unwrap();
        let mut c = Client {
            s,
            decoder: PduDecoder::new(Limits {
                max_recv_data_segment_length: 8192,
            }),
            rbuf: BytesMut::with_capacity(1 << 20),
            read: 0,
            cmd_sn: 0,
            itt: 10,
        };
        let Pdu::LoginResponse(r) = c.next().await else {
            panic!("login answered")
        };
        assert_eq!((r.status_class, r.nsg), (0, Stage::FullFeaturePhase));
        c.decoder = PduDecoder::new(Limits {
            max_recv_data_segment_length: MRDSL as u32,
        });
        c.read = 0;
        c
    }

    async fn next(&mut self) -> Pdu {
        loop {
            if let Some(p) = self.decoder.decode(&mut self.rbuf).unwrap() {
                return p;
            }
            let n = self.s.read_buf(&mut self.rbuf).await.unwrap();
            assert!(n > 0, "the target closed the connection");
            self.read += n;
        }
    }

    async fn send(&mut self, pdu: Pdu) {
        let mut b = BytesMut::new();
        pdu.encode(&mut b, Digests::NONE).unwrap();
        self.s.write_all(&b).await.unwrap();
    }

    fn command(&mut self, cdb: [u8; 16], read: bool, edtl: usize) -> ScsiCommand {
        let c = ScsiCommand {
            final_: true,
            read,
            write: !read,
            itt: self.itt,
            cmd_sn: self.cmd_sn,
            edtl: edtl as u32,
            cdb,
            ..ScsiCommand::default()
        };
        self.itt += 1;
        self.cmd_sn += 1;
        c
    }

    /// One READ(10) of [`READ_LEN`] bytes at block `lba`, answered in full.
    async fn read(&mut self, lba: u32) {
        let mut cdb = [0u8; 16];
        cdb[0] = scsi::cdb::opcode::READ_10;
        cdb[2..6].copy_from_slice(&lba.to_be_bytes());
        cdb[7..9].copy_from_slice(&((READ_LEN / 512) as u16).to_be_bytes());
        let cmd = self.command(cdb, true, READ_LEN);
        self.send(Pdu::ScsiCommand(cmd)).await;
        let mut got = 0;
        loop {
            match self.next().await {
                Pdu::DataIn(d) => {
                    got += d.data.len();
                    if d.status_present {
                        assert_eq!((d.status, got), (0, READ_LEN));
                        return;
                    }
                }
                p => panic!("{p:?}"),
            }
        }
    }
}

/// The one portal's load and its one session, as the admin endpoint shows them.
fn figures(control: &Control) -> (PortalLoad, SessionEntry) {
    let snap = control.snapshot();
    let p = &snap.table.portals[0];
    (p.load.clone(), p.sessions[0].clone())
}

/// Polls `f` until it holds, for up to 5 s.
async fn until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_traffic_is_measured_per_portal_and_per_session() {
    let t = target();
    let control = Arc::clone(t.control());
    let mut c = Client::login(t.portals()[0]).await;

    // READs at a steady rate for 3.5 s; the measured figures are compared with what the
    // client received in that time.
    let start = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_secs(1) / READS_PER_S);
    let mut lba = 0;
    while start.elapsed() < Duration::from_millis(3_500) {
        pace.tick().await;
        c.read(lba).await;
        lba = (lba + (READ_LEN / 512) as u32) % (64 * 2048 - 1024);
    }
    let real = c.read as f64 / start.elapsed().as_secs_f64();
    let (load, session) = figures(&control);
    eprintln!("real {real:.0} B/s; portal {load:?}; session {session:?}");
    let near = |x: f64| (0.8 * real..=1.2 * real).contains(&x);
    assert!(
        near(load.sent_bps),
        "portal sent {} vs {real}",
        load.sent_bps
    );
    assert!(
        near(session.read_bps),
        "session read {} vs {real}",
        session.read_bps
    );
    // Received: the commands, 48 bytes each.
    let commands = f64::from(READS_PER_S) * 48.0;
    assert!(
        (0.5 * commands..=2.0 * commands).contains(&load.received_bps),
        "{load:?}"
    );
    assert!(
        (0.5 * commands..=2.0 * commands).contains(&session.write_bps),
        "{session:?}"
    );
    assert!(session.iops > 0.5 * f64::from(READS_PER_S), "{session:?}");
    assert_eq!(session.cpu_share, 1.0, "the portal's only session");
    // The processor worked, and each READ took some time to serve.
    assert!(load.cpu_busy > 0.0 && load.cpu_busy < 1.0, "{load:?}");
    assert!(load.service_p50_us > 0.0, "{load:?}");
    assert!(load.service_p99_us >= load.service_p50_us, "{load:?}");
    // speed=400Mbit: 50,000,000 bytes/s each way; utilisation max(sent, received) / that.
    assert_eq!(load.link_capacity, Some(50e6));
    let u = load.link_utilisation().unwrap();
    assert_eq!(u, load.sent_bps.max(load.received_bps) / 50e6);
    assert!((0.8 * real / 50e6..=1.2 * real / 50e6).contains(&u), "{u}");
    // The admin document carries them.
    let json = serde_json::to_value(control.snapshot()).unwrap();
    let l = &json["table"]["portals"][0]["load"];
    assert_eq!(l["link_capacity"], 50e6);
    assert!(l["sent_bps"].as_f64().unwrap() > 0.0, "{l}");

    // Outstanding: three WRITEs waiting for their Data-Out (InitialR2T=Yes, no immediate
    // data) are received and not answered.
    let mut cdb = [0u8; 16];
    cdb[0] = scsi::cdb::opcode::WRITE_10;
    cdb[8] = 1;
    let mut r2ts = Vec::new();
    for _ in 0..3 {
        let cmd = c.command(cdb, false, 512);
        c.send(Pdu::ScsiCommand(cmd)).await;
        let Pdu::R2t(r) = c.next().await else {
            panic!("an R2T")
        };
        r2ts.push(r);
    }
    let outstanding = |n: u32| {
        let (load, session) = figures(&control);
        load.outstanding == n && session.outstanding == n
    };
    assert!(until(|| outstanding(3)).await, "{:?}", figures(&control));
    for r in r2ts {
        c.send(Pdu::DataOut(DataOut {
            final_: true,
            itt: r.itt,
            ttt: r.ttt,
            data: vec![0u8; 512].into(),
            ..DataOut::default()
        }))
        .await;
        assert!(matches!(c.next().await, Pdu::ScsiResponse(_)));
    }
    assert!(until(|| outstanding(0)).await, "{:?}", figures(&control));
    drop(c);
    t.shutdown();
}
