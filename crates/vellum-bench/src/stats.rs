//! Latency percentiles.

/// Percentile `p` (0–100) of `samples` in microseconds; sorts them.
pub fn percentile_us(samples: &mut [u32], p: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    u64::from(samples[rank.min(samples.len() - 1)])
}

pub fn per_second(count: usize, elapsed: std::time::Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}
