//! The bench's chart (`--svg`): what the lessons are about, drawn so that they can be read.
//!
//! - throughput and reply latency (p99.9, on a log axis) against the number of clients: p99.9,
//!   because p99 of sessions of 100 lines steps over the first replies, where a queue shows;
//! - the time to first reply of the last client served, against the number of clients: the
//!   queue in front of a server. A client still waiting when the budget ran out is drawn at the
//!   budget as a ▲ with the number still waiting, never left out;
//! - connections per second under churn, per server;
//! - memory (PSS) per idle client, per server;
//! - CPU time per unit of work: per request against the number of clients, and per connection
//!   under churn, per server (the server's whole process tree, reaped children included);
//! - under `sleep` and `busy` (a crowd connected at once, one line each, with a wait or a spin
//!   per line), when the last client got its answer, the median beside it: the lesson of how
//!   each model bears slow answers.
//!
//! Only the panels of the workloads measured are drawn, two a row, the notes after them.
//!
//! The x-axes end at the largest client count measured. Each porthost model has a strong colour
//! of its own; its hand-written baseline has the same colour, dashed (dotted: the model with its
//! admin endpoint on), so every model sits visibly next to its twin.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{IntoSegmentedCoord, Ranged, SegmentValue, ValueFormatter};
use plotters::coord::types::RangedCoordusize;
use plotters::prelude::*;

use crate::Workload;
use crate::metric::Metric;
use crate::report::{Entry, Report};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const WIDTH: u32 = 1200;
const HEADER: u32 = 110;
const FONT: &str = "sans-serif";

/// How a server's series is drawn.
#[derive(Debug, Clone, Copy)]
struct Look {
    color: RGBColor,
    dash: Dash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dash {
    Solid,
    Dashed,
    Dotted,
}

/// Strong colours, all readable on white (Okabe-Ito's blue, vermillion and green, a purple and
/// darker greys and browns; no yellow).
const SEQUENTIAL: RGBColor = RGBColor(0, 114, 178);
const THREADS: RGBColor = RGBColor(213, 94, 0);
const PROCESSES: RGBColor = RGBColor(0, 140, 100);
const ASYNC: RGBColor = RGBColor(120, 40, 160);
const POOL: RGBColor = RGBColor(190, 0, 90);
const LOOP: RGBColor = RGBColor(0, 110, 120);
const PREFORK: RGBColor = RGBColor(150, 110, 0);
const PYTHON: RGBColor = RGBColor(140, 80, 40);
const TCPSERVER: RGBColor = RGBColor(70, 70, 70);
const OTHERS: [RGBColor; 3] = [
    RGBColor(0, 0, 0),
    RGBColor(120, 120, 0),
    RGBColor(90, 90, 160),
];

/// Every subject's look, by name.
fn looks(subjects: &[String]) -> BTreeMap<String, Look> {
    let mut others = OTHERS.iter().cycle();
    subjects
        .iter()
        .map(|name| {
            let (family, dash) = if let Some(model) = name.strip_suffix("+admin") {
                (model, Dash::Dotted)
            } else if name.starts_with("baseline-") {
                (name.as_str(), Dash::Dashed)
            } else {
                (name.as_str(), Dash::Solid)
            };
            let color = match family {
                "sequential" | "baseline-sequential" => SEQUENTIAL,
                "thread-per-client" | "baseline-threads" => THREADS,
                "process-per-client" | "baseline-fork" => PROCESSES,
                "async" | "baseline-async" => ASYNC,
                "thread-pool" | "baseline-pool" => POOL,
                "event-loop" | "baseline-loop" => LOOP,
                "prefork" | "baseline-prefork" => PREFORK,
                crate::server::PYTHON => PYTHON,
                crate::server::TCPSERVER => TCPSERVER,
                _ => *others.next().expect("cycles"),
            };
            (name.clone(), Look { color, dash })
        })
        .collect()
}

/// One point of a line: a median, maybe only a lower bound, with the clients still waiting.
#[derive(Debug, Clone, Copy)]
struct Point {
    clients: f64,
    value: f64,
    lower_bound: bool,
    waiting: f64,
}

#[derive(Debug)]
struct Line {
    look: Look,
    points: Vec<Point>,
}

/// The sessions figures of each server against its client count.
fn lines(report: &Report, looks: &BTreeMap<String, Look>, metric: Metric, scale: f64) -> Vec<Line> {
    report
        .subjects
        .iter()
        .filter_map(|subject| {
            let mut points: Vec<Point> = report
                .entries
                .iter()
                .filter(|e| &e.subject == subject && e.workload == Workload::Sessions)
                .filter_map(|e| {
                    Some(Point {
                        clients: e.size as f64,
                        value: e.median(metric)? * scale,
                        lower_bound: e.lower_bounds.contains(&metric),
                        waiting: e.median(Metric::Waiting).unwrap_or(0.0),
                    })
                })
                .collect();
            points.sort_by(|a, b| a.clients.total_cmp(&b.clients));
            // Several loads at one size (the targets' plan): keep the first.
            points.dedup_by(|a, b| a.clients == b.clients);
            (!points.is_empty()).then(|| Line {
                look: looks[subject],
                points,
            })
        })
        .collect()
}

/// One panel of the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Panel {
    Throughput,
    Slowest,
    FirstReply,
    Churn,
    Memory,
    CpuPerRequest,
    CpuPerConnection,
    /// A crowd at once, one line each, with work per line (sleep or busy).
    Burst(Workload),
}

impl Panel {
    const ALL: [Panel; 9] = [
        Panel::Throughput,
        Panel::Slowest,
        Panel::FirstReply,
        Panel::Churn,
        Panel::Memory,
        Panel::CpuPerRequest,
        Panel::CpuPerConnection,
        Panel::Burst(Workload::Sleep),
        Panel::Burst(Workload::Busy),
    ];

    fn workload(self) -> Workload {
        match self {
            Panel::Throughput | Panel::Slowest | Panel::FirstReply | Panel::CpuPerRequest => {
                Workload::Sessions
            }
            Panel::Churn | Panel::CpuPerConnection => Workload::Churn,
            Panel::Memory => Workload::Footprint,
            Panel::Burst(workload) => workload,
        }
    }

    /// The panels of the workloads the report measured, in order: a bench of one workload
    /// draws only its own.
    fn measured(report: &Report) -> Vec<Panel> {
        Panel::ALL
            .into_iter()
            .filter(|p| {
                report
                    .entries
                    .iter()
                    .any(|e| e.workload == p.workload() && e.measured())
            })
            .collect()
    }
}

/// The height of a row of two panels.
const ROW: u32 = 458;

pub fn svg(report: &Report) -> anyhow::Result<String> {
    let looks = looks(&report.subjects);
    let panels = Panel::measured(report);
    // The notes take the cell after the last panel.
    let rows = panels.len() / 2 + 1;
    let height = HEADER + ROW * rows as u32;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (header, body) = root.split_vertically(HEADER);
        draw_header(&header, report, &looks)?;
        let cells = body.split_evenly((rows, 2));
        for (panel, area) in panels.iter().zip(&cells) {
            draw_panel(area, *panel, report, &looks)?;
        }
        draw_notes(&cells[panels.len()], report)?;
        root.present()?;
    }
    Ok(out)
}

fn draw_panel(
    area: &Area<'_>,
    panel: Panel,
    report: &Report,
    looks: &BTreeMap<String, Look>,
) -> anyhow::Result<()> {
    let budget_us = report.budget_secs * 1e6;
    match panel {
        Panel::Throughput => line_chart(
            area,
            "Throughput (sessions)",
            "replies per second",
            &lines(report, looks, Metric::ReqPerS, 1.0),
            Scale::Linear,
            None,
        ),
        // p99.9, not p99: a queued client's first reply waits for every client ahead of it, but it
        // is one of its `lines` replies, and p99 of 100-line sessions steps right over it.
        Panel::Slowest => line_chart(
            area,
            "Slowest replies: p99.9 latency (sessions, log scale)",
            "p99.9 latency",
            &lines(report, looks, Metric::P999Us, 1.0),
            Scale::Log,
            Some(budget_us),
        ),
        Panel::FirstReply => line_chart(
            area,
            "Time to first reply of the last client (log scale)",
            "wait for the first reply",
            &lines(report, looks, Metric::FirstReplyMaxMs, 1000.0),
            Scale::Log,
            Some(budget_us),
        ),
        Panel::Churn => bar_chart(
            area,
            "Churn: connect, one line, close",
            "connections per second",
            &bars(report, looks, Workload::Churn, Metric::ConnPerS),
            Scale::Linear,
            |v| format!("{}/s", thousands(v)),
        ),
        Panel::Memory => bar_chart(
            area,
            "Memory per idle client (PSS growth, log scale)",
            "KiB per idle client",
            &bars(report, looks, Workload::Footprint, Metric::PssPerConnKib),
            Scale::Log,
            |v| format!("{v:.1} KiB"),
        ),
        Panel::CpuPerRequest => {
            // A zero is a run that spent less than one of `/proc`'s 10 ms ticks, not a free
            // request: drawn, it would say so.
            let mut cpu = lines(report, looks, Metric::CpuUsPerReq, 1.0);
            for line in &mut cpu {
                line.points.retain(|p| p.value > 0.0);
            }
            cpu.retain(|line| !line.points.is_empty());
            line_chart(
                area,
                "CPU time per request (sessions; under one /proc tick left out)",
                "CPU µs per request",
                &cpu,
                Scale::Linear,
                None,
            )
        }
        Panel::CpuPerConnection => bar_chart(
            area,
            "CPU time per connection (churn), reaped children included",
            "CPU µs per connection",
            &bars(report, looks, Workload::Churn, Metric::CpuUsPerConn),
            Scale::Linear,
            |v| format!("{v:.0} µs"),
        ),
        Panel::Burst(workload) => {
            let bars = burst_bars(report, looks, workload);
            let load = report
                .entries
                .iter()
                .find(|e| e.workload == workload && e.measured())
                .map_or("", |e| e.load.as_str());
            bar_chart(
                area,
                &format!("All at once, one line each ({load}): the last answer"),
                "ms from all connected to the last client's answer, the queue included",
                &bars,
                Scale::Linear,
                wait,
            )
        }
    }
}

/// The bars of a burst: when the last client was answered, with the median answer beside it.
fn burst_bars<'a>(
    report: &'a Report,
    looks: &BTreeMap<String, Look>,
    workload: Workload,
) -> Vec<Bar<'a>> {
    let mut bars = bars(report, looks, workload, Metric::LastAnswerMs);
    for bar in &mut bars {
        let Some(entry) = report
            .entries
            .iter()
            .find(|e| e.subject == bar.subject && e.workload == workload && e.measured())
        else {
            continue;
        };
        if let Some(p50) = entry.median(Metric::AnswerP50Ms) {
            let bound = if entry.lower_bounds.contains(&Metric::AnswerP50Ms) {
                "≥"
            } else {
                ""
            };
            let median = format!("median {bound}{}", wait(p50));
            bar.note = Some(match bar.note.take() {
                Some(waiting) => format!("{median}; {waiting}"),
                None => median,
            });
        }
    }
    bars
}

/// The title and a legend of every server.
fn draw_header(
    area: &Area<'_>,
    report: &Report,
    looks: &BTreeMap<String, Look>,
) -> anyhow::Result<()> {
    let services: Vec<&str> = {
        let mut s: Vec<&str> = report.entries.iter().map(|e| e.service.as_str()).collect();
        s.dedup();
        s
    };
    area.draw(&Text::new(
        format!(
            "porthost bench: {}, medians of {} run{}, {} s budget per measurement",
            services.join(", "),
            report.runs,
            if report.runs == 1 { "" } else { "s" },
            report.budget_secs
        ),
        (20, 14),
        (FONT, 22).into_font().color(&BLACK),
    ))?;
    let per_row = 5;
    for (i, subject) in report.subjects.iter().enumerate() {
        let (x, y) = (
            20 + (i % per_row) as i32 * 232,
            52 + (i / per_row) as i32 * 26,
        );
        let look = looks[subject];
        let sample = [(x, y + 8), (x + 40, y + 8)];
        draw_dashed(area, &sample, look)?;
        area.draw(&Text::new(
            subject.clone(),
            (x + 48, y),
            (FONT, 16).into_font().color(&BLACK),
        ))?;
    }
    Ok(())
}

/// A line in pixels with the look's dash.
fn draw_dashed(area: &Area<'_>, points: &[(i32, i32); 2], look: Look) -> anyhow::Result<()> {
    let style = look.color.stroke_width(3);
    match look.dash {
        Dash::Solid => area.draw(&PathElement::new(points.to_vec(), style))?,
        dash => {
            let (on, off) = if dash == Dash::Dashed {
                (10, 6)
            } else {
                (3, 5)
            };
            let [(x0, y), (x1, _)] = *points;
            let mut x = x0;
            while x < x1 {
                area.draw(&PathElement::new(
                    vec![(x, y), ((x + on).min(x1), y)],
                    style,
                ))?;
                x += on + off;
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scale {
    Linear,
    Log,
}

/// A chart of one sessions figure against the client count, one line per server. With a
/// `budget` (in the figure's unit, µs), latencies are drawn as durations and a grey line marks
/// the budget, where clients still waiting are drawn.
fn line_chart(
    area: &Area<'_>,
    title: &str,
    y_desc: &str,
    lines: &[Line],
    scale: Scale,
    budget: Option<f64>,
) -> anyhow::Result<()> {
    if lines.is_empty() {
        return empty(area, title, "no sessions workload measured");
    }
    let (x_range, clients) = x_axis(lines);
    let values = lines.iter().flat_map(|l| l.points.iter().map(|p| p.value));
    let (y_lo, y_hi) = values.fold((f64::MAX, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
    // The budget line only where some client was still waiting: elsewhere it would squeeze
    // the lines into the bottom of the chart.
    let waiting = lines.iter().any(|l| l.points.iter().any(|p| p.lower_bound));
    let budget = budget.filter(|_| waiting);
    let y_hi = budget.map_or(y_hi, |b| y_hi.max(b));
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, (FONT, 20))
        .margin(12)
        .margin_right(30)
        .x_label_area_size(44)
        .y_label_area_size(78);
    let x = x_range.log_scale().with_key_points(clients);
    match scale {
        Scale::Linear => {
            let mut chart = builder.build_cartesian_2d(x, 0.0..y_hi * 1.1)?;
            mesh(&mut chart, y_desc, |v| thousands(*v))?;
            draw_lines(&mut chart, lines, None)?;
        }
        Scale::Log => {
            let y_lo = (y_lo.max(1.0) / 2.0).max(1.0);
            let mut chart = builder.build_cartesian_2d(x, (y_lo..y_hi * 3.0).log_scale())?;
            mesh(&mut chart, y_desc, |v| duration(*v))?;
            if let Some(budget) = budget {
                let (x0, x1) = (chart.x_range().start, chart.x_range().end);
                chart.draw_series(DashedLineSeries::new(
                    [(x0, budget), (x1, budget)],
                    8,
                    6,
                    RGBColor(110, 110, 110).stroke_width(2),
                ))?;
                chart.draw_series(std::iter::once(
                    EmptyElement::at((x0, budget))
                        + Text::new(
                            "time budget: ▲ = clients still waiting, drawn at the budget",
                            (6, -20),
                            (FONT, 14).into_font().color(&RGBColor(80, 80, 80)),
                        ),
                ))?;
            }
            draw_lines(&mut chart, lines, budget)?;
        }
    }
    Ok(())
}

/// The client-count axis: from the smallest count measured to the largest (one count alone
/// gets some room), with a tick at every count measured.
fn x_axis(lines: &[Line]) -> (std::ops::Range<f64>, Vec<f64>) {
    let mut clients: Vec<f64> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.clients))
        .collect();
    clients.sort_by(f64::total_cmp);
    clients.dedup();
    let (lo, hi) = (clients[0], clients[clients.len() - 1]);
    let range = if lo < hi { lo..hi } else { lo / 2.0..hi * 2.0 };
    (range, clients)
}

fn mesh<X, Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
    y_desc: &str,
    y_format: impl Fn(&f64) -> String,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc("clients connected at once")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&y_format)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()?;
    Ok(())
}

/// Every line with its points: ● a median, ▲ a lower bound (clients still waiting), labelled
/// with how many were still waiting when `budget` is given.
fn draw_lines<X, Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
    lines: &[Line],
    budget: Option<f64>,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    // Labels of points drawn at one place (every queue ends at the budget) go one under another.
    let mut labels_at: BTreeMap<u64, i32> = BTreeMap::new();
    for line in lines {
        let style = line.look.color.stroke_width(3);
        let points: Vec<(f64, f64)> = line.points.iter().map(|p| (p.clients, p.value)).collect();
        match line.look.dash {
            Dash::Solid => {
                chart.draw_series(LineSeries::new(points, style))?;
            }
            Dash::Dashed => {
                chart.draw_series(DashedLineSeries::new(points, 10, 6, style))?;
            }
            Dash::Dotted => {
                chart.draw_series(DashedLineSeries::new(points, 3, 5, style))?;
            }
        }
        let color = line.look.color;
        for p in &line.points {
            if p.lower_bound {
                chart.draw_series(std::iter::once(TriangleMarker::new(
                    (p.clients, p.value),
                    8,
                    color.filled(),
                )))?;
                if budget.is_some() && p.waiting > 0.0 {
                    let below = labels_at.entry(p.clients.to_bits()).or_insert(0);
                    chart.draw_series(std::iter::once(
                        EmptyElement::at((p.clients, p.value))
                            + Text::new(
                                format!("{} waiting", p.waiting),
                                (-95, 10 + *below * 17),
                                (FONT, 14).into_font().color(&color),
                            ),
                    ))?;
                    *below += 1;
                }
            } else {
                chart.draw_series(std::iter::once(Circle::new(
                    (p.clients, p.value),
                    4,
                    color.filled(),
                )))?;
            }
        }
    }
    Ok(())
}

/// One bar: a server's median, and a note (clients left waiting) if any.
#[derive(Debug)]
struct Bar<'a> {
    subject: &'a str,
    look: Look,
    /// `None` where too few clients were served to tell (a queue): only the note is shown.
    value: Option<f64>,
    /// The value is a lower bound (clients were still waiting): shown with `≥`.
    lower_bound: bool,
    note: Option<String>,
}

fn bars<'a>(
    report: &'a Report,
    looks: &BTreeMap<String, Look>,
    workload: Workload,
    metric: Metric,
) -> Vec<Bar<'a>> {
    report
        .subjects
        .iter()
        .filter_map(|subject| {
            let entry: &Entry = report
                .entries
                .iter()
                .find(|e| &e.subject == subject && e.workload == workload && e.measured())?;
            let waiting = entry.median(Metric::Waiting).unwrap_or(0.0);
            let value = entry.median(metric);
            if value.is_none() && waiting == 0.0 {
                return None;
            }
            Some(Bar {
                subject,
                look: looks[subject],
                value,
                lower_bound: entry.lower_bounds.contains(&metric),
                note: (waiting > 0.0).then(|| format!("{waiting} of {} never served", entry.size)),
            })
        })
        .collect()
}

/// Horizontal bars, one per server, top down in the table's order, with the value (and note)
/// written at the end of each.
fn bar_chart(
    area: &Area<'_>,
    title: &str,
    x_desc: &str,
    bars: &[Bar<'_>],
    scale: Scale,
    label: impl Fn(f64) -> String,
) -> anyhow::Result<()> {
    if bars.is_empty() {
        return empty(area, title, "not measured");
    }
    let max = bars
        .iter()
        .filter_map(|b| b.value)
        .fold(0.0f64, f64::max)
        .max(1.0);
    let names: Vec<&str> = bars.iter().map(|b| b.subject).collect();
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, (FONT, 20))
        .margin(12)
        .margin_right(30)
        .x_label_area_size(44)
        .y_label_area_size(150);
    let y = (0..bars.len()).into_segmented();
    let y_label = |v: &SegmentValue<usize>| match v {
        // Segment 0 is at the bottom: the first server is drawn in the top one.
        SegmentValue::CenterOf(i) if *i < names.len() => names[names.len() - 1 - i].to_owned(),
        _ => String::new(),
    };
    match scale {
        Scale::Linear => {
            // Room at the right for the longest bar's label.
            let mut chart = builder.build_cartesian_2d(0.0..max * 1.45, y)?;
            bar_mesh(&mut chart, x_desc, bars.len(), &y_label, |v| thousands(*v))?;
            draw_bars(&mut chart, bars, 0.0, label)?;
        }
        Scale::Log => {
            let smallest = bars
                .iter()
                .filter_map(|b| b.value)
                .filter(|v| *v > 0.0)
                .fold(max, f64::min);
            let start = (smallest / 2.0).min(1.0);
            let mut chart = builder.build_cartesian_2d((start..max * 20.0).log_scale(), y)?;
            bar_mesh(&mut chart, x_desc, bars.len(), &y_label, |v| thousands(*v))?;
            draw_bars(&mut chart, bars, start, label)?;
        }
    }
    Ok(())
}

fn bar_mesh<X>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, SegmentedCoord>>,
    x_desc: &str,
    bars: usize,
    y_label: &dyn Fn(&SegmentValue<usize>) -> String,
    x_label: impl Fn(&f64) -> String,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars)
        .y_label_formatter(y_label)
        // Few enough that labels like "40,000" never run into each other.
        .x_labels(6)
        .x_desc(x_desc)
        .x_label_formatter(&x_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(205, 205, 205))
        .draw()?;
    Ok(())
}

/// The y-axis of a bar chart: one segment per server.
type SegmentedCoord = plotters::coord::ranged1d::SegmentedCoord<RangedCoordusize>;

fn draw_bars<X>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, SegmentedCoord>>,
    bars: &[Bar<'_>],
    start: f64,
    label: impl Fn(f64) -> String,
) -> anyhow::Result<()>
where
    X: Ranged<ValueType = f64>,
{
    for (i, bar) in bars.iter().enumerate() {
        let segment = bars.len() - 1 - i;
        let color = bar.look.color;
        let (top, bottom) = (
            SegmentValue::Exact(segment),
            SegmentValue::Exact(segment + 1),
        );
        let value = bar.value.unwrap_or(start);
        if value > start {
            // Baselines lighter with their colour's border, models solid.
            let fill = if bar.look.dash == Dash::Solid {
                color.filled()
            } else {
                color.mix(0.35).filled()
            };
            for style in [fill, color.stroke_width(2)] {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(start, top.clone()), (value, bottom.clone())],
                    style,
                )))?;
            }
        }
        let bound = if bar.lower_bound { "≥" } else { "" };
        let text = match (bar.value, &bar.note) {
            (Some(v), Some(note)) => format!("{bound}{} ({note})", label(v)),
            (Some(v), None) => format!("{bound}{}", label(v)),
            (None, Some(note)) => note.clone(),
            (None, None) => String::new(),
        };
        chart.draw_series(std::iter::once(
            EmptyElement::at((value.max(start), SegmentValue::CenterOf(segment)))
                + Text::new(text, (6, -8), (FONT, 14).into_font().color(&BLACK)),
        ))?;
    }
    Ok(())
}

/// How to read the chart.
fn draw_notes(area: &Area<'_>, report: &Report) -> anyhow::Result<()> {
    let budget = report.budget_secs;
    let lines = [
        "How to read this chart".to_owned(),
        String::new(),
        "Solid: porthost's models. Dashed, same colour: the hand-written".to_owned(),
        "baseline it is compared with. Dotted: the model with its admin".to_owned(),
        "endpoint on.".to_owned(),
        String::new(),
        format!("▲: a lower bound. Clients still waiting when the {budget} s"),
        "budget ran out count with the time they had waited, so a queue".to_owned(),
        "shows at the budget line with how many were still waiting.".to_owned(),
        String::new(),
        "Latency is p99.9: a queued client's first reply waits for all".to_owned(),
        "ahead of it, but is one of its many replies; p99 steps over it.".to_owned(),
        String::new(),
        "Memory is PSS (/proc/<pid>/smaps_rollup) summed over the".to_owned(),
        "server's processes: pages shared by a forking server's".to_owned(),
        "children count once, not once per child.".to_owned(),
        String::new(),
        "CPU is user + system time from /proc/<pid>/stat of every".to_owned(),
        "process of the server, and of every child it reaped.".to_owned(),
        String::new(),
        "Single runs on a shared machine swing by ±30% in throughput;".to_owned(),
        "CPU per unit holds steadier. Compare servers of one run.".to_owned(),
    ];
    for (i, line) in lines.iter().enumerate() {
        let size = if i == 0 { 18 } else { 15 };
        area.draw(&Text::new(
            line.clone(),
            // 19 px a line: all 22 fit in a cell of the chart.
            (30, 24 + i as i32 * 19),
            (FONT, size).into_font().color(&RGBColor(40, 40, 40)),
        ))?;
    }
    Ok(())
}

fn empty(area: &Area<'_>, title: &str, why: &str) -> anyhow::Result<()> {
    area.draw(&Text::new(
        format!("{title}: {why}"),
        (30, 40),
        (FONT, 16).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    Ok(())
}

/// 12,345 as "12,345"; small values with a decimal.
fn thousands(v: f64) -> String {
    if v.abs() < 10.0 && v.fract() != 0.0 {
        return format!("{v:.1}");
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

/// A duration in µs as "50 µs", "2 ms", "1.5 s".
fn duration(us: f64) -> String {
    if us >= 1e6 {
        format!("{} s", trim(us / 1e6))
    } else if us >= 1e3 {
        format!("{} ms", trim(us / 1e3))
    } else {
        format!("{} µs", trim(us))
    }
}

/// A wait in ms as "110 ms" or "1.05 s": close enough to compare waits of one bench.
fn wait(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

fn trim(v: f64) -> String {
    let text = format!("{v:.1}");
    text.strip_suffix(".0").map_or(text.clone(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_axis_ends_at_the_largest_count_measured() {
        let point = |clients: f64| Point {
            clients,
            value: 1.0,
            lower_bound: false,
            waiting: 0.0,
        };
        let look = Look {
            color: SEQUENTIAL,
            dash: Dash::Solid,
        };
        let lines = [
            Line {
                look,
                points: vec![point(1.0), point(10.0), point(1000.0)],
            },
            Line {
                look,
                points: vec![point(10.0), point(100.0)],
            },
        ];
        let (range, ticks) = x_axis(&lines);
        assert_eq!(range, 1.0..1000.0);
        assert_eq!(ticks, [1.0, 10.0, 100.0, 1000.0]);
        let (range, ticks) = x_axis(&lines[1..]);
        assert_eq!((range, ticks), (10.0..100.0, vec![10.0, 100.0]));
    }

    #[test]
    fn a_bench_of_the_bursts_alone_draws_their_panels_with_the_queue_marked() {
        use crate::server::Subject;
        use crate::{Job, Load};
        use porthost::config::Model;
        let sleep = Load::Sleep {
            clients: 50,
            ms: 100,
        };
        let busy = Load::Busy {
            clients: 50,
            us: 20000,
        };
        let job = |model| Job {
            subject: Subject::Model(model),
            service: "palindrome-v3".to_owned(),
            loads: vec![sleep, busy],
        };
        let jobs = [job(Model::Sequential), job(Model::EventLoop)];
        let mut report = Report::new(&jobs, 1, 3.0);
        let sample = |last: f64, p50: f64, waiting: f64| {
            let mut sample = crate::metric::Sample::default();
            sample.set_bound(Metric::LastAnswerMs, last, waiting > 0.0);
            sample.set(Metric::AnswerP50Ms, p50);
            sample.set(Metric::Waiting, waiting);
            sample
        };
        report.add(&jobs[0], sleep, sample(3000.0, 2500.0, 20.0));
        report.add(&jobs[1], sleep, sample(104.0, 102.0, 0.0));
        report.add(&jobs[0], busy, sample(1010.0, 505.0, 0.0));
        report.add(&jobs[1], busy, sample(1020.0, 512.0, 0.0));
        assert_eq!(
            Panel::measured(&report),
            [Panel::Burst(Workload::Sleep), Panel::Burst(Workload::Busy)]
        );
        let svg = svg(&report).unwrap();
        let text = |t: &str| svg.contains(&format!(">\n{t}\n</text>"));
        assert!(text(
            "All at once, one line each (sleep_ms=100 c=50): the last answer"
        ));
        assert!(text(
            "All at once, one line each (busy_us=20000 c=50): the last answer"
        ));
        assert!(!svg.contains("Throughput"), "only what was measured");
        // The queue cut short by the budget is a lower bound, with those never answered.
        assert!(
            text("≥3.00 s (median 2.50 s; 20 of 50 never served)"),
            "{svg}"
        );
        assert!(text("104 ms (median 102 ms)"), "{svg}");
        assert!(text("1.01 s (median 505 ms)"), "{svg}");
    }

    #[test]
    fn labels() {
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(2.5), "2.5");
        assert_eq!(duration(50.0), "50 µs");
        assert_eq!(duration(2000.0), "2 ms");
        assert_eq!(duration(1_500_000.0), "1.5 s");
    }

    #[test]
    fn models_and_their_baselines_share_a_colour_and_nothing_is_yellow() {
        let names: Vec<String> = [
            "sequential",
            "baseline-sequential",
            "thread-per-client",
            "thread-per-client+admin",
            "baseline-threads",
            "process-per-client",
            "baseline-fork",
            "async",
            "baseline-async",
            "thread-pool",
            "baseline-pool",
            "event-loop",
            "baseline-loop",
            "prefork",
            "baseline-prefork",
            "python-forking",
            "tcpserver-exec",
            "mine",
        ]
        .map(str::to_owned)
        .to_vec();
        let looks = looks(&names);
        let color = |n: &str| looks[n].color;
        assert_eq!(color("sequential"), color("baseline-sequential"));
        assert_eq!(color("thread-per-client"), color("baseline-threads"));
        assert_eq!(color("thread-per-client"), color("thread-per-client+admin"));
        assert_eq!(color("process-per-client"), color("baseline-fork"));
        assert_eq!(color("async"), color("baseline-async"));
        assert_eq!(color("thread-pool"), color("baseline-pool"));
        assert_eq!(color("event-loop"), color("baseline-loop"));
        assert_eq!(color("prefork"), color("baseline-prefork"));
        assert_eq!(looks["baseline-fork"].dash, Dash::Dashed);
        assert_eq!(looks["thread-per-client+admin"].dash, Dash::Dotted);
        for (name, look) in &looks {
            let RGBColor(r, g, b) = look.color;
            // Relative luminance well below white's, so every line stands out on white.
            let luminance = 0.2126 * r as f64 + 0.7152 * g as f64 + 0.0722 * b as f64;
            assert!(luminance < 140.0, "{name} is too faint: {:?}", look.color);
        }
    }
}
