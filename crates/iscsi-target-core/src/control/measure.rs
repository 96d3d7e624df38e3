//! Load figures from counters, sans-IO: the shells count (bytes, commands, thread CPU time,
//! run-queue wait, a service-time histogram per window) and read the clock; this module turns
//! those readings into the smoothed figures of the configuration table.
//!
//! Smoothing is [`balancer::smooth`]'s bias-corrected exponentially weighted moving average,
//! time constant [`SMOOTHING_TAU_MS`] (5 s; `--smoothing` sets another).

use balancer::PortalLoad;

pub use balancer::smooth::{Ewma, SMOOTHING_TAU_MS, ewma_alpha};

/// A running total turned into a smoothed rate per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateMeter {
    total: u64,
    rate: Ewma,
}

impl RateMeter {
    /// A meter smoothing with time constant `tau_ms`.
    pub fn new(tau_ms: u64) -> Self {
        RateMeter {
            total: 0,
            rate: Ewma::new(tau_ms),
        }
    }

    /// Folds in the window that brought the total from its last value to `total`, `dt_ms`
    /// long; returns the smoothed rate (units per second).
    pub fn update(&mut self, total: u64, dt_ms: u64) -> f64 {
        let done = total.saturating_sub(self.total);
        self.total = total;
        if dt_ms == 0 {
            return self.rate.value();
        }
        self.rate.update(done as f64 * 1000.0 / dt_ms as f64, dt_ms)
    }

    /// The smoothed rate.
    pub fn value(&self) -> f64 {
        self.rate.value()
    }

    /// Sets the total without measuring a window (a baseline).
    pub fn rebase(&mut self, total: u64) {
        self.total = total;
    }
}

/// Service times of the commands a portal answered during one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServiceWindow {
    /// Commands answered in the window.
    pub commands: u64,
    /// Their median and 99th percentile service time, in microseconds.
    pub p50_us: f64,
    pub p99_us: f64,
}

/// What a portal's shell reads at the end of each of its windows (its 1 s tick).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PortalCounters {
    /// When the reading was taken, in milliseconds from any fixed origin (only differences
    /// between readings of the same portal are used).
    pub at_ms: u64,
    /// Bytes written to and read from the portal's sockets, in all.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// CPU time the portal's processor thread ran, in all, in nanoseconds (None if unknown).
    pub cpu_ns: Option<u64>,
    /// Time the processor thread was runnable but waiting for a CPU, in all, in nanoseconds
    /// (`/proc/.../schedstat`, None if unknown).
    pub wait_ns: Option<u64>,
    /// The commands answered since the previous reading.
    pub service: ServiceWindow,
}

/// Turns a portal's successive [`PortalCounters`] into its smoothed [`PortalLoad`] (capacity
/// and outstanding commands are filled in by the control plane).
#[derive(Debug, Clone, Default)]
pub struct PortalMeter {
    last: Option<PortalCounters>,
    sent: RateMeter,
    received: RateMeter,
    busy: Ewma,
    wait: Ewma,
    p50: Ewma,
    p99: Ewma,
    load: PortalLoad,
}

impl PortalMeter {
    /// A meter whose figures are smoothed with time constant `tau_ms`.
    pub fn new(tau_ms: u64) -> Self {
        PortalMeter {
            sent: RateMeter::new(tau_ms),
            received: RateMeter::new(tau_ms),
            busy: Ewma::new(tau_ms),
            wait: Ewma::new(tau_ms),
            p50: Ewma::new(tau_ms),
            p99: Ewma::new(tau_ms),
            ..PortalMeter::default()
        }
    }

    /// Folds in a new reading and returns the load. The first reading is only a baseline;
    /// a reading taken less than `MIN_SAMPLE_WINDOW_MS` after the previous one is ignored.
    /// A window in which no command was answered counts as a service time of 0, so the
    /// figures of a portal that went quiet fall with its traffic.
    pub fn update(&mut self, c: PortalCounters) -> PortalLoad {
        let Some(last) = self.last else {
            self.sent.rebase(c.bytes_sent);
            self.received.rebase(c.bytes_received);
            self.last = Some(c);
            return self.load.clone();
        };
        let dt = c.at_ms.saturating_sub(last.at_ms);
        if dt < super::MIN_SAMPLE_WINDOW_MS {
            return self.load.clone();
        }
        let fraction = |now: Option<u64>, before: Option<u64>| match (now, before) {
            (Some(n), Some(b)) => Some((n.saturating_sub(b) as f64 / (dt as f64 * 1e6)).min(1.0)),
            _ => None,
        };
        self.load.sent_bps = self.sent.update(c.bytes_sent, dt);
        self.load.received_bps = self.received.update(c.bytes_received, dt);
        if let Some(b) = fraction(c.cpu_ns, last.cpu_ns) {
            self.load.cpu_busy = self.busy.update(b, dt);
        }
        if let Some(w) = fraction(c.wait_ns, last.wait_ns) {
            self.load.cpu_wait = self.wait.update(w, dt);
        }
        let (p50, p99) = if c.service.commands > 0 {
            (c.service.p50_us, c.service.p99_us)
        } else {
            (0.0, 0.0)
        };
        self.load.service_p50_us = self.p50.update(p50, dt);
        self.load.service_p99_us = self.p99.update(p99, dt);
        self.last = Some(c);
        self.load.clone()
    }

    /// The load as of the last reading.
    pub fn load(&self) -> &PortalLoad {
        &self.load
    }
}

/// Bytes of data that cost a portal processor about as much as handling one command (PDU
/// decoding, SCSI execution, the response): the unit [`work`] weighs bytes in.
pub const WORK_BYTES_PER_COMMAND: f64 = 16.0 * 1024.0;

/// A session's work for its portal's processor, in command-equivalents per second:
/// `commands/s + (bytes sent + received)/s / WORK_BYTES_PER_COMMAND`. A session's
/// `cpu_share` is its work over the work of every session of the portal.
pub fn work(commands_per_s: f64, bytes_per_s: f64) -> f64 {
    commands_per_s + bytes_per_s / WORK_BYTES_PER_COMMAND
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn a_rate_comes_from_the_totals() {
        let mut r = RateMeter::default();
        r.rebase(1_000);
        assert!(close(r.update(3_000, 500), 4_000.0));
        assert!(close(r.update(5_000, 500), 4_000.0));
        // A zero-length window changes nothing.
        assert!(close(r.update(9_000, 0), 4_000.0));
    }

    #[test]
    fn a_portal_meter_measures_bytes_cpu_and_service_times() {
        let mut m = PortalMeter::default();
        let mut c = PortalCounters {
            at_ms: 10_000,
            bytes_sent: 5_000_000,
            bytes_received: 1_000,
            cpu_ns: Some(7_000_000_000),
            wait_ns: Some(1_000_000_000),
            service: ServiceWindow::default(),
        };
        assert_eq!(m.update(c), PortalLoad::default(), "a baseline only");
        c.at_ms += 1_000;
        c.bytes_sent += 40_000_000;
        c.bytes_received += 2_000_000;
        c.cpu_ns = c.cpu_ns.map(|n| n + 300_000_000);
        c.wait_ns = c.wait_ns.map(|n| n + 50_000_000);
        c.service = ServiceWindow {
            commands: 40,
            p50_us: 250.0,
            p99_us: 900.0,
        };
        let l = m.update(c);
        assert!(
            close(l.sent_bps, 40e6) && close(l.received_bps, 2e6),
            "{l:?}"
        );
        assert!(close(l.cpu_busy, 0.3) && close(l.cpu_wait, 0.05), "{l:?}");
        assert!(close(l.service_p50_us, 250.0) && close(l.service_p99_us, 900.0));
        // Too soon after: ignored.
        let mut soon = c;
        soon.at_ms += 10;
        soon.bytes_sent += 1 << 30;
        assert_eq!(m.update(soon), l);
        // A quiet second: every figure falls, service times towards 0.
        c.at_ms += 1_000;
        c.cpu_ns = c.cpu_ns.map(|n| n + 1_000);
        c.service = ServiceWindow::default();
        let q = m.update(c);
        assert!(q.sent_bps < l.sent_bps && q.sent_bps > 0.0);
        assert!(q.service_p99_us < 900.0 && q.service_p99_us > 0.0);
        assert!(q.cpu_busy < 0.3);
        // Without a CPU reading the processor figures stay as they were.
        c.at_ms += 1_000;
        c.cpu_ns = None;
        assert_eq!(m.update(c).cpu_busy, q.cpu_busy);
    }

    #[test]
    fn a_meter_follows_its_own_time_constant() {
        // After a step from 0 to 1 MB/s held for one second, a meter of τ = 1 s is 63% of the
        // way (of what the 4 s at 0 before left), one of τ = 5 s only 18%.
        let step = |tau_ms| {
            let mut m = PortalMeter::new(tau_ms);
            let mut c = PortalCounters {
                at_ms: 0,
                ..Default::default()
            };
            m.update(c);
            for _ in 0..40 {
                c.at_ms += 1_000;
                m.update(c);
            }
            c.at_ms += 1_000;
            c.bytes_sent += 1_000_000;
            m.update(c).sent_bps
        };
        // (Within 0.1%: after 40 s the bias correction of τ = 5 s is not quite 1 yet.)
        let near = |a: f64, b: f64| (a - b).abs() <= 1e-3 * b;
        assert!(near(step(1_000), 1e6 * ewma_alpha(1_000, 1_000)));
        assert!(near(step(5_000), 1e6 * ewma_alpha(1_000, 5_000)));
        assert!(step(1_000) > 3.0 * step(5_000));
    }

    #[test]
    fn work_weighs_bytes_against_commands() {
        assert_eq!(work(100.0, 0.0), 100.0);
        assert_eq!(work(0.0, WORK_BYTES_PER_COMMAND * 10.0), 10.0);
    }
}
