//! The output of `vmsa compare`: the table, the JSON array and the chart.

use std::error::Error;
use std::io::{self, Write};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Serialize;

use super::Row;

/// One row as `--json` prints it: exactly these fields, in this order.
#[derive(Serialize)]
struct JsonRow<'a> {
    workload: &'a str,
    policy: &'a str,
    profile: &'a str,
    tlbi_ops: u64,
    broadcast_ops: u64,
    dsb: u64,
    collateral: u64,
    spurious_faults: u64,
    cycles: u64,
    violations: u64,
}

impl<'a> From<&'a Row> for JsonRow<'a> {
    fn from(r: &'a Row) -> Self {
        JsonRow {
            workload: &r.workload,
            policy: &r.policy,
            profile: &r.profile,
            tlbi_ops: r.tlbi_ops,
            broadcast_ops: r.broadcast_ops,
            dsb: r.dsb,
            collateral: r.collateral,
            spurious_faults: r.spurious_faults,
            cycles: r.cycles,
            violations: r.violations,
        }
    }
}

/// Writes `rows` as one JSON array of objects, in the order given.
pub(crate) fn write_json(rows: &[Row], out: &mut impl Write) -> io::Result<()> {
    let rows: Vec<JsonRow<'_>> = rows.iter().map(JsonRow::from).collect();
    serde_json::to_writer_pretty(&mut *out, &rows)?;
    writeln!(out)
}

/// `cycles` relative to `reference`: "1.00x", "37.2x", "1234x"; "-" when
/// the reference took no cycles and this row did.
fn relative(cycles: u64, reference: u64) -> String {
    if reference == 0 {
        return if cycles == 0 {
            "1.00x".into()
        } else {
            "-".into()
        };
    }
    let r = cycles as f64 / reference as f64;
    if r < 9.995 {
        format!("{r:.2}x")
    } else if r < 99.95 {
        format!("{r:.1}x")
    } else {
        format!("{r:.0}x")
    }
}

/// The policy listed first in each table.
const FIRST: &str = "vmsa";

/// The model's oracle: exactly the stale entries removed, not realizable.
const FLOOR: &str = super::policies::ORACLE.name;

/// The rows grouped by (workload, profile), groups in order of first
/// appearance, the `vmsa` row first in each group and the others in the
/// order given.
fn groups(rows: &[Row]) -> Vec<Vec<&Row>> {
    let mut groups: Vec<Vec<&Row>> = Vec::new();
    for row in rows {
        match groups
            .iter_mut()
            .find(|g| g[0].workload == row.workload && g[0].profile == row.profile)
        {
            Some(g) => g.push(row),
            None => groups.push(vec![row]),
        }
    }
    for g in &mut groups {
        // Stable: the baselines keep their order.
        g.sort_by_key(|r| r.policy != FIRST);
    }
    groups
}

/// The cheapest row of `group` with no violations (the first of equals),
/// the one every other is measured against. Rows with violations are
/// never it: a policy that is wrong is not cheap.
/// The oracle is not a policy anyone can run (it is the floor), so it is
/// never the best either.
fn best<'a>(group: &[&'a Row]) -> Option<&'a Row> {
    group
        .iter()
        .copied()
        .filter(|r| r.violations == 0 && r.policy != FLOOR)
        .min_by_key(|r| r.cycles)
}

/// What the "vs best" cell says for `row`.
fn versus(row: &Row, best: Option<&Row>) -> String {
    match best {
        _ if row.violations > 0 => "INCORRECT".into(),
        Some(b) => relative(row.cycles, b.cycles),
        None => "-".into(),
    }
}

/// The line under a table: who wins, and by how much.
fn verdict(group: &[&Row]) -> String {
    let incorrect: Vec<&str> = group
        .iter()
        .filter(|r| r.violations > 0)
        .map(|r| r.policy.as_str())
        .collect();
    let mut line = match best(group) {
        None => "no policy is correct here (every one has violations)".to_string(),
        Some(b) => {
            let mut others: Vec<&&Row> = group
                .iter()
                .filter(|r| r.violations == 0 && r.policy != b.policy && r.policy != FLOOR)
                .collect();
            others.sort_by_key(|r| r.cycles);
            let mut line = format!("cheapest correct: {}", b.policy);
            if !others.is_empty() {
                let far: Vec<String> = others
                    .iter()
                    .map(|r| format!("{} {}", r.policy, relative(r.cycles, b.cycles)))
                    .collect();
                line.push_str(&format!("; then {}", far.join(", ")));
            }
            if let Some(floor) = group.iter().find(|r| r.policy == FLOOR) {
                line.push_str(&format!(
                    "; {} is {} the floor ({FLOOR}: exactly the stale entries removed, not \
                     realizable)",
                    b.policy,
                    relative(b.cycles, floor.cycles)
                ));
            }
            line
        }
    };
    if !incorrect.is_empty() {
        line.push_str(&format!(
            "; incorrect, not ranked: {}",
            incorrect.join(", ")
        ));
    }
    line
}

const HEADER: [&str; 9] = [
    "policy",
    "TLBI",
    "broadcast",
    "DSB",
    "collateral",
    "spurious faults",
    "cycles",
    "vs best",
    "violations",
];

/// The legend, printed before the tables.
pub(crate) const LEGEND: &str = "Per workload and cost profile, one row per policy. \
TLBI: TLB invalidations issued; broadcast: of them Inner Shareable; DSB: barriers; \
collateral: correct TLB entries removed with the stale ones; spurious faults: faults \
taken on entries stricter than the tables; cycles: estimated cost under the profile; \
vs best: cycles relative to the cheapest policy with no violations, the oracle \
(the floor) aside (INCORRECT: the policy has violations and is not ranked); violations: checker findings (the \
`none` control is meant to have them). Under each table: who wins, and by how much.";

/// Writes the legend, then `rows` as a table per workload and profile,
/// `vmsa` first, each followed by its verdict line.
pub(crate) fn write_table(rows: &[Row], pes: usize, out: &mut impl Write) -> io::Result<()> {
    if rows.is_empty() {
        writeln!(out, "nothing to compare")?;
        return Ok(());
    }
    writeln!(out, "{LEGEND}")?;
    writeln!(out)?;
    let groups = groups(rows);
    let cells: Vec<Vec<[String; 9]>> = groups
        .iter()
        .map(|g| {
            let best = best(g);
            g.iter()
                .map(|r| {
                    [
                        r.policy.clone(),
                        r.tlbi_ops.to_string(),
                        r.broadcast_ops.to_string(),
                        r.dsb.to_string(),
                        r.collateral.to_string(),
                        r.spurious_faults.to_string(),
                        r.cycles.to_string(),
                        versus(r, best),
                        r.violations.to_string(),
                    ]
                })
                .collect()
        })
        .collect();
    // One set of column widths for all groups, so that they line up.
    let mut widths = HEADER.map(str::len);
    for line in cells.iter().flatten() {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.len());
        }
    }
    let write_line = |out: &mut dyn Write, line: &[&str]| -> io::Result<()> {
        let mut text = String::from(" ");
        for (i, (cell, w)) in line.iter().zip(widths).enumerate() {
            text.push_str("  ");
            if i == 0 {
                text.push_str(&format!("{cell:<w$}"));
            } else {
                text.push_str(&format!("{cell:>w$}"));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    for (i, (g, lines)) in groups.iter().zip(&cells).enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(
            out,
            "{} ({} profile, {pes} PE{})",
            g[0].workload,
            g[0].profile,
            if pes == 1 { "" } else { "s" }
        )?;
        write_line(out, &HEADER)?;
        for line in lines {
            write_line(out, &line.each_ref().map(String::as_str))?;
        }
        writeln!(out, "  {}", verdict(g))?;
    }
    Ok(())
}

/// Bar colours: the Okabe-Ito palette (Okabe and Ito, "Color Universal
/// Design", 2002), told apart with the common forms of colour blindness.
/// Eight colours for up to twelve policies, so each policy also has its
/// own marker ([`Marker`]): no two policies share both.
const COLOURS: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xb2), // blue
    RGBColor(0xe6, 0x9f, 0x00), // orange
    RGBColor(0x00, 0x9e, 0x73), // bluish green
    RGBColor(0xd5, 0x5e, 0x00), // vermillion
    RGBColor(0xcc, 0x79, 0xa7), // reddish purple
    RGBColor(0x56, 0xb4, 0xe9), // sky blue
    RGBColor(0xf0, 0xe4, 0x42), // yellow
    RGBColor(0x00, 0x00, 0x00), // black
];

/// The marker drawn on top of each bar and in the legend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    Circle,
    Triangle,
    Square,
    Cross,
    Diamond,
    Ring,
}

const MARKERS: [Marker; 6] = [
    Marker::Circle,
    Marker::Triangle,
    Marker::Square,
    Marker::Cross,
    Marker::Diamond,
    Marker::Ring,
];

/// Policy `k`'s colour and marker: (k mod 8, k mod 6) differ for every pair
/// of policies below 24.
fn style(k: usize) -> (RGBColor, Marker) {
    (COLOURS[k % COLOURS.len()], MARKERS[k % MARKERS.len()])
}

/// Draws `marker` centred at `(x, y)` (pixels) in `colour`.
fn draw_marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    marker: Marker,
    (x, y): (i32, i32),
    colour: RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let r = 5;
    let fill = colour.filled();
    let edge = BLACK.stroke_width(1);
    match marker {
        Marker::Circle => {
            area.draw(&Circle::new((x, y), r, fill))?;
            area.draw(&Circle::new((x, y), r, edge))
        }
        Marker::Ring => area.draw(&Circle::new((x, y), r, colour.stroke_width(2))),
        Marker::Square => {
            area.draw(&Rectangle::new([(x - r, y - r), (x + r, y + r)], fill))?;
            area.draw(&Rectangle::new([(x - r, y - r), (x + r, y + r)], edge))
        }
        Marker::Triangle => {
            let pts = vec![(x, y - r), (x + r, y + r), (x - r, y + r)];
            area.draw(&Polygon::new(pts.clone(), fill))?;
            area.draw(&PathElement::new([pts, vec![(x, y - r)]].concat(), edge))
        }
        Marker::Diamond => {
            let pts = vec![(x, y - r), (x + r, y), (x, y + r), (x - r, y)];
            area.draw(&Polygon::new(pts.clone(), fill))?;
            area.draw(&PathElement::new([pts, vec![(x, y - r)]].concat(), edge))
        }
        Marker::Cross => {
            let stroke = colour.stroke_width(3);
            area.draw(&PathElement::new(
                vec![(x - r, y - r), (x + r, y + r)],
                stroke,
            ))?;
            area.draw(&PathElement::new(
                vec![(x - r, y + r), (x + r, y - r)],
                stroke,
            ))
        }
    }
}

/// A log axis label: powers of ten as `1e6`, others as `2e6`, small
/// values as they are.
fn log_label(y: f64) -> String {
    if y <= 0.0 {
        return "0".into();
    }
    if y < 1000.0 {
        return format!("{y:.0}");
    }
    let exp = y.log10().floor();
    let mantissa = y / 10f64.powf(exp);
    if (mantissa - mantissa.round()).abs() < 1e-6 {
        format!("{}e{exp:.0}", mantissa.round())
    } else {
        format!("{mantissa:.1}e{exp:.0}")
    }
}

/// Pixels to the right of the plot, for the legend.
const LEGEND_WIDTH: i32 = 230;

/// An SVG chart of the cycles of the rows of `profile`: a group of bars per
/// workload, one colour per policy, logarithmic y axis, with a legend.
///
/// Text is written as SVG `<text>` elements and needs no fonts; should
/// drawing it fail all the same, the chart is drawn without text.
pub(crate) fn svg_chart(rows: &[Row], profile: &str, pes: usize) -> io::Result<String> {
    draw_chart(rows, profile, pes, true)
        .or_else(|_| draw_chart(rows, profile, pes, false))
        .map_err(|e| io::Error::other(format!("cannot draw the chart: {e}")))
}

/// The distinct values of `key` over `rows`, in order of first appearance.
fn distinct<'a>(rows: &[&'a Row], key: impl Fn(&'a Row) -> &'a str) -> Vec<&'a str> {
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        let name = key(r);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn draw_chart(
    rows: &[Row],
    profile: &str,
    pes: usize,
    text: bool,
) -> Result<String, Box<dyn Error>> {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.profile == profile).collect();
    let workloads = distinct(&rows, |r| &r.workload);
    let mut policies = distinct(&rows, |r| &r.policy);
    policies.sort_by_key(|p| *p != FIRST);

    // Whole powers of ten strictly around the data, so that every bar
    // (rising from the bottom) has some height and none touches the top.
    let nonzero = || rows.iter().map(|r| r.cycles).filter(|&c| c > 0);
    let low = nonzero().min().unwrap_or(1) as f64;
    let high = nonzero().max().unwrap_or(1) as f64;
    let mut bottom = 10f64.powf(low.log10().floor());
    if bottom >= low {
        bottom /= 10.0;
    }
    let mut top = 10f64.powf(high.log10().ceil());
    if top <= high {
        top *= 10.0;
    }

    let n = workloads.len().max(1);
    let width = (200 + 110 * n).clamp(640, 2400) as u32 + LEGEND_WIDTH as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut builder = ChartBuilder::on(&root);
        builder.margin(20).margin_right(LEGEND_WIDTH + 10);
        if text {
            builder
                .caption(
                    format!(
                        "Estimated TLB maintenance cost per workload ({profile} profile, {pes} PEs)"
                    ),
                    ("sans-serif", 20),
                )
                .x_label_area_size(40)
                .y_label_area_size(80);
        }
        let mut chart = builder.build_cartesian_2d(0.0..n as f64, (bottom..top).log_scale())?;

        // The x axis is labelled by hand below: a workload name per group.
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh().x_labels(0);
        if text {
            mesh.y_desc("estimated cycles (log scale)")
                .y_label_formatter(&|&y: &f64| log_label(y));
        } else {
            mesh.y_labels(0);
        }
        mesh.draw()?;

        let slot = 0.8 / policies.len().max(1) as f64;
        for (k, policy) in policies.iter().enumerate() {
            let (colour, marker) = style(k);
            let bars: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.policy == *policy && r.cycles > 0)
                .filter_map(|r| {
                    let i = workloads.iter().position(|w| *w == r.workload)?;
                    Some((i as f64 + 0.1 + k as f64 * slot, r.cycles as f64))
                })
                .collect();
            chart.draw_series(bars.iter().map(|&(x, top)| {
                Rectangle::new([(x, bottom), (x + slot * 0.9, top)], colour.filled())
            }))?;
            // The policy's marker on top of each of its bars: colour is not
            // the only thing that tells them apart.
            for &(x, top) in &bars {
                let at = chart.backend_coord(&(x + slot * 0.45, top));
                draw_marker(&root, marker, (at.0, at.1 - 7), colour)?;
            }
        }
        if text {
            let below = ("sans-serif", 14)
                .into_text_style(&root)
                .pos(Pos::new(HPos::Center, VPos::Top));
            for (i, workload) in workloads.iter().enumerate() {
                let (x, y) = chart.backend_coord(&(i as f64 + 0.5, bottom));
                root.draw(&Text::new(workload.to_string(), (x, y + 8), below.clone()))?;
            }
            // The legend, in the right margin where no bar can hide it.
            let beside = ("sans-serif", 14)
                .into_text_style(&root)
                .pos(Pos::new(HPos::Left, VPos::Center));
            let x = width as i32 - LEGEND_WIDTH;
            for (k, policy) in policies.iter().enumerate() {
                let y = 70 + 22 * k as i32;
                let (colour, marker) = style(k);
                root.draw(&Rectangle::new(
                    [(x, y - 6), (x + 12, y + 6)],
                    colour.filled(),
                ))?;
                draw_marker(&root, marker, (x + 24, y), colour)?;
                // A policy with violations is not a contender, however low
                // its bars.
                let wrong = rows.iter().any(|r| r.policy == *policy && r.violations > 0);
                let label = if wrong {
                    format!("{policy} (incorrect)")
                } else {
                    policy.to_string()
                };
                root.draw(&Text::new(label, (x + 36, y), beside.clone()))?;
            }
        }
        root.present()?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &str, policy: &str, profile: &str, cycles: u64, violations: u64) -> Row {
        Row {
            workload: workload.into(),
            policy: policy.into(),
            profile: profile.into(),
            tlbi_ops: 12,
            broadcast_ops: 3,
            dsb: 7,
            collateral: 40,
            spurious_faults: 1,
            cycles,
            violations,
        }
    }

    fn sample() -> Vec<Row> {
        vec![
            row("map", "vmsa", "native", 1000, 0),
            row("map", "linux", "native", 37_200, 0),
            row("map", "vmsa", "nested", 2000, 0),
            row("map", "linux", "nested", 250_000, 0),
            // vmsa after a baseline: the table still puts it first.
            row("remap", "lazy", "native", 1500, 2),
            row("remap", "vmsa", "native", 1000, 0),
        ]
    }

    fn table(rows: &[Row]) -> String {
        let mut out = Vec::new();
        write_table(rows, 4, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn relative_cycles() {
        assert_eq!(relative(1000, 1000), "1.00x");
        assert_eq!(relative(37_200, 1000), "37.2x");
        assert_eq!(relative(1500, 1000), "1.50x");
        assert_eq!(relative(500, 1000), "0.50x");
        assert_eq!(relative(9_999, 1000), "10.0x");
        assert_eq!(relative(125_000, 1000), "125x");
        assert_eq!(relative(0, 0), "1.00x");
        assert_eq!(relative(5, 0), "-");
    }

    #[test]
    fn table_groups_by_workload_and_profile() {
        let text = table(&sample());
        let lines: Vec<&str> = text.lines().collect();
        let expected = [
            LEGEND,
            "",
            "map (native profile, 4 PEs)",
            "   policy  TLBI  broadcast  DSB  collateral  spurious faults  cycles    vs best  violations",
            "   vmsa      12          3    7          40                1    1000      1.00x           0",
            "   linux     12          3    7          40                1   37200      37.2x           0",
            "  cheapest correct: vmsa; then linux 37.2x",
            "",
            "map (nested profile, 4 PEs)",
            "   policy  TLBI  broadcast  DSB  collateral  spurious faults  cycles    vs best  violations",
            "   vmsa      12          3    7          40                1    2000      1.00x           0",
            "   linux     12          3    7          40                1  250000       125x           0",
            "  cheapest correct: vmsa; then linux 125x",
            "",
            "remap (native profile, 4 PEs)",
            "   policy  TLBI  broadcast  DSB  collateral  spurious faults  cycles    vs best  violations",
            "   vmsa      12          3    7          40                1    1000      1.00x           0",
            "   lazy      12          3    7          40                1    1500  INCORRECT           2",
            "  cheapest correct: vmsa; incorrect, not ranked: lazy",
        ];
        assert_eq!(lines, expected, "\n{text}");
    }

    #[test]
    fn a_cheaper_policy_with_violations_is_never_the_best() {
        let text = table(&[
            row("map", "vmsa", "native", 1000, 0),
            row("map", "kvm", "native", 800, 0),
            row("map", "none", "native", 10, 5),
            row("map", "oracle", "native", 100, 0),
        ]);
        let cell = |policy: &str| {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(policy))
                .unwrap();
            line.split_whitespace().nth(7).unwrap().to_string()
        };
        assert_eq!(cell("kvm"), "1.00x", "{text}");
        assert_eq!(cell("vmsa"), "1.25x", "{text}");
        assert_eq!(cell("none"), "INCORRECT", "{text}");
        // The oracle is measured, but never wins: it is the floor.
        assert_eq!(cell("oracle"), "0.12x", "{text}");
        let last = text.lines().last().unwrap();
        assert_eq!(
            last,
            "  cheapest correct: kvm; then vmsa 1.25x; kvm is 8.00x the floor (oracle: exactly \
             the stale entries removed, not realizable); incorrect, not ranked: none",
            "{text}"
        );
    }

    #[test]
    fn a_table_where_nothing_is_correct_says_so() {
        let text = table(&[row("map", "none", "native", 10, 5)]);
        let line = text.lines().nth(4).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[7], "INCORRECT", "{text}");
        assert!(
            text.lines()
                .last()
                .unwrap()
                .contains("no policy is correct"),
            "{text}"
        );
    }

    #[test]
    fn empty_table() {
        assert_eq!(table(&[]), "nothing to compare\n");
    }

    #[test]
    fn json_fields_and_types() {
        let mut out = Vec::new();
        write_json(&sample(), &mut out).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let array = value.as_array().unwrap();
        assert_eq!(array.len(), 6);
        let first = array[0].as_object().unwrap();
        let keys: Vec<&str> = first.keys().map(String::as_str).collect();
        let mut expected = vec![
            "workload",
            "policy",
            "profile",
            "tlbi_ops",
            "broadcast_ops",
            "dsb",
            "collateral",
            "spurious_faults",
            "cycles",
            "violations",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected); // serde_json's map is sorted
        assert_eq!(first["workload"], "map");
        assert_eq!(first["policy"], "vmsa");
        assert_eq!(first["profile"], "native");
        assert_eq!(first["tlbi_ops"], 12);
        assert_eq!(first["broadcast_ops"], 3);
        assert_eq!(first["dsb"], 7);
        assert_eq!(first["collateral"], 40);
        assert_eq!(first["spurious_faults"], 1);
        assert_eq!(first["cycles"], 1000);
        assert_eq!(first["violations"], 0);
        // The order given is kept (no regrouping in JSON).
        assert_eq!(array[4]["policy"], "lazy");
        assert_eq!(array[4]["violations"], 2);
    }

    #[test]
    fn json_of_nothing_is_an_empty_array() {
        let mut out = Vec::new();
        write_json(&[], &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap().trim(), "[]");
    }

    #[test]
    fn chart_is_svg_with_text_and_bars() {
        let svg = svg_chart(&sample(), "native", 4).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        // Labels need no fonts: they are <text> elements.
        for text in ["map", "remap", "vmsa", "linux", "lazy", "native profile"] {
            assert!(svg.contains(text), "no {text} in the chart");
        }
        assert!(svg.contains("<text"));
        // Only the native rows: 4 bars and 3 legend keys, in three policy
        // colours, all of some height (vmsa's 1000 cycles is a power of ten).
        let bars: Vec<&str> = svg
            .lines()
            .filter(|l| {
                l.starts_with("<rect")
                    && ["#0072B2", "#E69F00", "#009E73"]
                        .iter()
                        .any(|c| l.to_uppercase().contains(c))
            })
            .collect();
        // (lazy's square marker, on its bar and in the legend, is a
        // rectangle of its colour too.)
        assert_eq!(bars.len(), 4 + 3 + 2, "{svg}");
        for bar in bars {
            let height = bar.split("height=\"").nth(1).unwrap();
            let height: f64 = height[..height.find('"').unwrap()].parse().unwrap();
            assert!(height >= 1.0, "{bar}");
        }
    }

    #[test]
    fn chart_renders_to_png_with_each_policy_in_its_own_colour() {
        // Twelve policies, as many as `vmsa compare` has.
        let policies: Vec<String> = (0..12).map(|k| format!("policy{k}")).collect();
        let rows: Vec<Row> = policies
            .iter()
            .enumerate()
            .map(|(k, p)| row("map", p, "native", 1000 * (k as u64 + 1), (k == 3) as u64))
            .collect();
        let svg = svg_chart(&rows, "native", 4).unwrap();
        assert!(svg.contains("policy3 (incorrect)"), "{svg}");
        // Every (colour, marker) pair is distinct.
        let styles: Vec<_> = (0..12).map(style).collect();
        for (i, a) in styles.iter().enumerate() {
            for b in &styles[i + 1..] {
                assert_ne!(a, b);
            }
        }
        let tree = resvg::usvg::Tree::from_str(&svg, &resvg::usvg::Options::default())
            .expect("the chart is SVG a renderer accepts");
        let size = tree.size().to_int_size();
        let mut pixmap = resvg::tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
        resvg::render(
            &tree,
            resvg::tiny_skia::Transform::default(),
            &mut pixmap.as_mut(),
        );
        let png = pixmap.encode_png().expect("PNG encoding");
        assert!(png.starts_with(b"\x89PNG"));
        // Each palette colour is on the picture (bars of policies k and
        // k + 8 share it, told apart by the marker).
        let pixels: std::collections::HashSet<[u8; 3]> = pixmap
            .pixels()
            .iter()
            .filter(|p| p.alpha() == 255)
            .map(|p| [p.red(), p.green(), p.blue()])
            .collect();
        for c in COLOURS {
            assert!(pixels.contains(&[c.0, c.1, c.2]), "no {c:?} in the PNG");
        }
        // The y axis is labelled in powers of ten.
        assert!(svg.lines().any(|l| l == "1e3"), "{svg}");
    }

    #[test]
    fn log_labels() {
        assert_eq!(log_label(100.0), "100");
        assert_eq!(log_label(1e6), "1e6");
        assert_eq!(log_label(2e9), "2e9");
        assert_eq!(log_label(2.5e4), "2.5e4");
    }

    #[test]
    fn chart_of_nothing_is_still_svg() {
        let svg = svg_chart(&[], "native", 4).unwrap();
        assert!(svg.starts_with("<svg"));
        let svg = draw_chart(&sample(), "native", 4, false).unwrap();
        assert!(svg.starts_with("<svg"));
    }
}
