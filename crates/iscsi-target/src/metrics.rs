//! `GET /metrics`: the target's figures in the Prometheus text exposition format
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>), docs/metrics.md.
//!
//! Nothing is counted here on the data path beyond what the portals already count in atomics:
//! at each scrape, [`TargetMetrics::render`] copies the counters of the control plane, the
//! portals' [`PortalStats`](crate::load::PortalStats), the event log's per-kind counts and
//! the [`LoginCounters`] into its own `metrics-exporter-prometheus` recorder (one per admin
//! endpoint, never the process-global one: several targets may share a process) and renders
//! it. The one figure the data path adds is each portal's command latency, kept in a
//! [`LatencyHistogram`] of fixed buckets ([`LATENCY_BUCKETS_SECONDS`]): a search over 16
//! bounds and three relaxed atomic additions per feeding pass, no lock, no allocation (the
//! exporter's own histograms keep every sample with its time until the next scrape, which is
//! an append per command). It is rendered after the exporter's output, in the same format.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};
use metrics::{Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use iscsi_proto::login::LoginStatus;

use crate::control::Control;

/// Upper bounds of the command latency buckets, in seconds (explicit, so that histograms of
/// several targets aggregate).
pub const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

/// [`LATENCY_BUCKETS_SECONDS`] in microseconds.
const BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// The media type of the text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A histogram of command service times with fixed buckets: lock- and allocation-free.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Commands per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; 17],
    /// Sum of the recorded times, microseconds.
    sum_us: AtomicU64,
}

/// A copy of a [`LatencyHistogram`]: cumulative counts per bound, then the total.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// Commands at or below each bound of [`LATENCY_BUCKETS_SECONDS`].
    pub cumulative: [u64; 16],
    pub count: u64,
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    /// Records `commands` commands that took `us` microseconds each.
    #[inline]
    pub fn record(&self, us: u64, commands: u64) {
        let i = BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(commands, Ordering::Relaxed);
        self.sum_us
            .fetch_add(us.saturating_mul(commands), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let mut cumulative = [0u64; 16];
        let mut total = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Ordering::Relaxed);
            if let Some(c) = cumulative.get_mut(i) {
                *c = total;
            }
        }
        LatencySnapshot {
            cumulative,
            count: total,
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// Login outcomes that are not in the event log (RFC 4544's `iscsiTgtLoginStats` is the
/// model: accepted and redirected logins are counted from the event log's `login` and
/// `redirected` events).
#[derive(Debug, Default)]
pub struct LoginCounters {
    /// Answered 0x0201 "authentication failure" (`iscsiTgtLoginAuthenticateFails`).
    pub authentication_failed: AtomicU64,
    /// Answered 0x0202 "authorization failure" (`iscsiTgtLoginAuthorizeFails`).
    pub authorization_failed: AtomicU64,
    /// Answered 0x0203 "not found": the target name is not served (here).
    pub not_found: AtomicU64,
    /// Refused with any other status of class 2 or 3 (`iscsiTgtLoginOtherFails`).
    pub other_failed: AtomicU64,
}

impl LoginCounters {
    #[inline]
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a login refused with `status` (class 2 or 3).
    pub fn refused(&self, status: LoginStatus) {
        let c = match status {
            LoginStatus::AUTHENTICATION_FAILURE => &self.authentication_failed,
            LoginStatus::AUTHORIZATION_FAILURE => &self.authorization_failed,
            LoginStatus::NOT_FOUND => &self.not_found,
            _ => &self.other_failed,
        };
        Self::count(c);
    }
}

/// One family: name, help and unit.
struct Family {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
}

const fn family(name: &'static str, help: &'static str, unit: Option<Unit>) -> Family {
    Family { name, help, unit }
}

const PORTAL_SESSIONS: Family = family(
    "portshift_target_portal_sessions",
    "Normal sessions logged in through the portal.",
    None,
);
const PORTAL_COMMANDS: Family = family(
    "portshift_target_portal_commands_total",
    "SCSI commands answered through the portal.",
    None,
);
const PORTAL_READ_BYTES: Family = family(
    "portshift_target_portal_received_bytes_total",
    "Bytes read from the portal's connections.",
    Some(Unit::Bytes),
);
const PORTAL_IN_PLACE_BYTES: Family = family(
    "portshift_target_portal_received_in_place_bytes_total",
    "Of the bytes read from the portal's connections, the Data-Out payload read straight into its write's buffer.",
    Some(Unit::Bytes),
);
const PORTAL_WRITTEN_BYTES: Family = family(
    "portshift_target_portal_sent_bytes_total",
    "Bytes written to the portal's connections.",
    Some(Unit::Bytes),
);
const PORTAL_OUTSTANDING: Family = family(
    "portshift_target_portal_outstanding_commands",
    "SCSI commands received through the portal and not yet answered.",
    None,
);
const PORTAL_CPU_BUSY: Family = family(
    "portshift_target_portal_cpu_busy_ratio",
    "Fraction of one CPU the portal's processor ran (smoothed).",
    None,
);
const PORTAL_CPU_WAIT: Family = family(
    "portshift_target_portal_cpu_wait_ratio",
    "Fraction of the time the portal's processor waited for a CPU (smoothed).",
    None,
);
const PORTAL_LINK: Family = family(
    "portshift_target_portal_link_utilisation_ratio",
    "The larger of the portal link's sent and received byte rates over its capacity (smoothed; only when the capacity is known).",
    None,
);
const PORTAL_LATENCY: Family = family(
    "portshift_target_portal_command_duration_seconds",
    "Service time of the portal's SCSI commands, from the read that brought them in to the queueing of their response.",
    Some(Unit::Seconds),
);
const TARGET_SESSIONS: Family = family(
    "portshift_target_sessions",
    "Normal sessions logged in to the target.",
    None,
);
const TARGET_COMMANDS: Family = family(
    "portshift_target_commands_total",
    "SCSI commands the target answered.",
    None,
);
const TARGET_READ_BYTES: Family = family(
    "portshift_target_received_bytes_total",
    "Bytes read from the target's sessions.",
    Some(Unit::Bytes),
);
const TARGET_WRITTEN_BYTES: Family = family(
    "portshift_target_sent_bytes_total",
    "Bytes written to the target's sessions.",
    Some(Unit::Bytes),
);
const LUN_COMMANDS: Family = family(
    "portshift_target_lun_commands_total",
    "SCSI commands executed on the logical unit.",
    None,
);
const LUN_READ_BYTES: Family = family(
    "portshift_target_lun_read_bytes_total",
    "Data-in bytes the logical unit's commands returned.",
    Some(Unit::Bytes),
);
const LUN_WRITTEN_BYTES: Family = family(
    "portshift_target_lun_written_bytes_total",
    "Data-out bytes the logical unit's commands took (commands that ended GOOD).",
    Some(Unit::Bytes),
);
const LUN_ERRORS: Family = family(
    "portshift_target_lun_errors_total",
    "Commands of the logical unit that did not end GOOD, by SCSI status.",
    None,
);
const TARGET_ERRORS: Family = family(
    "portshift_target_errors_total",
    "Commands of the target that did not end GOOD, by SCSI status (those addressed to no logical unit included).",
    None,
);
const LOGINS: Family = family(
    "portshift_target_logins_total",
    "Logins by result (RFC 4544 iscsiTgtLoginStats): accepted and redirected (normal sessions), authentication_failed, authorization_failed, not_found, other_failed.",
    None,
);
const BALANCER_ACTIONS: Family = family(
    "portshift_target_balancer_actions_total",
    "What the balancer did, by action: registration_deleted, logout_requested (a move), forced_move, registration_restored, failed.",
    None,
);
const BALANCER_MOVES: Family = family(
    "portshift_target_balancer_moves_total",
    "Sessions the balancer asked to log out and move to another portal.",
    None,
);
const EVENTS: Family = family(
    "portshift_target_events_total",
    "Events recorded in the target's event log, by kind.",
    None,
);

/// The balancer's actions among the event kinds.
const BALANCER_KINDS: [&str; 5] = [
    "registration-deleted",
    "logout-requested",
    "forced-move",
    "registration-restored",
    "failed",
];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The `/metrics` renderer of one admin endpoint: its own recorder.
pub struct TargetMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for TargetMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetMetrics").finish_non_exhaustive()
    }
}

impl Default for TargetMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl TargetMetrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        for f in [
            &PORTAL_SESSIONS,
            &PORTAL_OUTSTANDING,
            &PORTAL_CPU_BUSY,
            &PORTAL_CPU_WAIT,
            &PORTAL_LINK,
            &TARGET_SESSIONS,
        ] {
            recorder.describe_gauge(f.name.into(), f.unit, f.help.into());
        }
        for f in [
            &PORTAL_COMMANDS,
            &PORTAL_READ_BYTES,
            &PORTAL_IN_PLACE_BYTES,
            &PORTAL_WRITTEN_BYTES,
            &TARGET_COMMANDS,
            &TARGET_READ_BYTES,
            &TARGET_WRITTEN_BYTES,
            &TARGET_ERRORS,
            &LUN_COMMANDS,
            &LUN_READ_BYTES,
            &LUN_WRITTEN_BYTES,
            &LUN_ERRORS,
            &LOGINS,
            &BALANCER_ACTIONS,
            &BALANCER_MOVES,
            &EVENTS,
        ] {
            recorder.describe_counter(f.name.into(), f.unit, f.help.into());
        }
        TargetMetrics { recorder, handle }
    }

    fn gauge(&self, f: &Family, labels: Vec<Label>, v: f64) {
        self.recorder
            .register_gauge(&Key::from_parts(f.name, labels), &METADATA)
            .set(v);
    }

    fn counter(&self, f: &Family, labels: Vec<Label>, v: u64) {
        self.recorder
            .register_counter(&Key::from_parts(f.name, labels), &METADATA)
            .absolute(v);
    }

    /// The document: every family, from the control plane's figures now.
    pub fn render(&self, control: &Control) -> String {
        let snap = control.snapshot();
        for (info, p) in control.portals().iter().zip(&snap.table.portals) {
            let portal = || vec![Label::new("portal", info.address.to_string())];
            self.gauge(&PORTAL_SESSIONS, portal(), p.sessions.len() as f64);
            self.gauge(&PORTAL_OUTSTANDING, portal(), p.load.outstanding as f64);
            self.gauge(&PORTAL_CPU_BUSY, portal(), p.load.cpu_busy);
            self.gauge(&PORTAL_CPU_WAIT, portal(), p.load.cpu_wait);
            if let Some(u) = p.load.link_utilisation() {
                self.gauge(&PORTAL_LINK, portal(), u);
            }
            if let Some(s) = control.portal_stats(info.id) {
                self.counter(
                    &PORTAL_COMMANDS,
                    portal(),
                    s.commands.load(Ordering::Relaxed),
                );
                self.counter(
                    &PORTAL_READ_BYTES,
                    portal(),
                    s.bytes_received.load(Ordering::Relaxed),
                );
                self.counter(
                    &PORTAL_IN_PLACE_BYTES,
                    portal(),
                    s.bytes_received_in_place.load(Ordering::Relaxed),
                );
                self.counter(
                    &PORTAL_WRITTEN_BYTES,
                    portal(),
                    s.bytes_sent.load(Ordering::Relaxed),
                );
            }
        }
        for t in control.target_totals() {
            let target = || vec![Label::new("target", t.target.clone())];
            self.gauge(&TARGET_SESSIONS, target(), t.sessions as f64);
            self.counter(&TARGET_COMMANDS, target(), t.counters.commands);
            self.counter(&TARGET_READ_BYTES, target(), t.counters.bytes_received);
            self.counter(&TARGET_WRITTEN_BYTES, target(), t.counters.bytes_sent);
        }
        for (target, table) in control.served_luns().iter() {
            let mut sum = table.unaddressed().figures();
            for lun in table.luns() {
                let Some(unit) = table.unit(lun) else {
                    continue;
                };
                let f = unit.statistics().figures();
                sum = sum.plus(&f);
                let labels = || {
                    vec![
                        Label::new("target", target.clone()),
                        Label::new("lun", lun.to_string()),
                    ]
                };
                self.counter(&LUN_COMMANDS, labels(), f.commands);
                self.counter(&LUN_READ_BYTES, labels(), f.read_bytes);
                self.counter(&LUN_WRITTEN_BYTES, labels(), f.written_bytes);
                for status in scsi::ErrorStatus::ALL {
                    let mut l = labels();
                    l.push(Label::new("status", status.name()));
                    self.counter(&LUN_ERRORS, l, f.errors_with(status));
                }
            }
            for status in scsi::ErrorStatus::ALL {
                let l = vec![
                    Label::new("target", target.clone()),
                    Label::new("status", status.name()),
                ];
                self.counter(&TARGET_ERRORS, l, sum.errors_with(status));
            }
        }
        let counts = control.event_counts();
        let count = |kind: &str| {
            counts
                .iter()
                .find(|(k, _)| *k == kind)
                .map_or(0, |(_, n)| *n)
        };
        let logins = &control.logins;
        for (result, n) in [
            ("accepted", count("login")),
            ("redirected", count("redirected")),
            (
                "authentication_failed",
                logins.authentication_failed.load(Ordering::Relaxed),
            ),
            (
                "authorization_failed",
                logins.authorization_failed.load(Ordering::Relaxed),
            ),
            ("not_found", logins.not_found.load(Ordering::Relaxed)),
            ("other_failed", logins.other_failed.load(Ordering::Relaxed)),
        ] {
            self.counter(&LOGINS, vec![Label::new("result", result)], n);
        }
        for kind in BALANCER_KINDS {
            let action = kind.replace('-', "_");
            self.counter(
                &BALANCER_ACTIONS,
                vec![Label::new("action", action)],
                count(kind),
            );
        }
        self.counter(&BALANCER_MOVES, Vec::new(), count("logout-requested"));
        for (kind, n) in &counts {
            self.counter(
                &EVENTS,
                vec![Label::new("kind", kind.replace('-', "_"))],
                *n,
            );
        }
        let mut out = self.handle.render();
        let histograms: Vec<(String, LatencySnapshot)> = control
            .portals()
            .iter()
            .filter_map(|p| {
                let s = control.portal_stats(p.id)?;
                Some((p.address.to_string(), s.latency.snapshot()))
            })
            .collect();
        render_histogram(&mut out, &PORTAL_LATENCY, "portal", &histograms);
        out
    }
}

/// Appends one histogram family with a label `label` per series, in the text format.
fn render_histogram(
    out: &mut String,
    f: &Family,
    label: &str,
    series: &[(String, LatencySnapshot)],
) {
    if series.is_empty() {
        return;
    }
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
    let _ = writeln!(out, "# TYPE {} histogram", f.name);
    for (value, s) in series {
        let value = escape_label(value);
        for (bound, n) in LATENCY_BUCKETS_SECONDS.iter().zip(&s.cumulative) {
            let _ = writeln!(
                out,
                "{}_bucket{{{label}=\"{value}\",le=\"{bound}\"}} {n}",
                f.name
            );
        }
        let _ = writeln!(
            out,
            "{}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {}",
            f.name, s.count
        );
        let _ = writeln!(
            out,
            "{}_sum{{{label}=\"{value}\"}} {}",
            f.name, s.sum_seconds
        );
        let _ = writeln!(out, "{}_count{{{label}=\"{value}\"}} {}", f.name, s.count);
    }
}

/// A label value as the text format writes it: backslash, double quote and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// The `/metrics` route over a control plane, with a recorder of its own.
pub fn route<S: Clone + Send + Sync + 'static>(control: Arc<Control>) -> MethodRouter<S> {
    let state = (control, Arc::new(TargetMetrics::new()));
    get(metrics).with_state(state)
}

async fn metrics(
    State((control, m)): State<(Arc<Control>, Arc<TargetMetrics>)>,
) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], m.render(&control))
}

#[cfg(test)]
mod tests {
    use super::*;
    use balancer::PortalId;
    use tokio::sync::mpsc;

    #[test]
    fn latency_buckets_are_cumulative_with_the_bound_inclusive() {
        let h = LatencyHistogram::default();
        h.record(50, 2); // at the first bound: in it
        h.record(51, 1);
        h.record(20_000_000, 3); // above every bound
        let s = h.snapshot();
        assert_eq!(s.cumulative[0], 2);
        assert_eq!(s.cumulative[1], 3);
        assert_eq!(s.cumulative[15], 3);
        assert_eq!(s.count, 6);
        assert!((s.sum_seconds - (100.0 + 51.0 + 60_000_000.0) / 1e6).abs() < 1e-9);
        for (us, secs) in BOUNDS_US.iter().zip(LATENCY_BUCKETS_SECONDS) {
            assert_eq!(*us as f64 / 1e6, secs);
        }
    }

    #[test]
    fn renders_portals_targets_logins_and_the_balancer() {
        let c = Control::new(
            crate::control::two_portals(),
            vec!["iqn.t1".into()],
            None,
            None,
        );
        let (tx, _rx) = mpsc::unbounded_channel();
        let (id, stats) = c.session_started(PortalId(1), "iqn.i1", "iqn.t1", tx);
        for _ in 0..3 {
            stats.command_done();
        }
        c.session_ended(id, "logout");
        let (tx, _rx2) = mpsc::unbounded_channel();
        let (_id, stats) = c.session_started(PortalId(1), "iqn.i1", "iqn.t1", tx);
        stats.command_done();
        let p1 = c.portal_stats(PortalId(1)).unwrap();
        p1.commands_answered(120, 4);
        p1.received(4096);
        LoginCounters::count(&c.logins.authentication_failed);
        c.logins.refused(iscsi_proto::login::LoginStatus::NOT_FOUND);
        c.logins
            .refused(iscsi_proto::login::LoginStatus::TOO_MANY_CONNECTIONS);
        c.place("iqn.i2", "iqn.t1", PortalId(0));
        let _ = c.login_decision(PortalId(1), "iqn.i2", "iqn.t1");
        // LUN 0 of iqn.t1: a 1 KiB read, a 512-byte write, a read past the end, and a command
        // for LUN 9, which the target does not have.
        let set = crate::target_set::tests::target_set_of_control(Arc::new(c), "iqn.t1", 64);
        let luns = set.served().targets["iqn.t1"].luns.clone();
        let run = |cdb: &[u8], lun: u16, data_out: &[u8]| {
            let task = scsi::ScsiTask {
                cdb,
                lun: scsi::encode_lun(lun).unwrap(),
                expected_data_transfer_length: 1024,
                tpgt: 1,
                nexus: 1,
            };
            let mut data_in = bytes::BytesMut::new();
            luns.execute_transfer(&task, !data_out.is_empty(), data_out, &mut data_in)
        };
        run(&[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0], 0, &[]);
        run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], 0, &[7; 512]);
        run(&[0x28, 0, 0, 0, 1, 0, 0, 0, 1, 0], 0, &[]);
        run(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], 9, &[]);
        let c = set.control.clone();
        let text = TargetMetrics::new().render(&c);
        // Every family rendered is described.
        for l in text.lines() {
            if let Some(name) = l.strip_prefix("# TYPE ").and_then(|r| r.split(' ').next()) {
                let help = format!("# HELP {name} ");
                assert!(text.contains(&help), "{name} has no help text:\n{text}");
            }
        }
        for line in [
            "# TYPE portshift_target_portal_sessions gauge",
            "portshift_target_portal_sessions{portal=\"127.0.0.2:3260\"} 1",
            "portshift_target_portal_sessions{portal=\"127.0.0.1:3260\"} 0",
            "portshift_target_portal_commands_total{portal=\"127.0.0.2:3260\"} 4",
            "portshift_target_portal_received_bytes_total{portal=\"127.0.0.2:3260\"} 4096",
            // The ended session's 3 commands still count.
            "portshift_target_commands_total{target=\"iqn.t1\"} 4",
            "portshift_target_sessions{target=\"iqn.t1\"} 1",
            "portshift_target_logins_total{result=\"accepted\"} 2",
            "portshift_target_logins_total{result=\"redirected\"} 1",
            "portshift_target_logins_total{result=\"authentication_failed\"} 1",
            "portshift_target_logins_total{result=\"not_found\"} 1",
            "portshift_target_logins_total{result=\"other_failed\"} 1",
            "portshift_target_logins_total{result=\"authorization_failed\"} 0",
            "portshift_target_balancer_moves_total 0",
            "portshift_target_lun_commands_total{target=\"iqn.t1\",lun=\"0\"} 3",
            "portshift_target_lun_read_bytes_total{target=\"iqn.t1\",lun=\"0\"} 1024",
            "portshift_target_lun_written_bytes_total{target=\"iqn.t1\",lun=\"0\"} 512",
            "portshift_target_lun_errors_total{target=\"iqn.t1\",lun=\"0\",status=\"check_condition\"} 1",
            "portshift_target_lun_errors_total{target=\"iqn.t1\",lun=\"0\",status=\"busy\"} 0",
            // The LUN 0 read past the end and the command for LUN 9.
            "portshift_target_errors_total{target=\"iqn.t1\",status=\"check_condition\"} 2",
            "# TYPE portshift_target_portal_command_duration_seconds histogram",
            "portshift_target_portal_command_duration_seconds_bucket{portal=\"127.0.0.2:3260\",le=\"0.00025\"} 4",
            "portshift_target_portal_command_duration_seconds_bucket{portal=\"127.0.0.2:3260\",le=\"0.0001\"} 0",
            "portshift_target_portal_command_duration_seconds_count{portal=\"127.0.0.2:3260\"} 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
