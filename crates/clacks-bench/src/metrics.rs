//! Measurements: sharded latency histograms, counters shared by the
//! connection tasks, and readings of `/proc` (RSS, CPU time) for the
//! server and for the tool itself.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded, in microseconds (larger values are clamped).
const MAX_MICROS: u64 = 600_000_000;
const SHARDS: usize = 64;

/// A latency histogram in microseconds, sharded so that thousands of
/// connection tasks record without contending on one lock.
pub struct LatencyRecorder {
    shards: Vec<Mutex<Histogram<u64>>>,
}

fn histogram() -> Histogram<u64> {
    // 3 significant figures over 1 us .. 600 s: about 30 KB per shard.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant, valid histogram bounds")
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
        }
    }
}

impl LatencyRecorder {
    /// Records one latency of `micros` from the task numbered `key`.
    pub fn record(&self, key: usize, micros: u64) {
        let shard = &self.shards[key % SHARDS];
        if let Ok(mut h) = shard.lock() {
            h.saturating_record(micros.clamp(1, MAX_MICROS));
        }
    }

    /// All shards merged.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for shard in &self.shards {
            if let Ok(h) = shard.lock() {
                let _ = all.add(&*h);
            }
        }
        all
    }

    pub fn reset(&self) {
        for shard in &self.shards {
            if let Ok(mut h) = shard.lock() {
                h.reset();
            }
        }
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary::of(&self.merged())
    }
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {:.2} ms  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (n={})",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.count
        )
    }
}

/// Error counts by kind (GraphQL `extensions.code`, HTTP status, close code).
#[derive(Default)]
pub struct ErrorTally {
    counts: Mutex<BTreeMap<String, u64>>,
    first: Mutex<Option<String>>,
}

impl ErrorTally {
    pub fn add(&self, kind: &str, detail: impl FnOnce() -> String) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(kind.to_owned()).or_default() += 1;
        }
        if let Ok(mut f) = self.first.lock()
            && f.is_none()
        {
            let mut d = detail();
            d.truncate(300);
            *f = Some(format!("{kind}: {d}"));
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.lock().map(|c| c.values().sum()).unwrap_or(0)
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn first(&self) -> Option<String> {
        self.first.lock().ok().and_then(|f| f.clone())
    }
}

/// Counters shared by every task of a run.
#[derive(Default)]
pub struct Counters {
    /// Sends started.
    pub sent: AtomicU64,
    /// Sends acknowledged (committed) by the server.
    pub acked: AtomicU64,
    /// Sends that failed (see `send_errors`).
    pub send_failed: AtomicU64,
    /// Message events received over WebSocket, all connections.
    pub delivered: AtomicU64,
    /// Receive time of the latest delivery (`now_ns`).
    pub last_delivery_ns: AtomicU64,
    /// Deliveries whose seq was not above the previous one on that
    /// connection (duplicates or reordering).
    pub out_of_order: AtomicU64,
    /// Sends delayed past their schedule (open loop fell behind).
    pub late_sends: AtomicU64,
    pub send_errors: ErrorTally,
    pub receive_errors: ErrorTally,
    /// Send-to-receive latency.
    pub latency: LatencyRecorder,
    /// Send-to-ack latency.
    pub ack_latency: LatencyRecorder,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// A reading of one process from `/proc`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcSample {
    pub rss_kib: u64,
    /// User + system CPU time, in clock ticks (100 per second on Linux).
    pub cpu_ticks: u64,
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;

impl ProcSample {
    /// Reads `/proc/<pid>` (`None`: this process).
    pub fn read(pid: Option<u32>) -> Option<ProcSample> {
        let base = match pid {
            Some(p) => format!("/proc/{p}"),
            None => "/proc/self".to_owned(),
        };
        let status = std::fs::read_to_string(format!("{base}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())?;
        let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(ProcSample {
            rss_kib,
            cpu_ticks: utime + stime,
        })
    }

    /// CPU use between two samples over `secs` of wall time, in percent of
    /// one core.
    pub fn cpu_percent(before: ProcSample, after: ProcSample, secs: f64) -> f64 {
        if secs <= 0.0 {
            return 0.0;
        }
        after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / TICKS_PER_SECOND / secs * 100.0
    }
}

/// Sums samples of several processes (two nodes).
pub fn sample_all(pids: &[u32]) -> Option<ProcSample> {
    if pids.is_empty() {
        return None;
    }
    let mut total = ProcSample::default();
    for pid in pids {
        let s = ProcSample::read(Some(*pid))?;
        total.rss_kib += s.rss_kib;
        total.cpu_ticks += s.cpu_ticks;
    }
    Some(total)
}

/// The machine a run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub loadavg: String,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .unwrap_or(0);
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            mem_total_mib,
            loadavg: loadavg(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_proc() {
        let s = ProcSample::read(None).expect("/proc/self");
        assert!(s.rss_kib > 0);
    }

    #[test]
    fn summary_of_samples() {
        let r = LatencyRecorder::default();
        for i in 1..=1000u64 {
            r.record(i as usize, i * 1000);
        }
        let s = r.summary();
        assert_eq!(s.count, 1000);
        assert!(s.p50_ms > 499.0 && s.p50_ms < 502.0, "{s:?}");
        r.reset();
        assert_eq!(r.summary().count, 0);
    }
}
