//! The seed corpus of the `target_connection` fuzz target (fuzz/seeds/target_connection): the
//! test fails when the committed seeds differ from what the encoders make today;
//! `PORTSHIFT_WRITE_SEEDS=1 cargo test -p iscsi-target-core --test fuzz_seeds` rewrites them. Each seed is two control
//! bytes (chunk size, time/logout flags; see the fuzz target) and an initiator's byte stream
//! made with the iscsi-proto encoders.

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use iscsi_proto::text::TextPairs;
use iscsi_proto::{
    DataOut, Digests, LoginRequest, LogoutRequest, NopOut, Pdu, RESERVED_TAG, ScsiCommand,
    TaskMgmtRequest, TextRequest,
};

const TARGET: &str = "iqn.2024-01.fuzz:t";

fn login(keys: &[(&str, &str)]) -> Pdu {
    Pdu::LoginRequest(LoginRequest::operational([0x80, 0, 0, 0, 0, 1], 1, keys))
}

fn normal(extra: &[(&'static str, &'static str)]) -> Pdu {
    let mut keys = vec![
        ("InitiatorName", "iqn.2024-01.fuzz:i"),
        ("TargetName", TARGET),
        ("AuthMethod", "None"),
    ];
    keys.extend_from_slice(extra);
    login(&keys)
}

fn rw(op: u8, itt: u32, cmd_sn: u32, blocks: u8, data: Bytes, final_: bool) -> Pdu {
    let mut cdb = [0u8; 16];
    cdb[0] = op;
    cdb[8] = blocks;
    let read = op == scsi::cdb::opcode::READ_10;
    Pdu::ScsiCommand(ScsiCommand {
        final_,
        read,
        write: !read,
        itt,
        edtl: u32::from(blocks) * 512,
        cmd_sn,
        cdb,
        data,
        ..ScsiCommand::default()
    })
}

fn logout(itt: u32, cmd_sn: u32) -> Pdu {
    Pdu::LogoutRequest(LogoutRequest {
        immediate: true,
        itt,
        cmd_sn,
        ..LogoutRequest::default()
    })
}

fn stream(control: [u8; 2], parts: &[(Pdu, Digests)]) -> Vec<u8> {
    let mut b = BytesMut::from(&control[..]);
    for (p, d) in parts {
        p.encode(&mut b, *d).unwrap();
    }
    b.to_vec()
}

#[test]
fn committed_seed_corpus_is_current() {
    use scsi::cdb::opcode::{READ_10, WRITE_10};
    let none = Digests::NONE;
    let both = Digests {
        header: true,
        data: true,
    };
    let send_targets = [("SendTargets", "All")]
        .into_iter()
        .collect::<TextPairs>()
        .to_bytes();
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        (
            "login_read_write_logout",
            stream(
                [0xff, 0],
                &[
                    (normal(&[("ImmediateData", "Yes")]), none),
                    (rw(READ_10, 2, 0, 1, Bytes::new(), true), none),
                    (rw(WRITE_10, 3, 1, 1, Bytes::from(vec![7; 512]), true), none),
                    (logout(4, 2), none),
                ],
            ),
        ),
        (
            "discovery_send_targets",
            stream(
                [3, 1],
                &[
                    (
                        login(&[("InitiatorName", "iqn.i"), ("SessionType", "Discovery")]),
                        none,
                    ),
                    (
                        Pdu::TextRequest(TextRequest {
                            immediate: true,
                            final_: true,
                            itt: 2,
                            ttt: RESERVED_TAG,
                            data: send_targets,
                            ..TextRequest::default()
                        }),
                        none,
                    ),
                    (logout(3, 0), none),
                ],
            ),
        ),
        (
            "r2t_write_lun_reset_read",
            stream(
                [0xff, 0],
                &[
                    (
                        normal(&[("ImmediateData", "No"), ("InitialR2T", "Yes")]),
                        none,
                    ),
                    (rw(WRITE_10, 2, 0, 2, Bytes::new(), true), none),
                    (
                        Pdu::DataOut(DataOut {
                            final_: true,
                            itt: 2,
                            ttt: 1,
                            data: Bytes::from(vec![1; 1024]),
                            ..DataOut::default()
                        }),
                        none,
                    ),
                    (
                        Pdu::TaskMgmtRequest(TaskMgmtRequest {
                            immediate: true,
                            function: 5,
                            itt: 3,
                            cmd_sn: 1,
                            ..TaskMgmtRequest::default()
                        }),
                        none,
                    ),
                    (rw(READ_10, 4, 1, 1, Bytes::new(), true), none),
                    (rw(READ_10, 5, 2, 1, Bytes::new(), true), none),
                ],
            ),
        ),
        (
            "digests_nop_and_logout_request",
            stream(
                [0xff, 0x90],
                &[
                    (
                        normal(&[("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")]),
                        none,
                    ),
                    (
                        Pdu::NopOut(NopOut {
                            immediate: true,
                            itt: 2,
                            ttt: RESERVED_TAG,
                            data: Bytes::from_static(b"ping"),
                            ..NopOut::default()
                        }),
                        both,
                    ),
                    (rw(READ_10, 3, 0, 1, Bytes::new(), true), both),
                ],
            ),
        ),
    ];
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/target_connection");
    if std::env::var_os("PORTSHIFT_WRITE_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for (name, bytes) in &seeds {
        let committed = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("seed {name} missing in {}: {e}", dir.display()));
        assert!(
            committed == *bytes,
            "seed {name} differs from what the encoders make; rewrite with PORTSHIFT_WRITE_SEEDS=1"
        );
    }
}
