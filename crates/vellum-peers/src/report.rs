//! The side-by-side report: medians of every row's runs as Markdown tables, the
//! machine they ran on, and one SVG bar chart per workload (plotters).

use crate::churn::W3Row;
use crate::kv_peers::W2Row;
use crate::log_peers::W1Row;
use crate::recovery::W4Row;
use crate::server_peers::W5Row;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

/// One run of one peer at one durability: its figures, in the table's column order.
pub struct Row {
    peer: String,
    durability: String,
    figures: Vec<(&'static str, f64)>,
}

impl Row {
    fn new(peer: &str, durability: &str, figures: Vec<(&'static str, f64)>) -> Row {
        Row {
            peer: peer.into(),
            durability: durability.into(),
            figures,
        }
    }

    pub fn w1(peer: &str, durability: &str, r: &W1Row) -> Row {
        Row::new(
            peer,
            durability,
            vec![
                ("appends_per_s", r.appends_per_s),
                ("ack_p50_us", r.ack_p50_us as f64),
                ("ack_p99_us", r.ack_p99_us as f64),
                ("read_msgs_per_s", r.read_msgs_per_s),
                ("seq_ack_p50_us", r.seq_ack_p50_us as f64),
            ],
        )
    }

    pub fn w2(peer: &str, durability: &str, r: &W2Row) -> Row {
        Row::new(
            peer,
            durability,
            vec![
                ("writes_per_s", r.writes_per_s),
                ("write_mb_per_s", r.write_mb_per_s),
                ("confirm_p50_us", r.confirm_p50_us as f64),
                ("reads_per_s", r.reads_per_s),
            ],
        )
    }

    pub fn w5(peer: &str, durability: &str, r: &W5Row) -> Row {
        Row::new(
            peer,
            durability,
            vec![
                ("appends_per_s", r.appends_per_s),
                ("ack_p50_us", r.ack_p50_us as f64),
                ("ack_p99_us", r.ack_p99_us as f64),
                ("delivery_p99_ms", r.delivery_p99_ms),
            ],
        )
    }

    pub fn w4(peer: &str, durability: &str, r: &W4Row) -> Row {
        Row::new(
            peer,
            durability,
            vec![
                ("clean_open_s", r.clean_open_s),
                ("crash_open_s", r.crash_open_s),
            ],
        )
    }

    pub fn w3(peer: &str, durability: &str, r: &W3Row) -> Row {
        Row::new(
            peer,
            durability,
            vec![
                ("settle_s", r.settle_s),
                ("space_ratio", r.space_ratio),
                ("write_amplification", r.write_amplification),
                (
                    "read_p99_us_during_compaction",
                    r.read_p99_us_during_compaction,
                ),
            ],
        )
    }
}

/// A workload's rows, every run of every (peer, durability).
pub struct Table {
    workload: &'static str,
    messages: usize,
    runs: Vec<Row>,
}

impl Table {
    pub fn new(workload: &'static str, messages: usize) -> Table {
        Table {
            workload,
            messages,
            runs: Vec::new(),
        }
    }

    pub fn messages(&self) -> usize {
        self.messages
    }

    pub fn add(&mut self, row: Row) {
        eprintln!(
            "  {} {} / {}: {:.0} ({})",
            self.workload, row.peer, row.durability, row.figures[0].1, row.figures[0].0
        );
        self.runs.push(row);
    }

    /// Each (peer, durability)'s medians, in the order the rows were first added.
    fn medians(&self) -> Vec<Summary> {
        let mut out: Vec<Summary> = Vec::new();
        for row in &self.runs {
            if out
                .iter()
                .any(|s| s.peer == row.peer && s.durability == row.durability)
            {
                continue;
            }
            let same: Vec<&Row> = self
                .runs
                .iter()
                .filter(|r| r.peer == row.peer && r.durability == row.durability)
                .collect();
            let figures = row
                .figures
                .iter()
                .enumerate()
                .map(|(i, (name, _))| {
                    (*name, median(same.iter().map(|r| r.figures[i].1).collect()))
                })
                .collect();
            let firsts = same.iter().map(|r| r.figures[0].1).collect();
            out.push(Summary {
                peer: row.peer.clone(),
                durability: row.durability.clone(),
                figures,
                firsts,
            });
        }
        out
    }
}

/// A (peer, durability)'s median of each figure, and every run's first figure.
struct Summary {
    peer: String,
    durability: String,
    figures: Vec<(&'static str, f64)>,
    firsts: Vec<f64>,
}

/// The median of the figures measured (NaN: not measurable for that peer).
fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn format_figure(x: f64) -> String {
    if x.is_nan() {
        "—".into()
    } else if x >= 100.0 {
        let mut s = format!("{:.0}", x);
        let mut i = s.len() as isize - 3;
        while i > 0 {
            s.insert(i as usize, ',');
            i -= 3;
        }
        s
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The machine, as the report's header describes it.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or("?".into(), |kb| format!("{} GiB", kb / 1024 / 1024));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let filesystem = std::process::Command::new("df")
        .args(["--output=fstype", &std::env::temp_dir().to_string_lossy()])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cores} × {cpu}, {memory} memory, Linux {kernel}, temporary directories on {filesystem}; \
         one fdatasync of 4 KiB there: median {} µs; load average at the end: {}",
        fdatasync_probe_us(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The median time of 200 `fdatasync`s after 4 KiB writes, in µs.
fn fdatasync_probe_us() -> u64 {
    use std::io::Write;
    let Ok(mut file) = tempfile::tempfile() else {
        return 0;
    };
    let mut times: Vec<u32> = (0..200)
        .map(|_| {
            let t0 = std::time::Instant::now();
            let _ = file.write_all(&[7u8; 4096]);
            let _ = file.sync_data();
            t0.elapsed().as_micros() as u32
        })
        .collect();
    vellum_bench::stats::percentile_us(&mut times, 50.0)
}

pub fn write(
    out: &Path,
    runs: usize,
    scale: f64,
    redis: Option<&str>,
    tables: &[Table],
) -> anyhow::Result<()> {
    let mut md = String::new();
    writeln!(md, "# Benchmarks: Vellum and its peers, side by side\n")?;
    writeln!(
        md,
        "Generated by `bench/peers.sh` (`vellum-peers --runs {runs} --scale {scale}`): every row in one run on one \
         machine, medians of {runs} runs (each run's first figure listed after the medians). Every row checks its \
         own results: every acknowledgement counted, every message read back byte for byte.\n"
    )?;
    writeln!(
        md,
        "What each peer does, why Vellum is ahead or behind, and what is not measured yet: \
         [benchmarks-analysis.md](benchmarks-analysis.md).\n"
    )?;
    writeln!(md, "**Machine:** {}.\n", machine())?;
    if let Some(redis) = redis {
        writeln!(
            md,
            "**Servers:** {redis}, started by the bench on 127.0.0.1.\n"
        )?;
    }
    for table in tables {
        let medians = table.medians();
        let Some(first) = medians.first().map(|s| &s.figures) else {
            continue;
        };
        writeln!(md, "## {} ({} messages)\n", table.workload, table.messages)?;
        let names: Vec<&str> = first.iter().map(|(n, _)| *n).collect();
        writeln!(
            md,
            "| peer | durability | {} | runs ({}) |",
            names.join(" | "),
            names[0]
        )?;
        writeln!(md, "|---|---|{}---|", "---:|".repeat(names.len()))?;
        for s in &medians {
            let cells: Vec<String> = s.figures.iter().map(|(_, x)| format_figure(*x)).collect();
            let runs: Vec<String> = s.firsts.iter().map(|x| format_figure(*x)).collect();
            writeln!(
                md,
                "| {} | {} | {} | {} |",
                s.peer,
                s.durability,
                cells.join(" | "),
                runs.join(", ")
            )?;
        }
        let chart = format!("benchmarks-{}.svg", table.workload);
        chart_svg(
            &out.with_file_name(&chart),
            table.workload,
            names[0],
            &medians,
        )?;
        writeln!(md, "\n![{} {}]({chart})\n", table.workload, names[0])?;
    }
    std::fs::write(out, md)?;
    Ok(())
}

/// A horizontal bar chart of each row's median first figure.
fn chart_svg(path: &Path, workload: &str, figure: &str, medians: &[Summary]) -> anyhow::Result<()> {
    let height = 60 + 34 * medians.len() as u32;
    let root = SVGBackend::new(path, (900, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = medians.iter().map(|s| s.figures[0].1).fold(0.0, f64::max) * 1.1;
    let labels: Vec<String> = medians
        .iter()
        .map(|s| {
            let short = s.durability.split(" (").next().unwrap_or(&s.durability);
            format!("{} — {short}", s.peer)
        })
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{workload}: {figure} (median)"), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(330)
        .build_cartesian_2d(0.0..max.max(1.0), (0..medians.len()).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|x| format_figure(*x))
        .draw()?;
    chart.draw_series(medians.iter().enumerate().map(|(i, s)| {
        let color = if s.peer.starts_with("Vellum") {
            RED
        } else {
            BLUE
        };
        Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (s.figures[0].1, SegmentValue::Exact(i + 1)),
            ],
            color.mix(0.6).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}
