//! Fuzz discovery domains (RFC 4171 §5.6.5.9–12) in the iSNS registry: the
//! input is a sequence of requests `function (u8), source (u8), length (u8),
//! payload` whose payload is TLV attributes (key, delimiter, operating), fed
//! to a `Registry` holding a few nodes. No request may panic, a refused one
//! must change no DD or DDS and record no changes, every response must
//! encode, and the DD indexes must stay consistent (`Domains::check`).
#![no_main]

use isns::Registry;
use isns_proto::tag;
use isns_proto::{Attribute, Flags, FunctionId, Message, Status};
use libfuzzer_sys::fuzz_target;

const FUNCTIONS: [FunctionId; 8] = [
    FunctionId::DD_REG,
    FunctionId::DD_DEREG,
    FunctionId::DDS_REG,
    FunctionId::DDS_DEREG,
    FunctionId::DEV_ATTR_QRY,
    FunctionId::DEV_GET_NEXT,
    FunctionId::DEV_ATTR_REG,
    FunctionId::DEV_DEREG,
];
const SOURCES: [&str; 4] = ["iqn.adm", "iqn.t", "iqn.h", "iqn.nobody"];

fn registry(default_dd: bool) -> Registry {
    let mut reg = Registry::new();
    reg.set_control_nodes(["iqn.adm".to_string()]);
    reg.set_default_dd(default_dd);
    for (i, name) in ["iqn.t", "iqn.h"].iter().enumerate() {
        let m = Message::request(
            FunctionId::DEV_ATTR_REG,
            1,
            Attribute::string(tag::ISCSI_NAME, name),
            vec![Attribute::string(tag::ENTITY_IDENTIFIER, &format!("e{i}"))],
            vec![
                Attribute::ip(tag::PORTAL_IP_ADDRESS, [127, 0, 0, 1 + i as u8].into()),
                Attribute::tcp_port(tag::PORTAL_PORT, 3260),
                Attribute::string(tag::ISCSI_NAME, name),
                Attribute::u32(tag::ISCSI_NODE_TYPE, 1 + i as u32),
            ],
        );
        reg.handle(&m, 1000);
    }
    reg
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let mut reg = registry(first & 1 == 1);
    let mut now = 1000;
    while let [f, src, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        now += 1;
        let function = FUNCTIONS[usize::from(*f) % FUNCTIONS.len()];
        let source = Attribute::string(tag::ISCSI_NAME, SOURCES[usize::from(*src) % SOURCES.len()]);
        let mut bytes = Vec::new();
        source.encode(&mut bytes);
        bytes.extend_from_slice(payload);
        let Ok(m) = Message::decode(function, Flags::CLIENT, 1, &bytes) else {
            continue;
        };
        let before = reg.clone();
        let out = reg.handle(&m, now);
        let resp = out.response.expect("every request is answered");
        if resp.status != Some(Status::SUCCESS) {
            assert!(out.changes.is_empty(), "a refused request recorded changes");
            // (A request from a registered source refreshes its entity's timestamp even when
            // refused, RFC 4171 §6.2.6; the discovery domains must not change.)
            assert!(
                reg.domains().dds() == before.domains().dds()
                    && reg.domains().sets() == before.domains().sets(),
                "a refused request changed the discovery domains"
            );
        }
        let _ = resp.to_bytes();
        if let Err(e) = reg.domains().check() {
            panic!("inconsistent discovery domains after {m:?}: {e}");
        }
    }
});
