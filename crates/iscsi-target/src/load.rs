//! A portal's load as its processor measures it (the shell half of
//! [`iscsi_target_core::control::measure`]).
//!
//! - Bytes: each connection adds what it read and wrote to its portal's [`PortalStats`] (and
//!   its session's [`crate::control::SessionStats`]): two uncontended atomic additions per
//!   socket read or write, none per command.
//! - Service time: from the read that brought a command's bytes in to the end of the feeding
//!   pass that queued its response (its output is written right after that pass). The shell
//!   reads the clock once per pass and records the pass's commands with one
//!   [`record_service`] into a histogram that belongs to the portal's thread (a
//!   thread-local: one portal per thread, no lock, no atomic).
//! - Processor: on its 1 s tick the portal thread reads its own CPU time
//!   (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`) and run-queue wait
//!   (`/proc/thread-self/schedstat`, second field), takes the window's service-time
//!   percentiles, folds everything into its [`PortalMeter`] and publishes the smoothed
//!   [`PortalLoad`] (one short lock per tick) for the control plane to copy.
//! - A processor held back by a cgroup `cpu` quota (CFS bandwidth control) reads as loaded:
//!   while its group is throttled the thread is still runnable, and the kernel counts that
//!   time as run-queue wait. Measured on Linux 6.18, cgroup v1, quota 15% of one CPU
//!   (`bench/balance.sh e`, BENCHMARKS.md): schedstat run 15% and wait 81% over 5 s while the
//!   group was throttled 56–60% of the time; `cpu_busy` 15% and `cpu_wait` 79–82% in the status
//!   document. So the cpu rule needs no knowledge of the quota.

use std::cell::RefCell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use balancer::PortalLoad;
use hdrhistogram::Histogram;
use iscsi_target_core::control::measure::{PortalCounters, PortalMeter, ServiceWindow};

use crate::metrics::LatencyHistogram;

/// Largest service time recorded, in microseconds (longer ones count as this): 60 s.
const SERVICE_MAX_US: u64 = 60_000_000;

/// What a portal's connections count, and the load its processor last published.
#[derive(Debug, Default)]
pub struct PortalStats {
    /// Bytes written to the portal's sockets.
    pub bytes_sent: AtomicU64,
    /// Bytes read from them.
    pub bytes_received: AtomicU64,
    /// Of those, Data-Out payload bytes read straight into their write's buffer (no copy out
    /// of a read buffer; `Connection::data_out_sink`).
    pub bytes_received_in_place: AtomicU64,
    /// SCSI commands answered through the portal.
    pub commands: AtomicU64,
    /// Their service times ([`crate::metrics`]).
    pub latency: LatencyHistogram,
    published: Mutex<PortalLoad>,
}

impl PortalStats {
    /// Counts `n` bytes written.
    #[inline]
    pub fn sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts `n` bytes read.
    #[inline]
    pub fn received(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts `n` of the bytes read as received in place.
    #[inline]
    pub fn received_in_place(&self, n: usize) {
        self.bytes_received_in_place
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts `n` commands answered in one feeding pass with a service time of `us`
    /// microseconds (three relaxed additions: no lock, no allocation).
    #[inline]
    pub fn commands_answered(&self, us: u64, n: u64) {
        self.commands.fetch_add(n, Ordering::Relaxed);
        self.latency.record(us, n);
    }

    /// The load the portal's processor last published.
    pub fn load(&self) -> PortalLoad {
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publishes the portal's load (its processor does, once per tick).
    pub(crate) fn publish(&self, load: PortalLoad) {
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = load;
    }
}

thread_local! {
    /// Service times of the commands this (portal) thread answered since its last tick, in
    /// microseconds.
    static SERVICE: RefCell<Option<Histogram<u64>>> = const { RefCell::new(None) };
}

/// Records `commands` commands answered with a service time of `us` microseconds, in this
/// thread's histogram.
#[inline]
pub fn record_service(us: u64, commands: u64) {
    SERVICE.with(|h| {
        let mut h = h.borrow_mut();
        let h = h.get_or_insert_with(|| {
            Histogram::new_with_bounds(1, SERVICE_MAX_US, 2).expect("valid histogram bounds")
        });
        h.saturating_record_n(us, commands);
    });
}

/// The service times recorded on this thread since the last call, and a fresh window.
pub fn take_service_window() -> ServiceWindow {
    SERVICE.with(|h| match h.borrow_mut().as_mut() {
        Some(h) if !h.is_empty() => {
            let w = ServiceWindow {
                commands: h.len(),
                p50_us: h.value_at_quantile(0.5) as f64,
                p99_us: h.value_at_quantile(0.99) as f64,
            };
            h.reset();
            w
        }
        _ => ServiceWindow::default(),
    })
}

/// CPU time the calling thread has run, in nanoseconds.
pub fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (r == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// One line of `/proc/.../schedstat` (Documentation/scheduler/sched-stats.rst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedstat {
    /// Time spent on the CPU, in nanoseconds.
    pub run_ns: u64,
    /// Time spent waiting on a run queue, in nanoseconds.
    pub wait_ns: u64,
    /// Time slices run on this CPU.
    pub timeslices: u64,
}

/// Parses a schedstat line: three decimal fields.
pub fn parse_schedstat(s: &str) -> Option<Schedstat> {
    let mut f = s.split_ascii_whitespace().map(|x| x.parse::<u64>().ok());
    let stat = Schedstat {
        run_ns: f.next()??,
        wait_ns: f.next()??,
        timeslices: f.next()??,
    };
    Some(stat)
}

/// The calling thread's schedstat.
pub fn thread_schedstat() -> Option<Schedstat> {
    parse_schedstat(&std::fs::read_to_string("/proc/thread-self/schedstat").ok()?)
}

/// A portal processor's own measurement, run on its thread at each tick.
#[derive(Debug)]
pub struct PortalProbe {
    origin: Instant,
    meter: PortalMeter,
}

impl PortalProbe {
    /// A probe smoothing its figures with time constant `tau_ms`.
    pub fn new(tau_ms: u64) -> Self {
        PortalProbe {
            origin: Instant::now(),
            meter: PortalMeter::new(tau_ms),
        }
    }

    /// Reads this thread's counters, folds them into the smoothed load and publishes it in
    /// `stats`. Call on the portal's thread, about once a second.
    pub fn tick(&mut self, stats: &PortalStats) -> PortalLoad {
        let counters = PortalCounters {
            at_ms: self.origin.elapsed().as_millis() as u64,
            bytes_sent: stats.bytes_sent.load(Ordering::Relaxed),
            bytes_received: stats.bytes_received.load(Ordering::Relaxed),
            cpu_ns: thread_cpu_ns(),
            wait_ns: thread_schedstat().map(|s| s.wait_ns),
            service: take_service_window(),
        };
        let load = self.meter.update(counters);
        stats.publish(load.clone());
        load
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines_are_parsed() {
        assert_eq!(
            parse_schedstat("123456789 4567 89\n"),
            Some(Schedstat {
                run_ns: 123_456_789,
                wait_ns: 4_567,
                timeslices: 89
            })
        );
        assert_eq!(parse_schedstat("1 2"), None);
        assert_eq!(parse_schedstat("1 x 3"), None);
        assert_eq!(parse_schedstat(""), None);
        // This thread's own, from the kernel (its run time is brought up to date only when
        // it is switched out, so a young thread may show 0 yet).
        let s = thread_schedstat().expect("schedstat readable");
        assert!(s.timeslices > 0, "{s:?}");
    }

    #[test]
    fn thread_cpu_time_grows_with_work_on_this_thread_only() {
        let before = thread_cpu_ns().unwrap();
        // Sleeping costs no CPU time...
        std::thread::sleep(std::time::Duration::from_millis(50));
        let slept = thread_cpu_ns().unwrap() - before;
        assert!(slept < 20_000_000, "{slept} ns while sleeping");
        // ...spinning does (bounded in wall time, however busy the machine).
        let start = Instant::now();
        let mut x = 0u64;
        while thread_cpu_ns().unwrap() - before < 30_000_000 {
            assert!(start.elapsed().as_secs() < 10, "the CPU time does not grow");
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        // Another thread's work is not this thread's.
        let mine = thread_cpu_ns().unwrap();
        std::thread::spawn(move || {
            let t = Instant::now();
            while t.elapsed().as_millis() < 100 {
                std::hint::black_box(0u64);
            }
        })
        .join()
        .unwrap();
        assert!(thread_cpu_ns().unwrap() - mine < 20_000_000);
    }

    #[test]
    fn service_times_are_kept_per_thread_and_taken_per_window() {
        assert_eq!(take_service_window(), ServiceWindow::default());
        record_service(100, 98);
        record_service(5_000, 2);
        let w = take_service_window();
        assert_eq!(w.commands, 100);
        assert!((99.0..=101.0).contains(&w.p50_us), "{w:?}");
        assert!((4_950.0..=5_050.0).contains(&w.p99_us), "{w:?}");
        assert_eq!(take_service_window().commands, 0, "a fresh window");
        // Another thread has its own.
        record_service(7, 1);
        std::thread::spawn(|| assert_eq!(take_service_window().commands, 0))
            .join()
            .unwrap();
        assert_eq!(take_service_window().commands, 1);
    }

    #[test]
    fn a_probe_publishes_its_thread_s_load() {
        let stats = PortalStats::default();
        let mut probe = PortalProbe::new(balancer::SMOOTHING_TAU_MS);
        probe.tick(&stats);
        stats.sent(3_000_000);
        stats.received(1_000);
        record_service(200, 10);
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 300 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let load = probe.tick(&stats);
        assert_eq!(stats.load(), load);
        let secs = start.elapsed().as_secs_f64();
        let rate = 3e6 / secs;
        assert!(
            (rate * 0.9..rate * 1.05).contains(&load.sent_bps),
            "{load:?}"
        );
        assert!(load.received_bps > 0.0);
        // Spinning: busy, though maybe not alone on a shared machine.
        assert!(load.cpu_busy > 0.1 && load.cpu_busy <= 1.0, "{load:?}");
        assert!((199.0..=201.0).contains(&load.service_p50_us), "{load:?}");
    }
}
