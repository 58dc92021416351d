//! Sizing the in-flight byte budget to the path.
//!
//! More bytes in flight than the path needs do not move data faster: they wait in
//! buffers — ours, ssh's, and above all sshd's and sftp-server's, whose working set then
//! outgrows the CPU caches. On a fast path (loopback, a LAN) that slows the server side
//! down by 15–20%. A long path, on the other hand, needs its bandwidth-delay product in
//! flight. So the budget follows the path: a few times what the measured throughput
//! moves in one round trip (measured on requests sent with nothing queued before them),
//! never below a floor that keeps a handful of chunks in flight, never above the
//! configured maximum.

use std::time::{Duration, Instant};

/// The budget never goes below this: four full chunks, enough to keep a server busy on any
/// path whose round trip is too short to measure.
pub const MIN_WINDOW: usize = 1 << 20;
/// While every file is small (each one WRITE), the floor drops to this. Small requests
/// cost the server per request, not per byte, so a few hundred of them keep it busy, and
/// more only queue up: OpenSSH's sftp-server reads everything sent to it and grows its input
/// buffer by copying, so a megabyte of queued small requests costs it more time than the
/// requests themselves.
pub const MIN_WINDOW_SMALL: usize = 256 << 10;
/// The floor is this many of the largest small-file WRITEs seen (between the two bounds
/// above).
const FLOOR_REQUESTS: usize = 4;
/// Round trips of data kept in flight: room for the throughput to grow, and for the ssh
/// channel's window to stay full while replies travel back.
const ROUND_TRIPS_IN_FLIGHT: f64 = 3.0;
/// Measuring intervals last this many round trips, and at least [`MIN_INTERVAL`].
const INTERVAL_ROUND_TRIPS: u32 = 4;
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Until the throughput is measured, the budget assumes this rate (bytes/s), about what
/// one ssh channel moves on current hardware: a long path starts with its likely
/// bandwidth-delay product instead of growing to it interval by interval, while on a
/// short one the floor applies.
const PRIOR_RATE: f64 = 300e6;

/// A request asking for budget, as the floor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// The one WRITE of a file that fits in a single request, carrying this many bytes.
    SmallFile(usize),
    /// Part of a stream: a WRITE of a file larger than one request, or any READ (a few
    /// bytes on the way out, its reply waiting in our own buffers). Streams keep the full
    /// floor, whatever their request size.
    Stream,
}

/// The budget's controller: fed the connection's byte count and smallest round trip, it
/// says when the budget should change and to what.
#[derive(Debug)]
pub struct Pacer {
    max: usize,
    last: Option<(Instant, u64)>,
    /// The largest request budgeted so far (a stream counts as [`MIN_WINDOW`]): it sets the
    /// floor.
    largest: usize,
    /// The budget last computed from the path, before the floor applies.
    target: f64,
    /// Channels the bytes were counted over (see [`Pacer::channels`]).
    channels: usize,
}

impl Pacer {
    /// A pacer that never lets the budget exceed `max`.
    pub fn new(max: usize) -> Self {
        Pacer {
            max,
            last: None,
            largest: 0,
            target: 0.0,
            channels: 1,
        }
    }

    /// Tells how many channels carry the transfer. When that changes, what was measured
    /// says nothing of the new path (one channel's window capped it): the next update
    /// starts over from the prior, as at the start, instead of growing threefold per
    /// interval from the old rate while the new channels sit idle.
    pub fn channels(&mut self, n: usize) {
        if n != self.channels {
            self.channels = n;
            self.last = None;
        }
    }

    /// The budget to start with: the floor. Starting high would fill every buffer on the
    /// way before the first measurement, which on a fast path costs more than growing
    /// from the floor costs on a long one (three measuring intervals).
    pub fn initial(&self) -> usize {
        self.floor()
    }

    /// The smallest budget: a few of the largest requests seen, so that big requests keep
    /// several in flight while small ones do not flood the server's input queue.
    fn floor(&self) -> usize {
        (self.largest.saturating_mul(FLOOR_REQUESTS))
            .clamp(MIN_WINDOW_SMALL, MIN_WINDOW)
            .min(self.max)
    }

    /// Called whenever a transfer wants budget for `request`: `bytes` is the
    /// connection's running total of bytes moved, `rtt` its smallest measured round trip.
    /// Returns the new budget at the end of each measuring interval, or at once when a
    /// larger request than any before raises the floor. A gap of many intervals (the
    /// connection was idle, not slow) starts a new measurement instead.
    pub fn update(
        &mut self,
        now: Instant,
        bytes: u64,
        rtt: Option<Duration>,
        request: Ask,
    ) -> Option<usize> {
        let floor = self.floor();
        let size = match request {
            Ask::SmallFile(n) => n,
            Ask::Stream => MIN_WINDOW,
        };
        self.largest = self.largest.max(size);
        let measured = self.measure(now, bytes, rtt);
        if let Some(target) = measured {
            self.target = target;
        }
        (measured.is_some() || self.floor() != floor).then(|| self.clamp(self.target))
    }

    /// The path's budget at the end of a measuring interval, unclamped.
    fn measure(&mut self, now: Instant, bytes: u64, rtt: Option<Duration>) -> Option<f64> {
        let rtt = rtt?;
        let interval = (rtt * INTERVAL_ROUND_TRIPS).max(MIN_INTERVAL);
        let Some((since, from)) = self.last else {
            self.last = Some((now, bytes));
            return Some(PRIOR_RATE * rtt.as_secs_f64());
        };
        let elapsed = now.saturating_duration_since(since);
        if elapsed < interval {
            return None;
        }
        self.last = Some((now, bytes));
        if elapsed > interval * 4 {
            return None;
        }
        let rate = bytes.saturating_sub(from) as f64 / elapsed.as_secs_f64();
        Some(ROUND_TRIPS_IN_FLIGHT * rate * rtt.as_secs_f64())
    }

    fn clamp(&self, window: f64) -> usize {
        (window as usize).clamp(self.floor(), self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    /// A full-sized WRITE.
    const CHUNK: usize = 256 << 10;

    /// Feeds `rate` bytes/s for `ms` milliseconds in 1 ms steps; returns the last budget.
    fn run(
        p: &mut Pacer,
        t0: Instant,
        bytes: &mut u64,
        rate: u64,
        ms: u32,
        rtt: Duration,
    ) -> Option<usize> {
        let mut last = None;
        for i in 1..=ms {
            *bytes += rate / 1000;
            if let Some(w) = p.update(t0 + MS * i, *bytes, Some(rtt), Ask::Stream) {
                last = Some(w);
            }
        }
        last
    }

    #[test]
    fn the_first_round_trip_sizes_the_budget_before_any_throughput_is_known() {
        let t0 = Instant::now();
        let mut p = Pacer::new(24 << 20);
        assert_eq!(p.update(t0, 0, Some(20 * MS), Ask::Stream), Some(6_000_000));
        let mut p = Pacer::new(24 << 20);
        assert_eq!(
            p.update(t0, 0, Some(Duration::from_micros(300)), Ask::Stream),
            Some(MIN_WINDOW)
        );
        let mut p = Pacer::new(24 << 20);
        assert_eq!(
            p.update(t0, 0, Some(Duration::from_secs(1)), Ask::Stream),
            Some(24 << 20)
        );
    }

    #[test]
    fn new_channels_start_the_measurement_over_from_the_prior() {
        // One channel's window at 100 ms: 20 MB/s measured, a 6 MB budget.
        let rtt = 100 * MS;
        let mut p = Pacer::new(24 << 20);
        let (t0, mut b) = (Instant::now(), 0);
        let w = run(&mut p, t0, &mut b, 20_000_000, 2000, rtt);
        assert_eq!(w, Some(6_000_000));
        // Seven more channels join: the budget is the prior's at once, not 18 MB later.
        p.channels(8);
        assert_eq!(
            p.update(t0 + MS * 2001, b, Some(rtt), Ask::Stream),
            Some(24 << 20)
        );
        // The same count again changes nothing.
        p.channels(8);
        assert_eq!(p.update(t0 + MS * 2002, b, Some(rtt), Ask::Stream), None);
    }

    #[test]
    fn nothing_changes_before_a_round_trip_is_known() {
        let mut p = Pacer::new(24 << 20);
        let t0 = Instant::now();
        // Only the floor moves, for the first full-sized request.
        assert_eq!(p.update(t0, 0, None, Ask::Stream), Some(MIN_WINDOW));
        assert_eq!(p.update(t0 + MS * 500, 1 << 30, None, Ask::Stream), None);
    }

    #[test]
    fn a_fast_short_path_gets_the_floor() {
        // 300 MB/s over a 0.3 ms round trip: 90 kB per round trip.
        let mut p = Pacer::new(24 << 20);
        let (t0, mut b) = (Instant::now(), 0);
        let w = run(
            &mut p,
            t0,
            &mut b,
            300_000_000,
            100,
            Duration::from_micros(300),
        );
        assert_eq!(w, Some(MIN_WINDOW));
    }

    #[test]
    fn a_long_path_gets_its_bandwidth_delay_product_times_three() {
        // 100 MB/s over 20 ms: 2 MB per round trip, 6 MB budget.
        let mut p = Pacer::new(24 << 20);
        let (t0, mut b) = (Instant::now(), 0);
        let w = run(&mut p, t0, &mut b, 100_000_000, 400, 20 * MS).unwrap();
        assert!((5_900_000..=6_100_000).contains(&w), "{w}");
    }

    #[test]
    fn the_budget_stays_within_the_configured_maximum() {
        let mut p = Pacer::new(4 << 20);
        let (t0, mut b) = (Instant::now(), 0);
        let w = run(&mut p, t0, &mut b, 1_000_000_000, 400, 50 * MS);
        assert_eq!(w, Some(4 << 20));
        // A maximum below the floor wins over the floor.
        let mut p = Pacer::new(256 << 10);
        let (t0, mut b) = (Instant::now(), 0);
        let w = run(
            &mut p,
            t0,
            &mut b,
            300_000_000,
            100,
            Duration::from_micros(300),
        );
        assert_eq!(w, Some(256 << 10));
    }

    #[test]
    fn an_idle_gap_is_not_taken_for_a_slow_path() {
        let mut p = Pacer::new(24 << 20);
        let t0 = Instant::now();
        assert!(p.update(t0, 0, Some(20 * MS), Ask::Stream).is_some());
        // A second later, almost nothing moved: the connection was idle.
        assert_eq!(
            p.update(t0 + MS * 1000, 10, Some(20 * MS), Ask::Stream),
            None
        );
        // The next full interval measures again.
        assert!(
            p.update(t0 + MS * 1080, 10 + 8_000_000, Some(20 * MS), Ask::Stream)
                .is_some()
        );
    }

    #[test]
    fn small_requests_get_a_lower_floor_raised_by_the_first_big_one() {
        let mut p = Pacer::new(24 << 20);
        assert_eq!(p.initial(), MIN_WINDOW_SMALL);
        let (t0, mut b) = (Instant::now(), 0u64);
        let rtt = Some(Duration::from_micros(300));
        // Thousands of 4 KiB files at 50 MB/s on a short path: the small floor.
        let mut last = None;
        for i in 1..=100 {
            b += 50_000;
            if let Some(w) = p.update(t0 + MS * i, b, rtt, Ask::SmallFile(4096)) {
                last = Some(w);
            }
        }
        assert_eq!(last, Some(MIN_WINDOW_SMALL));
        // A full chunk raises the floor at once, before any new measurement.
        assert_eq!(
            p.update(t0 + MS * 101, b, rtt, Ask::Stream),
            Some(MIN_WINDOW)
        );
        // 64 KiB requests: four of them.
        let mut p = Pacer::new(24 << 20);
        assert_eq!(p.update(t0, 0, None, Ask::SmallFile(64 << 10)), None);
        assert_eq!(
            p.update(t0, 0, None, Ask::SmallFile(100 << 10)),
            Some(400 << 10)
        );
        // A file of one full chunk: four of them, the full floor.
        assert_eq!(
            p.update(t0, 0, None, Ask::SmallFile(CHUNK)),
            Some(MIN_WINDOW)
        );
        // Streams (big files, reads), whatever their request size, keep the full floor.
        let mut p = Pacer::new(24 << 20);
        assert_eq!(p.update(t0, 0, None, Ask::Stream), Some(MIN_WINDOW));
    }

    #[test]
    fn a_long_path_with_small_requests_still_gets_its_bandwidth_delay_product() {
        // 20 MB/s of small files over 20 ms: 400 kB per round trip, 1.2 MB budget.
        let mut p = Pacer::new(24 << 20);
        let (t0, mut b) = (Instant::now(), 0u64);
        let mut last = None;
        for i in 1..=400 {
            b += 20_000;
            if let Some(w) = p.update(t0 + MS * i, b, Some(20 * MS), Ask::SmallFile(4096)) {
                last = Some(w);
            }
        }
        let w = last.unwrap_or(0);
        assert!((1_150_000..=1_250_000).contains(&w), "{w}");
    }
}
