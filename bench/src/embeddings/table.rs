//! The embeddings table (text and markdown) and the per-run lines below it.

use std::{collections::HashMap, fmt::Write as _};

use anyhow::Result;

use super::{cpu::CpuSplit, direct::Direct, pipeline::Measured};

pub struct Through {
    pub m: Measured,
    pub n: usize,
}

impl Through {
    fn docs_per_s(&self) -> f64 {
        self.n as f64 / self.m.stored.as_secs_f64()
    }

    fn ok(&self) -> bool {
        self.m.missing == 0 && self.m.wrong_dims == 0 && self.m.vector_mismatch == 0
    }
}

/// wharf on one store at one batch size, over the runs.
pub struct Row {
    pub batch: usize,
    pub backend: &'static str,
    pub runs: Vec<Result<Through>>,
}

impl Row {
    pub fn new(batch: usize, backend: &'static str) -> Row {
        Row { batch, backend, runs: Vec::new() }
    }

    pub fn ok(&self) -> bool {
        self.runs.iter().all(|r| r.as_ref().is_ok_and(Through::ok))
    }
}

type DirectRun = Result<(Direct, CpuSplit)>;

/// The server alone at one batch size, over the runs.
pub struct Baseline {
    pub streams: usize,
    pub sequential: Vec<DirectRun>,
    /// Empty when the worker would make one request at a time anyway.
    pub concurrent: Vec<DirectRun>,
}

impl Baseline {
    pub fn new(streams: usize) -> Baseline {
        Baseline { streams, sequential: Vec::new(), concurrent: Vec::new() }
    }

    pub fn ok(&self) -> bool {
        self.sequential.iter().chain(&self.concurrent).all(|r| r.is_ok())
    }

    /// The baseline the worker is compared with: the same concurrency as it calls the server.
    fn same_concurrency(&self) -> &[DirectRun] {
        if self.streams > 1 { &self.concurrent } else { &self.sequential }
    }
}

/// One measurement's value (`None`: it failed) and whether other work disturbed it.
type Sample = Option<(f64, bool)>;

fn rate(r: &DirectRun, n: usize) -> Sample {
    r.as_ref().ok().map(|(d, cpu)| (n as f64 / d.wall.as_secs_f64(), cpu.busy()))
}

/// `a` or `min–max` (then `unit`) over the undisturbed measurements, noting those left out;
/// over all of them, marked, when every one was disturbed. `(+failed)` if some gave nothing.
fn range(values: &[Sample], decimals: usize, unit: &str) -> String {
    if values.is_empty() {
        return "–".into();
    }
    let ok: Vec<(f64, bool)> = values.iter().flatten().copied().collect();
    if ok.is_empty() {
        return "failed".into();
    }
    let clean: Vec<f64> = ok.iter().filter(|v| !v.1).map(|v| v.0).collect();
    let shown: Vec<f64> = if clean.is_empty() { ok.iter().map(|v| v.0).collect() } else { clean.clone() };
    let min = shown.iter().copied().fold(f64::INFINITY, f64::min);
    let max = shown.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut s = if format!("{min:.decimals$}") == format!("{max:.decimals$}") {
        format!("{min:.decimals$}{unit}")
    } else {
        format!("{min:.decimals$}–{max:.decimals$}{unit}")
    };
    if clean.is_empty() {
        s.push_str(" (all disturbed)");
    } else if clean.len() < ok.len() {
        let _ = write!(s, " (+{} disturbed)", ok.len() - clean.len());
    }
    if ok.len() < values.len() {
        s.push_str(" (+failed)");
    }
    s
}

const HEADER: [&str; 9] = [
    "batch size",
    "server alone, 1 request at a time: docs/s",
    "server alone, as the worker calls it: docs/s",
    "store",
    "wharf: docs/s",
    "wharf ÷ server alone at the same concurrency",
    "provider calls",
    "missing",
    "wrong width or vector",
];

fn cells(row: &Row, base: &Baseline, n: usize) -> Vec<String> {
    let seq: Vec<Sample> = base.sequential.iter().map(|r| rate(r, n)).collect();
    let conc: Vec<Sample> = base.concurrent.iter().map(|r| rate(r, n)).collect();
    let wharf: Vec<Sample> =
        row.runs.iter().map(|r| r.as_ref().ok().map(|t| (t.docs_per_s(), t.m.cpu.busy()))).collect();
    // Run i of wharf against run i of the baseline (minutes apart); disturbed if either was.
    let ratio: Vec<Sample> = wharf
        .iter()
        .zip(base.same_concurrency())
        .map(|(w, b)| {
            let ((w, wb), (b, bb)) = ((*w)?, rate(b, n)?);
            Some((100.0 * w / b, wb || bb))
        })
        .collect();
    let calls: Vec<Sample> =
        row.runs.iter().map(|r| r.as_ref().ok().map(|t| (t.m.provider_calls as f64, false))).collect();
    let sum = |f: fn(&Measured) -> usize| -> String {
        let ok: Vec<&Through> = row.runs.iter().filter_map(|r| r.as_ref().ok()).collect();
        if ok.is_empty() { "–".into() } else { ok.iter().map(|t| f(&t.m)).sum::<usize>().to_string() }
    };
    vec![
        row.batch.to_string(),
        range(&seq, 0, ""),
        if base.streams > 1 {
            format!("{} ({} streams)", range(&conc, 0, ""), base.streams)
        } else {
            "(= 1 at a time)".into()
        },
        row.backend.to_string(),
        range(&wharf, 0, ""),
        range(&ratio, 0, " %"),
        range(&calls, 0, ""),
        sum(|m| m.missing),
        sum(|m| m.wrong_dims + m.vector_mismatch),
    ]
}

fn all_cells(rows: &[Row], baselines: &HashMap<usize, Baseline>, n: usize) -> Vec<Vec<String>> {
    rows.iter().map(|r| cells(r, &baselines[&r.batch], n)).collect()
}

pub fn text(rows: &[Row], baselines: &HashMap<usize, Baseline>, n: usize) -> String {
    let cells = all_cells(rows, baselines, n);
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|i| cells.iter().map(|r| r[i].chars().count()).chain([HEADER[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |r: &[String]| {
        r.iter()
            .enumerate()
            .map(|(i, c)| if i == 3 { format!("{c:<w$}", w = widths[i]) } else { format!("{c:>w$}", w = widths[i]) })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut s = line(&HEADER.map(String::from));
    s.push('\n');
    s.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
    s.push('\n');
    for r in &cells {
        s.push_str(&line(r));
        s.push('\n');
    }
    s
}

/// How many measurements ran while other work used over 10 % of the machine.
pub fn disturbed(rows: &[Row], baselines: &HashMap<usize, Baseline>) -> (usize, usize) {
    let mut busy = 0;
    let mut all = 0;
    let cpus = baselines
        .values()
        .flat_map(|b| b.sequential.iter().chain(&b.concurrent))
        .filter_map(|r| r.as_ref().ok().map(|(_, c)| *c))
        .chain(rows.iter().flat_map(|r| r.runs.iter().filter_map(|t| t.as_ref().ok().map(|t| t.m.cpu))));
    for c in cpus {
        all += 1;
        busy += usize::from(c.busy());
    }
    (busy, all)
}

pub fn markdown(rows: &[Row], baselines: &HashMap<usize, Baseline>, n: usize) -> String {
    let mut s = format!("| {} |\n|", HEADER.join(" | "));
    for i in 0..HEADER.len() {
        s.push_str(if i == 3 { "---|" } else { "---:|" });
    }
    s.push('\n');
    for r in all_cells(rows, baselines, n) {
        let _ = writeln!(s, "| {} |", r.join(" | "));
    }
    s
}

fn per_doc_ms(cpu_s: f64, n: usize) -> f64 {
    1e3 * cpu_s / n as f64
}

fn direct_line(label: &str, r: &DirectRun, n: usize) -> String {
    match r {
        Ok((d, cpu)) => format!(
            "{label}: {n} docs ({:.1} tokens each) in {:.2} s = {:.1} docs/s, {} requests; CPU per document: model server {:.2} ms, \
             bench {:.3} ms, everything else {:.3} ms{}",
            d.tokens as f64 / n as f64,
            d.wall.as_secs_f64(),
            n as f64 / d.wall.as_secs_f64(),
            d.requests,
            per_doc_ms(cpu.server, n),
            per_doc_ms(cpu.bench, n),
            per_doc_ms(cpu.others + cpu.postgres, n),
            if cpu.busy() { " — DISTURBED: other work used over 10 % of the machine" } else { "" }
        ),
        Err(e) => format!("{label}: FAILED: {e:#}"),
    }
}

fn through_lines(t: &Result<Through>) -> Vec<String> {
    let t = match t {
        Ok(t) => t,
        Err(e) => return vec![format!("FAILED: {e:#}")],
    };
    let (m, n) = (&t.m, t.n);
    let secs = |d: Option<std::time::Duration>| d.map_or("–".into(), |d| format!("{:.3} s", d.as_secs_f64()));
    vec![
        format!("fresh {}; {} jobs enqueued in {:.1} ms", m.place, m.jobs, m.enqueue.as_secs_f64() * 1e3),
        format!(
            "worker start → all {n} rows stored {:.2} s = {:.1} docs/s; → every job succeeded {}; \
             first provider request at {}, last at {}",
            m.stored.as_secs_f64(),
            n as f64 / m.stored.as_secs_f64(),
            secs(m.settled),
            secs(m.first_call),
            secs(m.last_call),
        ),
        format!(
            "provider calls: {} logged by the server ({} not 2xx, {} texts), {} reported by the jobs",
            m.provider_calls, m.non_2xx, m.server_inputs, m.reported_calls
        ),
        format!(
            "stored: {} missing, {} of the wrong width or model, {} of {} spot-checked vectors differ from the \
             server's (cosine ≤ 0.999)",
            m.missing, m.wrong_dims, m.vector_mismatch, m.spot_checked
        ),
        format!(
            "{}; per document: model server {:.2} ms, bench {:.3} ms, postgres {:.3} ms",
            m.cpu.describe(),
            per_doc_ms(m.cpu.server, n),
            per_doc_ms(m.cpu.bench, n),
            per_doc_ms(m.cpu.postgres, n),
        ),
    ]
}

pub fn details(rows: &[Row], baselines: &HashMap<usize, Baseline>, n: usize, md: bool) -> String {
    let mut s = String::new();
    let bullet = |level: usize| if md { format!("{}- ", "  ".repeat(level)) } else { "    ".repeat(level) };
    let mut batches: Vec<usize> = baselines.keys().copied().collect();
    batches.sort_unstable();
    for batch in batches {
        let b = &baselines[&batch];
        let _ =
            writeln!(s, "{}{}batch size {batch}{}", bullet(0), if md { "**" } else { "" }, if md { "**" } else { "" });
        for (i, r) in b.sequential.iter().enumerate() {
            let _ = writeln!(s, "{}run {}: {}", bullet(1), i + 1, direct_line("server alone, 1 at a time", r, n));
        }
        for (i, r) in b.concurrent.iter().enumerate() {
            let label = format!("server alone, {} streams", b.streams);
            let _ = writeln!(s, "{}run {}: {}", bullet(1), i + 1, direct_line(&label, r, n));
        }
        for row in rows.iter().filter(|r| r.batch == batch) {
            for (i, t) in row.runs.iter().enumerate() {
                for l in through_lines(t) {
                    let _ = writeln!(s, "{}run {} {}: {l}", bullet(1), i + 1, row.backend);
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_leave_out_disturbed_runs_and_say_so() {
        assert_eq!(range(&[Some((10.0, false)), Some((50.0, true))], 0, " %"), "10 % (+1 disturbed)");
        assert_eq!(range(&[Some((10.0, true)), Some((50.0, true))], 0, ""), "10–50 (all disturbed)");
        assert_eq!(range(&[Some((10.0, false)), Some((12.4, false)), None], 0, ""), "10–12 (+failed)");
        assert_eq!(range(&[], 0, ""), "–");
    }
}
