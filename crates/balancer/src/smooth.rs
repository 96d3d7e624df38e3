//! Smoothing of measured load figures: an exponentially weighted moving average of time
//! constant [`SMOOTHING_TAU_MS`] (5 s unless `--smoothing` sets another). A window of `dt`
//! folds in with weight `1 - exp(-dt / tau)`, so windows of any length weigh by their duration
//! and a step change is 63% through after one time constant, 95% after three. The average is
//! bias-corrected ([`Ewma`]): until a few time constants have passed it is the weighted mean of
//! the windows seen, not pulled towards a made-up 0. The target's meters and the fleet
//! simulator's use the same [`Ewma`].

/// Time constant of the target's smoothing of its load figures, in milliseconds: a session
/// that moved is still partly counted on the portal it left, and not yet fully on the one it
/// joined, for a few times this long.
pub const SMOOTHING_TAU_MS: u64 = 5_000;

/// Weight a window of `dt_ms` gets in an average of time constant `tau_ms`: `1 - exp(-dt/tau)`.
pub fn ewma_alpha(dt_ms: u64, tau_ms: u64) -> f64 {
    if tau_ms == 0 {
        return 1.0;
    }
    1.0 - (-(dt_ms as f64) / tau_ms as f64).exp()
}

/// A bias-corrected exponentially weighted moving average over windows of any length.
///
/// `raw` is the plain average started from 0, `weight` the same average of a constant 1: the
/// estimate `raw / weight` is the weighted mean of the windows folded in so far, and becomes
/// the plain moving average once the weight is close to 1 (after a few time constants).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ewma {
    tau_ms: u64,
    raw: f64,
    weight: f64,
}

impl Default for Ewma {
    fn default() -> Self {
        Ewma::new(SMOOTHING_TAU_MS)
    }
}

impl Ewma {
    /// An empty average of time constant `tau_ms`.
    pub fn new(tau_ms: u64) -> Self {
        Ewma {
            tau_ms,
            raw: 0.0,
            weight: 0.0,
        }
    }

    /// Folds in `value`, measured over a window of `dt_ms`; returns the new estimate.
    pub fn update(&mut self, value: f64, dt_ms: u64) -> f64 {
        self.fold(value, ewma_alpha(dt_ms, self.tau_ms))
    }

    /// Folds in `value` with weight `alpha` (`ewma_alpha` of its window, worked out once by a
    /// caller whose windows are all alike); returns the new estimate.
    pub fn fold(&mut self, value: f64, alpha: f64) -> f64 {
        self.raw += alpha * (value - self.raw);
        self.weight += alpha * (1.0 - self.weight);
        self.value()
    }

    /// The estimate: 0 before any window.
    pub fn value(&self) -> f64 {
        if self.weight > 0.0 {
            self.raw / self.weight
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn alpha_follows_the_time_constant() {
        assert!(close(ewma_alpha(5_000, 5_000), 1.0 - (-1.0f64).exp()));
        assert!(close(ewma_alpha(1_000, 5_000), 1.0 - (-0.2f64).exp()));
        assert_eq!(ewma_alpha(0, 5_000), 0.0);
        assert_eq!(ewma_alpha(10, 0), 1.0);
    }

    #[test]
    fn the_average_starts_at_the_first_window_and_follows_a_step_with_tau() {
        let mut e = Ewma::new(5_000);
        assert_eq!(e.value(), 0.0);
        // Bias-corrected: a constant input is the estimate from the first window on.
        assert!(close(e.update(100.0, 1_000), 100.0));
        assert!(close(e.update(100.0, 1_000), 100.0));
        // After many time constants at 100, a step to 200: 63% of the way after tau, in
        // windows of any length.
        for _ in 0..100 {
            e.update(100.0, 1_000);
        }
        e.update(200.0, 2_000);
        e.update(200.0, 3_000);
        let after_tau = e.value();
        assert!((after_tau - (100.0 + 100.0 * (1.0 - (-1.0f64).exp()))).abs() < 0.01);
        // Windows of different lengths weigh by their duration.
        let mut a = Ewma::new(5_000);
        let mut b = Ewma::new(5_000);
        a.update(1.0, 1_000);
        b.update(1.0, 1_000);
        a.update(3.0, 1_000);
        a.update(3.0, 1_000);
        b.update(3.0, 2_000);
        assert!(close(a.value(), b.value()));
        // Folding with a precomputed weight is the same as updating with the window.
        let mut c = Ewma::new(5_000);
        c.fold(1.0, ewma_alpha(1_000, 5_000));
        c.fold(3.0, ewma_alpha(2_000, 5_000));
        assert!(close(c.value(), b.value()));
    }
}
