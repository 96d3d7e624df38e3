//! Text rendering of the admin snapshot: the patent's FIG. 2 (configuration table) and FIG. 3
//! (iSNS registrations) side by side, and the events below.

use std::fmt::Write;

use balancer::{AdminSnapshot, Event, EventKind, Metric};

/// A plain text table: header, rows, columns padded to the widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.push(line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for r in rows {
        out.push(line(r.clone()));
    }
    out
}

/// A portal's load under every metric that is measured: sessions, IOPS, link utilisation (when
/// the link capacity is known) and processor demand (when measured).
fn load_cell(p: &balancer::PortalRow) -> String {
    let mut cell = format!("{} sess {:.0} iops", p.sessions.len(), iops(p));
    if let Some(u) = p.load.link_utilisation() {
        let _ = write!(cell, " bw {}", Metric::Bandwidth.format(u));
    }
    if p.load.cpu_demand() > 0.0 {
        let _ = write!(cell, " cpu {}", Metric::Cpu.format(p.load.cpu_demand()));
    }
    cell
}

/// The balancing line: every metric with its thresholds, then the settings.
fn balance_line(b: &balancer::BalancePolicy) -> String {
    let specs: Vec<String> = b
        .specs
        .iter()
        .map(|s| {
            format!(
                "{} high {} low {}",
                s.metric.name(),
                s.metric.format(s.thresholds.high),
                s.metric.format(s.thresholds.low)
            )
        })
        .collect();
    let mut line = format!(
        "balance: {}; cooldown {} s; at most {} moves per interval",
        specs.join(", "),
        b.cooldown_ms as f64 / 1000.0,
        b.max_moves
    );
    if !b.pinned.is_empty() {
        let _ = write!(line, "; pinned: {}", b.pinned.join(", "));
    }
    if b.move_reservation_holders {
        line.push_str("; reservation holders may move");
    }
    line
}

/// FIG. 2: per portal, its processor, load, and the sessions logged in through it.
pub fn config_table(s: &AdminSnapshot) -> Vec<String> {
    let mut rows = Vec::new();
    for p in &s.table.portals {
        // The portal's own cells head its first row; the rest of its rows leave them blank.
        let mut head = vec![
            p.id.to_string(),
            p.address.clone(),
            format!("cpu{}", p.processor),
            load_cell(p),
        ];
        let sessions: Vec<[&str; 2]> = if p.sessions.is_empty() {
            vec![["-", "-"]]
        } else {
            p.sessions
                .iter()
                .map(|s| [s.initiator.as_str(), s.target.as_str()])
                .collect()
        };
        for [initiator, target] in sessions {
            let mut row = std::mem::replace(&mut head, vec![String::new(); 4]);
            row.extend([initiator.to_string(), target.to_string()]);
            rows.push(row);
        }
    }
    let mut out = vec!["Configuration table (FIG. 2)".to_string()];
    out.extend(table(
        &["portal", "address", "proc", "load", "initiator", "target"],
        &rows,
    ));
    out
}

/// A portal's IOPS, never `-0` (an empty sum of `f64`s is -0.0).
fn iops(p: &balancer::PortalRow) -> f64 {
    p.iops() + 0.0
}

/// A service time given in microseconds: `850us`, `12.5ms`.
fn service_time(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}us")
    } else {
        format!("{:.1}ms", us / 1000.0)
    }
}

/// Per portal, one line of its measured load (smoothed; see ARCHITECTURE.md): sessions,
/// IOPS, MB/s sent and received, the link's utilisation when its capacity is known, the
/// processor's busy and waiting time, outstanding commands, median and 99th percentile
/// service time.
pub fn portal_load(s: &AdminSnapshot) -> Vec<String> {
    let rows: Vec<Vec<String>> = s
        .table
        .portals
        .iter()
        .map(|p| {
            let l = &p.load;
            let link = match (l.link_utilisation(), l.link_capacity) {
                (Some(u), Some(c)) => format!("{:.0}% of {:.0}Mbit", u * 100.0, c * 8.0 / 1e6),
                _ => "-".to_string(),
            };
            vec![
                p.id.to_string(),
                p.sessions.len().to_string(),
                format!("{:.0}", iops(p)),
                format!("{:.1}", l.sent_bps / 1e6),
                format!("{:.1}", l.received_bps / 1e6),
                link,
                format!("{:.0}%", l.cpu_busy * 100.0),
                format!("{:.0}%", l.cpu_wait * 100.0),
                l.outstanding.to_string(),
                service_time(l.service_p50_us),
                service_time(l.service_p99_us),
            ]
        })
        .collect();
    let mut out = vec!["Portal load (smoothed)".to_string()];
    out.extend(table(
        &[
            "portal",
            "sess",
            "iops",
            "sent MB/s",
            "recv MB/s",
            "link",
            "cpu",
            "wait",
            "outst",
            "p50",
            "p99",
        ],
        &rows,
    ));
    out
}

/// Time of day (UTC) of a Unix-milliseconds instant, `HH:MM:SS`.
pub(crate) fn clock(ms: u64) -> String {
    let secs = ms / 1000 % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The state of one registration as the iSNS server has it: "registered" only once the server
/// accepted the target's registration; a registration the balancer deleted is "DELETED".
fn registration_state(s: &AdminSnapshot, wanted: bool) -> &'static str {
    match (wanted, &s.isns, &s.isns_contact) {
        (false, _, _) => "DELETED",
        (true, None, _) => "registered",
        (true, Some(_), Some(c)) if c.ok => "registered",
        (true, Some(_), Some(_)) => "NOT REGISTERED",
        (true, Some(_), None) => "pending",
    }
}

/// FIG. 3: the (target, portal) registrations the target holds in iSNS.
pub fn registrations(s: &AdminSnapshot) -> Vec<String> {
    let rows: Vec<Vec<String>> = s
        .registrations
        .iter()
        .map(|r| {
            vec![
                r.target.clone(),
                r.portal.to_string(),
                r.address.clone(),
                r.tag.to_string(),
                registration_state(s, r.registered).to_string(),
            ]
        })
        .collect();
    let title = match (&s.isns, &s.isns_contact) {
        (Some(a), Some(c)) if !c.ok => format!(
            "iSNS registrations (FIG. 3) at {a}: NOT REGISTERED, last answer {}: {}",
            clock(c.at_ms),
            c.detail
        ),
        (Some(a), None) => format!("iSNS registrations (FIG. 3) at {a}: not answered yet"),
        (Some(a), Some(_)) => format!("iSNS registrations (FIG. 3) at {a}"),
        (None, _) => "Portal groups (FIG. 3; no iSNS server)".to_string(),
    };
    let mut out = vec![title];
    out.extend(table(
        &["target", "portal", "address", "pgt", "state"],
        &rows,
    ));
    out
}

/// One event as a line.
pub fn event_line(e: &Event) -> String {
    let what = match &e.kind {
        EventKind::Login {
            initiator,
            target,
            portal,
        } => format!("login            {initiator} -> {target} via {portal}"),
        EventKind::Logout {
            initiator,
            target,
            portal,
        } => format!("logout           {initiator} -> {target} via {portal}"),
        EventKind::RegistrationDeleted { target, portal } => {
            format!("registration deleted   ({target}, {portal})")
        }
        EventKind::LogoutRequested {
            initiator,
            target,
            from,
            to,
        } => format!("logout requested {initiator} -> {target}: {from} => {to}"),
        EventKind::Redirected {
            initiator,
            target,
            from,
            to,
        } => format!("login redirected {initiator} -> {target}: {from} => {to}"),
        EventKind::ForcedMove {
            initiator,
            target,
            from,
            to,
            time2logout,
            waited_ms,
        } => {
            let to = to.map_or_else(|| "?".to_string(), |p| p.to_string());
            format!(
                "FORCED MOVE      {initiator} -> {target}: {from} => {to}: no logout within \
                 Time2Logout {time2logout} s, dropped after {:.1} s",
                *waited_ms as f64 / 1000.0
            )
        }
        EventKind::RegistrationRestored { target, portal } => {
            format!("registration restored  ({target}, {portal})")
        }
        EventKind::Failed { what } => format!("FAILED           {what}"),
        EventKind::Operator { action } => format!("operator         {action}"),
    };
    format!("#{:<4} {what}  [{}]", e.seq, e.reason)
}

/// The moves since the target started: logout requests delivered, and how many of those
/// hosts did not log out in time and were dropped (forced moves).
pub fn moves(s: &AdminSnapshot) -> String {
    format!(
        "moves: {} logout requested, {} forced (no logout within Time2Logout: dropped), {} \
         ping-pongs",
        s.logout_requests, s.forced_moves, s.ping_pongs
    )
}

/// The whole status screen.
pub fn status(s: &AdminSnapshot, max_events: usize) -> String {
    let left = config_table(s);
    let right = registrations(s);
    let width = left.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    if let Some(b) = &s.balance {
        let _ = writeln!(out, "{}", balance_line(b));
    } else {
        let _ = writeln!(out, "balance: off");
    }
    let _ = writeln!(out, "{}", moves(s));
    for i in 0..left.len().max(right.len()) {
        let l = left.get(i).map(String::as_str).unwrap_or("");
        let r = right.get(i).map(String::as_str).unwrap_or("");
        let _ = writeln!(out, "{l:<width$}    {r}").map(|_| ());
    }
    let _ = writeln!(out);
    for l in portal_load(s) {
        let _ = writeln!(out, "{l}");
    }
    let skip = s.events.len().saturating_sub(max_events);
    let _ = writeln!(
        out,
        "\nEvents ({} shown of {}):",
        s.events.len() - skip,
        s.events.len()
    );
    for e in &s.events[skip..] {
        let _ = writeln!(out, "{}", event_line(e));
    }
    out
}

/// `portshift status --isns`: the fleet as iSNS server `server` has it. Per entity its
/// portals (P0, P1, ... in registration order), then a row per target with, per portal, the
/// Portal Group Tag it is registered with or DELETED; other nodes (initiators) after; then
/// every deleted (target, portal) registration.
pub fn fleet(server: std::net::SocketAddr, f: &isns::fleet::Fleet) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let portals: usize = f.entities.iter().map(|e| e.portals.len()).sum();
    let targets = f
        .entities
        .iter()
        .flat_map(|e| &e.nodes)
        .filter(|n| n.is_target())
        .count();
    let deleted = f.deleted();
    let count =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let _ = writeln!(
        out,
        "iSNS fleet at {server}: {}, {}, {}, {}",
        count(f.entities.len(), "entity", "entities"),
        count(portals, "portal", "portals"),
        count(targets, "target", "targets"),
        count(
            deleted.len(),
            "deleted registration",
            "deleted registrations"
        ),
    );
    for e in &f.entities {
        let _ = writeln!(out, "\nENTITY {}", e.id);
        for (i, p) in e.portals.iter().enumerate() {
            let _ = writeln!(out, "  P{i}  {p}");
        }
        let width = e
            .nodes
            .iter()
            .map(|n| n.name.len())
            .max()
            .unwrap_or(0)
            .max("TARGET".len());
        let ts: Vec<_> = e.nodes.iter().filter(|n| n.is_target()).collect();
        if !ts.is_empty() {
            let mut head = format!("  {:width$}", "TARGET");
            for i in 0..e.portals.len() {
                let _ = write!(head, "  {:8}", format!("P{i}"));
            }
            let _ = writeln!(out, "{}", head.trim_end());
            for n in ts {
                let mut row = format!("  {:width$}", n.name);
                for r in &n.registrations {
                    let cell = match r.tag {
                        Some(t) => format!("PGT {t}"),
                        None => "DELETED".into(),
                    };
                    let _ = write!(row, "  {cell:8}");
                }
                let _ = writeln!(out, "{}", row.trim_end());
            }
        }
        for n in e.nodes.iter().filter(|n| !n.is_target()) {
            let kind = if n.node_type & isns_proto::tag::node_type::INITIATOR != 0 {
                "initiator"
            } else {
                "node"
            };
            let _ = writeln!(out, "  {kind} {}", n.name);
        }
    }
    let _ = writeln!(out, "\nDELETED REGISTRATIONS");
    if deleted.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for (t, p) in deleted {
        let _ = writeln!(out, "  ({t}, {p})");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use balancer::{ConfigTable, PortalId, PortalLoad, PortalRow, RegistrationRow, SessionEntry};

    #[test]
    fn shows_sessions_registrations_and_events() {
        let mut s = AdminSnapshot {
            isns: Some("127.0.0.1:3205".into()),
            isns_contact: Some(balancer::IsnsContact {
                ok: true,
                detail: "registered with 127.0.0.1:3205".into(),
                at_ms: 0,
            }),
            balance: Some(
                balancer::BalancePolicy::parse(&["sessions:2", "bandwidth:80%"])
                    .unwrap()
                    .with_cooldown_ms(10_000)
                    .with_pinned(["iqn.db"]),
            ),
            table: ConfigTable {
                portals: vec![
                    PortalRow {
                        id: PortalId(0),
                        address: "127.0.0.1:3260".into(),
                        processor: 0,
                        sessions: vec![SessionEntry {
                            session_id: 1,
                            initiator: "iqn.i1".into(),
                            target: "iqn.t1".into(),
                            login_ms: 0,
                            iops: 10.0,
                            commands: 5,
                            ..Default::default()
                        }],
                        load: PortalLoad {
                            link_capacity: Some(50e6),
                            sent_bps: 45e6,
                            received_bps: 1.5e6,
                            cpu_busy: 0.35,
                            cpu_wait: 0.02,
                            outstanding: 4,
                            service_p50_us: 210.0,
                            service_p99_us: 1_940.0,
                        },
                    },
                    PortalRow {
                        id: PortalId(1),
                        address: "127.0.0.2:3260".into(),
                        processor: 1,
                        sessions: vec![],
                        load: Default::default(),
                    },
                ],
                served: vec![],
            },
            registrations: vec![
                RegistrationRow {
                    target: "iqn.t1".into(),
                    portal: PortalId(0),
                    address: "127.0.0.1:3260".into(),
                    tag: 1,
                    registered: false,
                },
                RegistrationRow {
                    target: "iqn.t1".into(),
                    portal: PortalId(1),
                    address: "127.0.0.2:3260".into(),
                    tag: 2,
                    registered: true,
                },
            ],
            events: vec![Event {
                seq: 7,
                at_ms: 0,
                kind: EventKind::RegistrationDeleted {
                    target: "iqn.t1".into(),
                    portal: PortalId(0),
                },
                reason: "sessions load 3 >= high 2".into(),
            }],
            logout_requests: 3,
            forced_moves: 1,
            ping_pongs: 0,
        };
        let text = status(&s, 10);
        assert!(
            text.contains(
                "balance: sessions high 2 low 1, bandwidth high 80.0% low 40.0%; cooldown 10 s; \
                 at most 4 moves per interval; pinned: iqn.db"
            ),
            "{text}"
        );
        assert!(text.contains("1 sess 10 iops bw 90.0% cpu 37.0%"), "{text}");
        assert!(
            text.contains(
                "moves: 3 logout requested, 1 forced (no logout within Time2Logout: dropped), 0 ping-pongs"
            ),
            "{text}"
        );
        // Each portal's load on one line.
        let load: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("Portal load"))
            .collect();
        let cells = |p: &str| -> Vec<String> {
            let line = load.iter().find(|l| l.starts_with(p)).unwrap();
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        };
        assert_eq!(
            cells("P0"),
            [
                "P0",
                "1",
                "10",
                "45.0",
                "1.5",
                "90% of 400Mbit",
                "35%",
                "2%",
                "4",
                "210us",
                "1.9ms"
            ],
            "{text}"
        );
        assert_eq!(
            cells("P1"),
            [
                "P1", "0", "0", "0.0", "0.0", "-", "0%", "0%", "0", "0us", "0us"
            ]
        );
        let row = text.lines().find(|l| l.contains("iqn.i1")).unwrap();
        assert!(row.contains("127.0.0.1:3260") && row.contains("cpu0"));
        assert!(
            text.lines()
                .any(|l| l.contains("iqn.t1") && l.contains("DELETED"))
        );
        assert!(
            text.contains("#7    registration deleted   (iqn.t1, P0)  [sessions load 3 >= high 2]")
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("P1") && l.contains("cpu1"))
        );
        let p1 = |t: &str| {
            t.lines()
                .find(|l| l.contains("127.0.0.2:3260") && l.contains("iqn.t1"))
                .unwrap()
                .to_string()
        };
        assert!(p1(&text).ends_with("registered"), "{text}");
        // The server refused the last registration: nothing shows as registered.
        s.isns_contact = Some(balancer::IsnsContact {
            ok: false,
            detail: "iSNS server answered DevAttrReg with status 3".into(),
            at_ms: 3_723_000,
        });
        let text = status(&s, 10);
        assert!(p1(&text).ends_with("NOT REGISTERED"), "{text}");
        assert!(
            text.contains("NOT REGISTERED, last answer 01:02:03 UTC: iSNS server answered DevAttrReg with status 3"),
            "{text}"
        );
        // Not answered yet: pending.
        s.isns_contact = None;
        assert!(p1(&status(&s, 10)).ends_with("pending"));
    }

    #[test]
    fn a_forced_move_reads_as_one() {
        let e = Event {
            seq: 12,
            at_ms: 0,
            kind: EventKind::ForcedMove {
                initiator: "iqn.i2".into(),
                target: "iqn.t2".into(),
                from: PortalId(0),
                to: Some(PortalId(1)),
                time2logout: 2,
                waited_ms: 5_012,
            },
            reason: "session 2 did not log out".into(),
        };
        assert_eq!(
            event_line(&e),
            "#12   FORCED MOVE      iqn.i2 -> iqn.t2: P0 => P1: no logout within Time2Logout 2 s, \
             dropped after 5.0 s  [session 2 did not log out]"
        );
        // Older documents without the counters still parse (zero).
        let mut v = serde_json::to_value(AdminSnapshot {
            isns: None,
            isns_contact: None,
            balance: None,
            table: ConfigTable::default(),
            registrations: vec![],
            events: vec![e],
            logout_requests: 1,
            forced_moves: 1,
            ping_pongs: 2,
        })
        .unwrap();
        assert_eq!(v["forced_moves"], 1);
        assert_eq!(v["ping_pongs"], 2);
        assert_eq!(v["events"][0]["kind"]["type"], "forced_move");
        v.as_object_mut().unwrap().remove("forced_moves");
        v.as_object_mut().unwrap().remove("ping_pongs");
        let back: AdminSnapshot = serde_json::from_value(v).unwrap();
        assert_eq!((back.forced_moves, back.ping_pongs), (0, 0));
    }
}
