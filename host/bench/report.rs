//! The bench's results: medians over runs, as a side-by-side table, JSON, CSV and an SVG chart.

use std::collections::BTreeMap;

use plotters::prelude::*;
use serde::Serialize;

use super::load::Sample;
use super::{Job, Load, Workload};
use porthost::cli::table::render as render_table;

/// The metrics a table shows, in order, with their labels.
const METRICS: [(&str, &str); 18] = [
    ("req_per_s", "req/s"),
    ("conn_per_s", "conn/s"),
    ("games_per_s", "games/s"),
    ("games_finished", "games finished"),
    ("p50_us", "p50 µs"),
    ("p99_us", "p99 µs"),
    ("p999_us", "p99.9 µs"),
    ("move_p50_us", "move p50 µs"),
    ("move_p99_us", "move p99 µs"),
    ("first_reply_p50_ms", "first reply p50 ms"),
    ("first_reply_max_ms", "first reply max ms"),
    ("rss_idle_mib", "RSS idle MiB"),
    ("rss_mib", "RSS loaded MiB"),
    ("rss_per_conn_kib", "RSS growth KiB/conn"),
    ("threads", "threads"),
    ("processes", "processes"),
    ("errors", "errors"),
    ("runs", "runs"),
];

/// One workload against one server, over every run.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub workload: Workload,
    /// The workload and its size as the table shows it, e.g. `sessions c=100 l=100`.
    pub load: String,
    /// Clients, connections or games.
    pub size: usize,
    pub service: String,
    pub subject: String,
    /// The median of each metric over the runs.
    pub medians: BTreeMap<&'static str, f64>,
    pub per_run: Vec<BTreeMap<&'static str, f64>>,
    /// Errors summed over the runs.
    pub errors: u64,
    /// What did not finish in time, per run where something did not.
    pub unfinished: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub runs: usize,
    /// The table's columns, in order.
    pub subjects: Vec<String>,
    pub entries: Vec<Entry>,
}

impl Report {
    pub fn new(jobs: &[Job], runs: usize) -> Report {
        let mut subjects: Vec<String> = Vec::new();
        let mut entries = Vec::new();
        for job in jobs {
            let subject = job.subject.name();
            if !subjects.contains(&subject) {
                subjects.push(subject.clone());
            }
            for load in &job.loads {
                entries.push(Entry {
                    workload: load.workload(),
                    load: load.to_string(),
                    size: load.size(),
                    service: job.service.clone(),
                    subject: subject.clone(),
                    medians: BTreeMap::new(),
                    per_run: Vec::new(),
                    errors: 0,
                    unfinished: Vec::new(),
                });
            }
        }
        Report {
            runs,
            subjects,
            entries,
        }
    }

    /// Records one run of `load` against `job`'s server.
    pub fn add(&mut self, job: &Job, load: Load, sample: Sample) {
        let (subject, label) = (job.subject.name(), load.to_string());
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.subject == subject && e.load == label && e.service == job.service)
            .expect("every planned load has an entry");
        entry.per_run.push(sample.metrics.into_iter().collect());
        entry.errors += sample.errors;
        entry.unfinished.extend(sample.unfinished);
        let keys: Vec<&'static str> = entry.per_run[0].keys().copied().collect();
        entry.medians = keys
            .into_iter()
            .map(|key| {
                let values: Vec<f64> = entry
                    .per_run
                    .iter()
                    .filter_map(|r| r.get(key).copied())
                    .collect();
                (key, median(values))
            })
            .collect();
    }

    pub fn find(&self, subject: &str, load: Load, service: &str) -> Option<&Entry> {
        let label = load.to_string();
        self.entries.iter().find(|e| {
            e.subject == subject && e.load == label && e.service == service && !e.per_run.is_empty()
        })
    }

    /// Workloads down, servers across; every number a median over the runs.
    pub fn table(&self) -> String {
        let mut header = vec!["WORKLOAD".to_owned(), "METRIC".to_owned()];
        header.extend(self.subjects.iter().cloned());
        let mut rows = vec![header];
        let mut loads: Vec<&str> = Vec::new();
        for e in &self.entries {
            if !loads.contains(&e.load.as_str()) {
                loads.push(&e.load);
            }
        }
        for load in loads {
            let of_load: Vec<&Entry> = self.entries.iter().filter(|e| e.load == load).collect();
            let mut first = true;
            for (key, label) in METRICS {
                let cells: Vec<String> = self
                    .subjects
                    .iter()
                    .map(|s| {
                        of_load
                            .iter()
                            .find(|e| &e.subject == s)
                            .and_then(|e| cell(e, key))
                            .unwrap_or_else(|| "-".to_owned())
                    })
                    .collect();
                if cells.iter().all(|c| c == "-") {
                    continue;
                }
                let mut row = vec![
                    if first {
                        load.to_owned()
                    } else {
                        String::new()
                    },
                    label.to_owned(),
                ];
                row.extend(cells);
                rows.push(row);
                first = false;
            }
        }
        let mut out = render_table(&rows);
        let notes: Vec<String> = self
            .entries
            .iter()
            .filter(|e| !e.unfinished.is_empty())
            .map(|e| {
                format!(
                    "- {} {}: {} (in {} of {} runs)",
                    e.subject,
                    e.load,
                    e.unfinished.last().expect("not empty"),
                    e.unfinished.len(),
                    e.per_run.len()
                )
            })
            .collect();
        if !notes.is_empty() {
            out.push_str("\nNot finished within the time budget:\n");
            out.push_str(&notes.join("\n"));
            out.push('\n');
        }
        out
    }

    pub fn json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// One row per entry and metric: `workload,size,service,subject,metric,median,runs`.
    pub fn csv(&self) -> String {
        let mut out = String::from("workload,load,size,service,subject,metric,median,runs\n");
        for e in &self.entries {
            let workload = serde_json::to_value(e.workload).expect("a unit variant");
            let workload = workload.as_str().unwrap_or_default();
            let mut metrics: Vec<(&str, f64)> = e.medians.iter().map(|(k, v)| (*k, *v)).collect();
            metrics.push(("errors", e.errors as f64));
            for (metric, value) in metrics {
                out.push_str(&format!(
                    "{workload},{},{},{},{},{metric},{value},{}\n",
                    e.load,
                    e.size,
                    e.service,
                    e.subject,
                    e.per_run.len()
                ));
            }
        }
        out
    }

    /// Throughput and p99 latency of the sessions workload against client count, one line per
    /// server.
    pub fn svg(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, (900, 900)).into_drawing_area();
            root.fill(&WHITE)?;
            let (top, bottom) = root.split_vertically(450);
            self.chart(&top, "req_per_s", "sessions throughput (req/s)")?;
            self.chart(&bottom, "p99_us", "sessions p99 latency (µs)")?;
            root.present()?;
        }
        Ok(out)
    }

    fn chart(
        &self,
        area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
        metric: &str,
        title: &str,
    ) -> anyhow::Result<()> {
        let series: Vec<(&String, Vec<(f64, f64)>)> = self
            .subjects
            .iter()
            .map(|s| {
                let mut points: Vec<(f64, f64)> = self
                    .entries
                    .iter()
                    .filter(|e| &e.subject == s && e.workload == Workload::Sessions)
                    .filter_map(|e| Some((e.size as f64, *e.medians.get(metric)?)))
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                (s, points)
            })
            .filter(|(_, points)| !points.is_empty())
            .collect();
        let xs = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x));
        let (x_min, x_max) = xs.fold((f64::MAX, 1.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
        let x_min = x_min.min(x_max).max(1.0);
        let y_max = series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold(1.0f64, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((x_min..x_max * 1.5).log_scale(), 0.0..y_max * 1.1)?;
        chart
            .configure_mesh()
            .x_desc("clients connected at once")
            .y_desc(title)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        for (i, (subject, points)) in series.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(subject.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        Ok(())
    }
}

/// The table cell for one metric of an entry, formatted for its unit.
fn cell(entry: &Entry, key: &str) -> Option<String> {
    let value = match key {
        "errors" => entry.errors as f64,
        "runs" => entry.per_run.len() as f64,
        key => *entry.medians.get(key)?,
    };
    Some(if key.ends_with("_ms") || key.ends_with("_mib") {
        format!("{value:.1}")
    } else if key.ends_with("_kib") {
        format!("{value:.2}")
    } else {
        format!("{value:.0}")
    })
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
