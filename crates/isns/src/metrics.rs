//! The iSNS server's figures for Prometheus (`portshift isns --admin`, [`crate::admin`],
//! docs/metrics.md): requests by function (RFC 4171 §5.1.3) and status (§5.7.3), their
//! latency, the registered objects by kind (§4), and the SCNs (§5.6.5.8) and ESIs
//! (§5.6.5.13) sent.
//!
//! Each server has its own `metrics-exporter-prometheus` recorder (never the process-global
//! one: tests run several servers in one process). Requests are counted as they are
//! answered; the objects are counted from the registry at each scrape.

use std::sync::Arc;
use std::time::Duration;

use isns_proto::tag::ObjectType;
use isns_proto::{FunctionId, Status};
use metrics::{Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::registry::Registry;

/// Upper bounds of the request latency buckets, in seconds (explicit, so that histograms of
/// several servers aggregate).
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// The media type of the text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const REQUESTS: &str = "portshift_isns_requests_total";
const DURATION: &str = "portshift_isns_request_duration_seconds";
const OBJECTS: &str = "portshift_isns_objects";
const SCNS: &str = "portshift_isns_scns_sent_total";
const ESIS: &str = "portshift_isns_esis_sent_total";
const ESI_MISSES: &str = "portshift_isns_esi_unanswered_total";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// One iSNS server's recorder.
pub struct IsnsMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl std::fmt::Debug for IsnsMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsnsMetrics").finish_non_exhaustive()
    }
}

impl Default for IsnsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl IsnsMetrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DURATION.into()), &LATENCY_BUCKETS_SECONDS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let r = &recorder;
        r.describe_counter(
            REQUESTS.into(),
            None,
            "iSNSP requests answered, by function (RFC 4171 §5.1.3) and response status code (§5.7.3; \"none\": no response).".into(),
        );
        r.describe_histogram(
            DURATION.into(),
            Some(Unit::Seconds),
            "Time from a request's decoding to its response, by function (changes include their durable commit).".into(),
        );
        r.describe_gauge(
            OBJECTS.into(),
            None,
            "Registered objects by kind: entity, portal, iscsi_node, portal_group, discovery_domain, discovery_domain_set.".into(),
        );
        r.describe_counter(
            SCNS.into(),
            None,
            "State Change Notifications sent (§5.6.5.8).".into(),
        );
        r.describe_counter(
            ESIS.into(),
            None,
            "Entity Status Inquiries sent (§5.6.5.13).".into(),
        );
        r.describe_counter(
            ESI_MISSES.into(),
            None,
            "Entity Status Inquiries that got no response in time.".into(),
        );
        let m = IsnsMetrics { recorder, handle };
        // Present from the start, so that rate() sees the first one.
        for name in [SCNS, ESIS, ESI_MISSES] {
            m.counter(name, Vec::new()).increment(0);
        }
        m
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> metrics::Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// Counts one request for `function` answered with `status` (None: not answered) after
    /// `elapsed`.
    pub fn request(&self, function: FunctionId, status: Option<Status>, elapsed: Duration) {
        let name = function.name();
        let status: metrics::SharedString = match status {
            Some(s) => s.0.to_string().into(),
            None => "none".into(),
        };
        self.counter(
            REQUESTS,
            vec![Label::new("function", name), Label::new("status", status)],
        )
        .increment(1);
        self.recorder
            .register_histogram(
                &Key::from_parts(DURATION, vec![Label::new("function", name)]),
                &METADATA,
            )
            .record(elapsed.as_secs_f64());
    }

    /// Counts `n` SCN messages sent.
    pub fn scns_sent(&self, n: usize) {
        if n > 0 {
            self.counter(SCNS, Vec::new()).increment(n as u64);
        }
    }

    /// Counts one ESI sent, and whether it went unanswered.
    pub fn esi_sent(&self, answered: bool) {
        self.counter(ESIS, Vec::new()).increment(1);
        if !answered {
            self.counter(ESI_MISSES, Vec::new()).increment(1);
        }
    }

    /// Folds the histogram samples recorded since the last call into their buckets (the
    /// server calls it every few seconds, so that samples do not pile up between scrapes).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The document, with the objects of `registry` counted now.
    pub fn render(&self, registry: &Registry) -> String {
        let mut counts = [0u64; 4];
        for e in registry.entities() {
            for o in std::iter::once(&e.object).chain(&e.children) {
                counts[kind_index(o.kind)] += 1;
            }
        }
        let domains = registry.domains();
        let all = [
            ("entity", counts[0]),
            ("portal", counts[1]),
            ("iscsi_node", counts[2]),
            ("portal_group", counts[3]),
            ("discovery_domain", domains.dds().len() as u64),
            ("discovery_domain_set", domains.sets().len() as u64),
        ];
        for (kind, n) in all {
            self.recorder
                .register_gauge(
                    &Key::from_parts(OBJECTS, vec![Label::new("kind", kind)]),
                    &METADATA,
                )
                .set(n as f64);
        }
        self.handle.render()
    }
}

fn kind_index(k: ObjectType) -> usize {
    match k {
        ObjectType::Entity => 0,
        ObjectType::Portal => 1,
        ObjectType::IscsiNode => 2,
        ObjectType::PortalGroup => 3,
    }
}

/// What the admin endpoint needs of a running server: its metrics and registry.
#[derive(Clone)]
pub struct ServerStats {
    pub(crate) shared: Arc<crate::server::Shared>,
}

impl std::fmt::Debug for ServerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStats").finish_non_exhaustive()
    }
}

impl ServerStats {
    /// The Prometheus document now.
    pub fn render(&self) -> String {
        let reg = crate::server::read(&self.shared.registry);
        self.shared.metrics.render(&reg)
    }

    /// How many objects of each kind are registered now (for `/status`).
    pub fn objects(&self) -> Vec<(ObjectType, usize)> {
        let reg = crate::server::read(&self.shared.registry);
        let mut counts = [0usize; 4];
        for e in reg.entities() {
            for o in std::iter::once(&e.object).chain(&e.children) {
                counts[kind_index(o.kind)] += 1;
            }
        }
        [
            ObjectType::Entity,
            ObjectType::Portal,
            ObjectType::IscsiNode,
            ObjectType::PortalGroup,
        ]
        .into_iter()
        .zip(counts)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_by_function_and_status_with_the_buckets() {
        let m = IsnsMetrics::new();
        m.request(
            FunctionId::DEV_ATTR_REG,
            Some(Status::SUCCESS),
            Duration::from_micros(300),
        );
        m.request(
            FunctionId::DEV_ATTR_REG,
            Some(Status::SUCCESS),
            Duration::from_millis(2),
        );
        m.request(
            FunctionId::DEV_ATTR_QRY,
            Some(Status::SOURCE_UNKNOWN),
            Duration::ZERO,
        );
        m.scns_sent(2);
        m.esi_sent(false);
        let text = m.render(&Registry::new());
        for line in [
            "portshift_isns_requests_total{function=\"DevAttrReg\",status=\"0\"} 2",
            "portshift_isns_requests_total{function=\"DevAttrQry\",status=\"6\"} 1",
            "# TYPE portshift_isns_request_duration_seconds histogram",
            "portshift_isns_request_duration_seconds_bucket{function=\"DevAttrReg\",le=\"0.0005\"} 1",
            "portshift_isns_request_duration_seconds_bucket{function=\"DevAttrReg\",le=\"0.0025\"} 2",
            "portshift_isns_request_duration_seconds_count{function=\"DevAttrReg\"} 2",
            "portshift_isns_objects{kind=\"entity\"} 0",
            "portshift_isns_scns_sent_total 2",
            "portshift_isns_esis_sent_total 1",
            "portshift_isns_esi_unanswered_total 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
