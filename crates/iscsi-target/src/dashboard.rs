//! The live dashboard at `GET /` of the admin endpoint: one self-contained page (HTML, CSS and
//! JavaScript built into the binary from `assets/`; it fetches nothing but its own feed) that
//! draws, per portal, each balance metric over the last minutes with its HIGH and LOW lines and
//! the moves marked, the configuration table (patent FIG. 2), the iSNS registrations (FIG. 3)
//! and the event log with each decision's reason and figures.
//!
//! The page polls `GET /dashboard.json` every second. The feed is the same
//! [`balancer::AdminSnapshot`] as `GET /status`, plus a bounded history of every portal's load
//! under every [`Metric`], sampled once a second by a task that lives as long as the router
//! (so a page opened during a rebalance already shows the minutes before it).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, extract::State, routing::get};
use balancer::{AdminSnapshot, Metric};
use serde::Serialize;

use crate::control::Control;

/// How many samples the history keeps: five minutes at one a second.
pub const HISTORY_LEN: usize = 300;
/// How often the history is sampled (and the page polls).
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Two samples closer than this are one: a request for the feed samples too, and must not
/// crowd the history when the task just did.
const MIN_SAMPLE_GAP_MS: u64 = 900;

const INDEX_HTML: &str = include_str!("../assets/dashboard.html");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");

/// The page may load only its own script, style and feed (no CDN, no external fetch), and no
/// inline script runs: every name on it comes from the network and is written as text.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Every portal's load under every metric at one time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `loads[portal][metric]`: portals in table order, metrics in [`Metric::ALL`] order;
    /// `None` when not measured (the bandwidth of a link of unknown capacity).
    pub loads: Vec<Vec<Option<f64>>>,
}

impl Sample {
    /// The loads in `snap`'s configuration table, at `at_ms`.
    pub fn of(snap: &AdminSnapshot, at_ms: u64) -> Sample {
        let loads = snap
            .table
            .portals
            .iter()
            .map(|row| {
                Metric::ALL
                    .iter()
                    // An empty sum is -0.0; JSON readers would show "-0".
                    .map(|m| m.load(row).map(|v| v + 0.0))
                    .collect()
            })
            .collect();
        Sample { at_ms, loads }
    }
}

/// The bounded history, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Adds `s` unless the newest sample is less than `MIN_SAMPLE_GAP_MS` older; drops the
    /// oldest beyond [`HISTORY_LEN`].
    pub fn push(&mut self, s: Sample) {
        if let Some(last) = self.samples.back()
            && s.at_ms < last.at_ms.saturating_add(MIN_SAMPLE_GAP_MS)
        {
            return;
        }
        if self.samples.len() == HISTORY_LEN {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    /// The samples taken after `since_ms`, oldest first.
    pub fn since(&self, since_ms: u64) -> Vec<Sample> {
        self.samples
            .iter()
            .filter(|s| s.at_ms > since_ms)
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// What `GET /dashboard.json` answers.
#[derive(Debug, Serialize)]
pub struct Feed {
    /// The metric of each column of [`Sample::loads`].
    pub metrics: Vec<&'static str>,
    /// Whether each of those metrics is a fraction (shown as a percentage).
    pub fractions: Vec<bool>,
    /// The samples after the `since` query parameter (all of them without it).
    pub history: Vec<Sample>,
    /// The loads in `status` (the history's newest sample may be up to a second older).
    pub now: Sample,
    /// The same document as `GET /status`.
    pub status: AdminSnapshot,
}

struct Dashboard {
    control: Arc<Control>,
    history: Mutex<History>,
}

impl Dashboard {
    /// Takes a snapshot and records its loads in the history; returns both.
    fn sample(&self) -> (AdminSnapshot, Sample) {
        let snap = self.control.snapshot();
        let s = Sample::of(&snap, balancer::clock::unix_ms());
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(s.clone());
        (snap, s)
    }
}

/// The dashboard's routes (`/`, its assets and its feed) over `control`. When called inside a
/// tokio runtime it also starts the sampling task, which ends once the router is dropped.
pub fn router<S: Clone + Send + Sync + 'static>(control: Arc<Control>) -> Router<S> {
    let dash = Arc::new(Dashboard {
        control,
        history: Mutex::new(History::default()),
    });
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(sample_every_second(Arc::downgrade(&dash)));
    }
    Router::new()
        .route("/", get(index))
        .route("/dashboard.css", get(css))
        .route("/dashboard.js", get(js))
        .route("/dashboard.json", get(feed))
        .with_state(dash)
}

async fn sample_every_second(dash: Weak<Dashboard>) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(d) = dash.upgrade() else { return };
        // Control::snapshot holds the control plane's lock briefly, as `GET /status` does.
        d.sample();
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}

/// The `since` query parameter (milliseconds), 0 when absent or not a number.
fn since_ms(uri: &Uri) -> u64 {
    uri.query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("since="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn feed(State(d): State<Arc<Dashboard>>, uri: Uri) -> Json<Feed> {
    let (status, now) = d.sample();
    let history = d
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .since(since_ms(&uri));
    Json(Feed {
        metrics: Metric::ALL.iter().map(|m| m.name()).collect(),
        fractions: Metric::ALL.iter().map(|m| m.is_fraction()).collect(),
        history,
        now,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn sample(at_ms: u64) -> Sample {
        Sample {
            at_ms,
            loads: vec![vec![Some(1.0), Some(2.0), None, Some(0.5)]],
        }
    }

    /// The history keeps at most HISTORY_LEN samples, the newest, and drops one taken too
    /// soon after the previous.
    #[test]
    fn the_history_is_bounded_and_spaced() {
        let mut h = History::default();
        for i in 0..(HISTORY_LEN as u64 + 50) {
            h.push(sample(1_000 * i));
            h.push(sample(1_000 * i + 10));
        }
        assert_eq!(h.len(), HISTORY_LEN);
        let all = h.since(0);
        assert_eq!(all.first().map(|s| s.at_ms), Some(50_000));
        assert_eq!(
            all.last().map(|s| s.at_ms),
            Some(1_000 * (HISTORY_LEN as u64 + 49))
        );
        assert!(all.windows(2).all(|w| w[1].at_ms - w[0].at_ms == 1_000));
        assert_eq!(h.since(all[HISTORY_LEN - 3].at_ms).len(), 2);
    }

    #[test]
    fn since_is_read_from_the_query() {
        let u = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(since_ms(&u("/dashboard.json?since=1234")), 1234);
        assert_eq!(since_ms(&u("/dashboard.json?x=1&since=7")), 7);
        assert_eq!(since_ms(&u("/dashboard.json")), 0);
        assert_eq!(since_ms(&u("/dashboard.json?since=-1")), 0);
        assert_eq!(
            since_ms(&u("/dashboard.json?since=99999999999999999999999")),
            0
        );
    }

    proptest::proptest! {
        /// Any query string: `since` is its number when it is one, else 0; never a panic.
        #[test]
        fn since_never_panics(q in "[ -~]{0,64}", n in proptest::num::u64::ANY) {
            let uri = format!("/dashboard.json?{}", q.replace([' ', '#'], ""));
            if let Ok(u) = uri.parse::<Uri>() {
                let _ = since_ms(&u);
            }
            let u = format!("/dashboard.json?a=b&since={n}").parse::<Uri>().unwrap();
            proptest::prop_assert_eq!(since_ms(&u), n);
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// `GET /` is the page; everything it loads (`src=`/`href=`) is served by the same
    /// endpoint under a relative path (nothing from another host), with the content security
    /// policy that forbids anything else; the feed carries the status document and a history
    /// sampled every second, portals by metrics.
    #[tokio::test]
    async fn the_page_loads_only_its_own_assets_and_the_feed_has_history() {
        let control = Arc::new(Control::new(
            crate::control::two_portals(),
            vec!["iqn.2024-01.test:t".into()],
            None,
            None,
        ));
        let (addr, task) = crate::admin::serve("127.0.0.1:0".parse().unwrap(), control)
            .await
            .unwrap();
        let page = get(addr, "/").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("text/html"), "{page}");
        assert!(page.contains("content-security-policy: default-src 'none'"));
        let refs: Vec<&str> = page
            .split(['"', '\''])
            .zip(page.split(['"', '\'']).skip(1))
            .filter(|(before, _)| before.ends_with("src=") || before.ends_with("href="))
            .map(|(_, r)| r)
            .collect();
        assert_eq!(refs, ["dashboard.css", "dashboard.js"]);
        for r in refs {
            let asset = get(addr, &format!("/{r}")).await;
            assert!(asset.starts_with("HTTP/1.1 200"), "{r}: {asset}");
            assert!(!asset.contains("https://"), "{r} loads from elsewhere");
            assert!(!asset.contains("@import"), "{r} imports");
        }
        // Two samples at least a second apart.
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let feed = get(addr, "/dashboard.json").await;
        let body = feed.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["metrics"],
            serde_json::json!(["sessions", "iops", "bandwidth", "cpu"])
        );
        assert_eq!(
            v["fractions"],
            serde_json::json!([false, false, true, true])
        );
        let history = v["history"].as_array().unwrap();
        assert!(history.len() >= 2, "{body}");
        for s in history {
            let loads = s["loads"].as_array().unwrap();
            assert_eq!(loads.len(), 2, "one row per portal: {s}");
            assert!(
                loads.iter().all(|p| p.as_array().unwrap().len() == 4),
                "{s}"
            );
            assert_eq!(s["loads"][0][0], serde_json::json!(0.0), "no sessions: {s}");
        }
        assert_eq!(v["status"]["table"]["portals"].as_array().unwrap().len(), 2);
        assert_eq!(v["now"]["loads"].as_array().unwrap().len(), 2, "{body}");
        let last = history.last().unwrap()["at_ms"].as_u64().unwrap();
        let newer = get(addr, &format!("/dashboard.json?since={last}")).await;
        let body = newer.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            v["history"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["at_ms"].as_u64().unwrap() > last),
            "{body}"
        );
        task.abort();
    }
}
