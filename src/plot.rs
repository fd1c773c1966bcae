//! Figures: grids of line-chart panels and heatmaps, each written as an SVG and a PNG.
//!
//! Both formats are drawn by the same code over two plotters backends: the SVG at about 1200 px
//! wide, the PNG at twice that resolution (every length and font size scales with it). Drawing
//! happens in memory and the files are written through [`crate::io::write_atomic`], so a figure
//! on disk is always complete. Output is deterministic: no timestamps, fixed colour order.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary (`assets/fonts`, licence beside it)
//! and registered with plotters' `ab_glyph` text renderer on first use, so drawing needs no
//! system font or font library. The SVG names the family `sans-serif` and leaves its rendering
//! to the viewer; its layout is measured with the embedded font.

use std::path::Path;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontDesc;

use crate::{Error, Result};

/// One curve of a panel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Legend entry; empty for no entry. A series without one is drawn in the colour of the
    /// labelled series before it (error bars after their curve). In a heatmap's legend column
    /// (overlays) a `\n` starts a new line.
    pub label: String,
    /// Points in data coordinates, drawn in order. Non-finite points break the line.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (e.g. test curves next to solid train curves).
    pub dashed: bool,
}

/// One line chart of a grid.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Panel {
    /// Drawn above the panel.
    pub title: String,
    /// Label of the x axis, with its unit if any.
    pub x_label: String,
    /// Label of the y axis, with its unit if any.
    pub y_label: String,
    /// The curves, drawn in order (later ones on top); labelled ones get a legend entry and the
    /// next palette colour.
    pub series: Vec<Series>,
    /// `None` fits the data (with a small margin).
    pub y_range: Option<(f64, f64)>,
    /// Logarithmic x axis; points with `x <= 0` cannot be shown and are skipped.
    pub log_x: bool,
}

/// A map of values over a grid of `(x, y)` settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Heatmap {
    /// Drawn above the map.
    pub title: String,
    /// Label of the x axis (the grid's first parameter).
    pub x_label: String,
    /// Label of the y axis (the grid's second parameter).
    pub y_label: String,
    /// Grid coordinates, strictly increasing. Cells are drawn equally wide; when every value is
    /// positive and they span a factor of 10 or more, positions between them (overlays) are
    /// interpolated on a log scale, otherwise linearly.
    pub x_values: Vec<f64>,
    /// Grid coordinates of the rows, strictly increasing, with the same drawing rule as `x_values`.
    pub y_values: Vec<f64>,
    /// Row-major over (y, x): `values[iy * x_values.len() + ix]`; NaN = missing (drawn grey).
    pub values: Vec<f64>,
    /// Colour-bar label (continuous mode).
    pub value_label: String,
    /// `Some`: values are category indices into this list, drawn with a legend.
    pub categories: Option<Vec<String>>,
    /// Curves drawn over the map in data coordinates, clipped to the grid.
    pub overlays: Vec<Series>,
}

/// Continuous maps with at most this many cells along each axis print every cell's value in
/// the cell: on a few cells the colours alone exaggerate small differences (the colour scale
/// spans the values shown, however close they are).
pub const MAX_LABELLED_CELLS_PER_AXIS: usize = 12;

/// Width of the SVG output in pixels; the PNG is [`PNG_SCALE`] times larger.
const WIDTH: u32 = 1200;
const PNG_SCALE: u32 = 2;
const FONT: &str = "sans-serif";
/// The font every figure's text is measured and drawn with.
const FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Line colours of panels (the "tab10" palette without its grey).
const PALETTE: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Category colours of categorical maps: the Okabe-Ito palette (distinguishable with the common
/// colour-vision deficiencies), none of them an overlay colour or the missing grey.
const CATEGORY_COLORS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
    RGBColor(204, 121, 167),
];
/// Overlay colours: visible over viridis and the category colours (with a white halo), and
/// shared with no category, so a line is never read as a region.
const OVERLAY_COLORS: [RGBColor; 4] = [
    RGBColor(0, 0, 0),
    RGBColor(230, 0, 230),
    RGBColor(110, 60, 20),
    RGBColor(0, 220, 255),
];
const MISSING: RGBColor = RGBColor(190, 190, 190);

/// Viridis (matplotlib), sampled at 9 evenly spaced points and interpolated linearly.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
];

fn viridis(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (VIRIDIS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let frac = pos - i as f64;
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * frac).round() as u8;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Renders panels in a grid with `columns` columns to an SVG and a PNG (both written atomically).
pub fn render_panels(
    panels: &[Panel],
    columns: usize,
    title: &str,
    svg: &Path,
    png: &Path,
) -> Result<()> {
    if panels.is_empty() {
        return Err(Error::invalid("panels", "at least one panel is needed"));
    }
    if columns == 0 || columns > 8 {
        return Err(Error::invalid(
            "columns",
            format!("must be in 1..=8, got {columns}"),
        ));
    }
    for panel in panels {
        if let Some((lo, hi)) = panel.y_range {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(Error::invalid(
                    "y_range",
                    format!(
                        "panel '{}': need finite lo < hi, got ({lo}, {hi})",
                        panel.title
                    ),
                ));
            }
        }
    }
    let columns = columns.min(panels.len());
    let rows = panels.len().div_ceil(columns);
    // Each panel's legend sits below its plot, never over the data: every panel gets the strip
    // the largest legend needs, on top of the plot's own height.
    check_font().map_err(|m| render_error(svg, m))?;
    let panel_width = WIDTH / columns as u32;
    let legend_height = panels
        .iter()
        .map(|panel| legend_strip_height(&legend_rows(panel, panel_width)))
        .max()
        .unwrap_or(0);
    let panel_height = (panel_width * 3 / 4).clamp(300, 440) + legend_height;
    let size = (WIDTH, TITLE_BAND + panel_height * rows as u32);
    let figure = PanelGrid {
        panels,
        rows,
        columns,
        title,
        legend_height,
    };
    render_both(&figure, svg, png, size)
}

/// Renders a heatmap (continuous with a colour bar, or categorical with a legend) to an SVG and
/// a PNG (both written atomically).
pub fn render_heatmap(map: &Heatmap, svg: &Path, png: &Path) -> Result<()> {
    validate_heatmap(map)?;
    let nx = map.x_values.len() as u32;
    let ny = map.y_values.len() as u32;
    // Square-ish cells, within sane bounds.
    let main_width = WIDTH - SIDE_WIDTH;
    let plot_height = ((main_width - 120) * ny / nx).clamp(360, 900);
    let size = (WIDTH, TITLE_BAND + plot_height + 70);
    render_both(map, svg, png, size)
}

const TITLE_BAND: u32 = 50;
const SIDE_WIDTH: u32 = 260;

fn validate_heatmap(map: &Heatmap) -> Result<()> {
    for (name, values) in [("x_values", &map.x_values), ("y_values", &map.y_values)] {
        if values.is_empty() {
            return Err(Error::invalid(name, "the grid needs at least one value"));
        }
        if values.iter().any(|v| !v.is_finite()) || values.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::invalid(
                name,
                "values must be finite and strictly increasing",
            ));
        }
    }
    let cells = map.x_values.len() * map.y_values.len();
    if map.values.len() != cells {
        return Err(Error::invalid(
            "values",
            format!(
                "{} values for a {} x {} grid (need {cells}, row-major over (y, x))",
                map.values.len(),
                map.y_values.len(),
                map.x_values.len()
            ),
        ));
    }
    if let Some(names) = &map.categories {
        if names.is_empty() {
            return Err(Error::invalid("categories", "an empty list of categories"));
        }
        if let Some(bad) = map
            .values
            .iter()
            .find(|v| !(v.is_nan() || (v.fract() == 0.0 && **v >= 0.0 && **v < names.len() as f64)))
        {
            return Err(Error::invalid(
                "values",
                format!(
                    "categorical value {bad} is not an index into {} categories (NaN = missing)",
                    names.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Registers the embedded font under [`FONT`] (once per process) and checks that text can be
/// measured with it, before drawing anything.
fn check_font() -> std::result::Result<(), String> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let registered = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if !registered {
        return Err("the embedded font could not be parsed".into());
    }
    let font: FontDesc = (FONT, 12).into_font();
    font.box_size("Ag")
        .map(|_| ())
        .map_err(|e| format!("the embedded font cannot measure text ({e})"))
}

fn render_error(path: &Path, message: String) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("cannot render the figure: {message}")),
    }
}

/// A figure that can be drawn on any plotters backend at a given scale (1 for the SVG).
trait Figure {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        scale: u32,
    ) -> std::result::Result<(), String>;
}

/// Draws the same figure into an SVG string and an RGB buffer, encodes the PNG, and writes both.
fn render_both(
    figure: &(impl Figure + Sync),
    svg: &Path,
    png: &Path,
    (width, height): (u32, u32),
) -> Result<()> {
    check_font().map_err(|m| render_error(svg, m))?;
    // Fault injection for the tests of "results before pictures": every figure fails.
    if std::env::var_os("BENIGN_FAIL_FIGURES").is_some() {
        return Err(render_error(svg, "BENIGN_FAIL_FIGURES is set".into()));
    }
    // The two backends draw independently: the vector figure on one thread while the other
    // rasterises and compresses.
    let draw_svg = || -> Result<String> {
        let mut svg_text = String::new();
        {
            let root = SVGBackend::with_string(&mut svg_text, (width, height)).into_drawing_area();
            figure.draw(&root, 1).map_err(|m| render_error(svg, m))?;
            root.present()
                .map_err(|e| render_error(svg, e.to_string()))?;
        }
        Ok(svg_text)
    };
    let draw_png = || -> Result<Vec<u8>> {
        let (png_width, png_height) = (width * PNG_SCALE, height * PNG_SCALE);
        let mut pixels = vec![0u8; png_width as usize * png_height as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut pixels, (png_width, png_height))
                .into_drawing_area();
            figure
                .draw(&root, PNG_SCALE)
                .map_err(|m| render_error(png, m))?;
            root.present()
                .map_err(|e| render_error(png, e.to_string()))?;
        }
        encode_png(&pixels, png_width, png_height).map_err(|m| render_error(png, m))
    };
    let (svg_text, png_bytes) = rayon::join(draw_svg, draw_png);
    let (svg_text, png_bytes) = (svg_text?, png_bytes?);
    crate::io::write_atomic(svg, svg_text.as_bytes())?;
    crate::io::write_atomic(png, &png_bytes)
}

fn encode_png(pixels: &[u8], width: u32, height: u32) -> std::result::Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Figures are mostly flat colour: per-row adaptive filtering and the best deflate level make
    // them several times smaller than the defaults for a few tens of milliseconds.
    // Figures are mostly flat colour and horizontal runs: the `Up` filter with the default
    // deflate level makes them about 10x smaller than the fast default (1.45 MB -> 0.15 MB for
    // a run's figure) for about as much time as the system-font lookup this renderer replaced.
    encoder.set_compression(png::Compression::Default);
    encoder.set_filter(png::FilterType::Up);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(pixels).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Fills the background, draws the title centred in a band at the top and returns the rest.
fn titled_body<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    scale: u32,
) -> std::result::Result<DrawingArea<DB, Shift>, String> {
    root.fill(&WHITE).map_err(text)?;
    let (band, body) = root.split_vertically(TITLE_BAND * scale);
    let (width, height) = band.dim_in_pixel();
    // A long title is set smaller rather than cut at the edges.
    let mut size = 20;
    while size > 11 {
        let fits = font(size, scale)
            .box_size(title)
            .is_ok_and(|(w, _)| w + 20 * scale <= width);
        if fits {
            break;
        }
        size -= 1;
    }
    let style = font(size, scale)
        .into_text_style(&band)
        .pos(Pos::new(HPos::Center, VPos::Center));
    band.draw(&Text::new(
        title.to_string(),
        ((width / 2) as i32, (height / 2) as i32),
        style,
    ))
    .map_err(text)?;
    Ok(body)
}

/// Plotters errors carry the backend's error type; the figures only report their text.
fn text<E: std::fmt::Display>(error: E) -> String {
    error.to_string()
}

/// Tick labels: integers as integers, very large or small numbers in compact exponent form,
/// otherwise three significant digits.
fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs();
    if !(1e-3..1e5).contains(&magnitude) {
        let text = format!("{v:.1e}");
        return text.replace(".0e", "e");
    }
    if v.fract() == 0.0 {
        return format!("{v:.0}");
    }
    let decimals = (2 - magnitude.log10().floor() as i32).max(0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn font(size: u32, scale: u32) -> FontDesc<'static> {
    (FONT, f64::from(size * scale)).into_font()
}

fn line_style(color: RGBColor, width: u32) -> ShapeStyle {
    ShapeStyle {
        color: color.to_rgba(),
        filled: false,
        stroke_width: width,
    }
}

/// Splits a curve into runs of drawable points (finite, and positive x on a log axis).
fn drawable_runs(points: &[(f64, f64)], log_x: bool) -> Vec<Vec<(f64, f64)>> {
    let mut runs = vec![];
    let mut current = vec![];
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() && (!log_x || x > 0.0) {
            current.push((x, y));
        } else if !current.is_empty() {
            runs.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

/// `(lo, hi)` of some values, widened when degenerate; `log` keeps the range positive.
fn extent(values: impl Iterator<Item = f64>, log: bool, pad: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return if log { (1.0, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        if lo == hi {
            (lo / 2.0, hi * 2.0)
        } else {
            (lo, hi)
        }
    } else if lo == hi {
        let half = if lo == 0.0 { 0.5 } else { lo.abs() * 0.05 };
        (lo - half, hi + half)
    } else {
        let margin = (hi - lo) * pad;
        (lo - margin, hi + margin)
    }
}

struct PanelGrid<'a> {
    panels: &'a [Panel],
    rows: usize,
    columns: usize,
    title: &'a str,
    /// Height of every panel's legend strip at scale 1.
    legend_height: u32,
}

impl Figure for PanelGrid<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        scale: u32,
    ) -> std::result::Result<(), String> {
        let body = titled_body(root, self.title, scale)?;
        let cells = body.split_evenly((self.rows, self.columns));
        for (panel, area) in self.panels.iter().zip(cells.iter()) {
            let (_, height) = area.dim_in_pixel();
            let (plot, legend) = area.split_vertically(height - self.legend_height * scale);
            draw_panel(&plot, panel, scale)?;
            draw_legend(&legend, panel, scale)?;
        }
        Ok(())
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    scale: u32,
) -> std::result::Result<(), String> {
    let runs: Vec<Vec<Vec<(f64, f64)>>> = panel
        .series
        .iter()
        .map(|s| drawable_runs(&s.points, panel.log_x))
        .collect();
    let all_points = || runs.iter().flatten().flatten();
    let (x_lo, x_hi) = extent(all_points().map(|p| p.0), panel.log_x, 0.0);
    let (y_lo, y_hi) = panel
        .y_range
        .unwrap_or_else(|| extent(all_points().map(|p| p.1), false, 0.05));
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, font(16, scale))
        .margin(10 * scale)
        .margin_right(28 * scale)
        .x_label_area_size(42 * scale)
        .y_label_area_size(62 * scale);
    if panel.log_x {
        let chart = builder
            .build_cartesian_2d((x_lo..x_hi).log_scale(), y_lo..y_hi)
            .map_err(text)?;
        draw_panel_content(chart, panel, &runs, scale)
    } else {
        let chart = builder
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(text)?;
        draw_panel_content(chart, panel, &runs, scale)
    }
}

fn draw_panel_content<'a, DB, X>(
    mut chart: ChartContext<'a, DB, Cartesian2d<X, RangedCoordf64>>,
    panel: &Panel,
    runs: &[Vec<Vec<(f64, f64)>>],
    scale: u32,
) -> std::result::Result<(), String>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let formatter = |v: &f64| format_value(*v);
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .label_style(font(12, scale))
        .axis_desc_style(font(13, scale))
        .x_label_formatter(&formatter)
        .y_label_formatter(&formatter)
        .x_labels(8)
        .y_labels(8)
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(BLACK.mix(0.04))
        .draw()
        .map_err(text)?;

    for ((series, runs), color) in panel.series.iter().zip(runs).zip(series_colors(panel)) {
        let style = line_style(color, 2 * scale);
        for run in runs {
            if run.len() == 1 {
                chart
                    .draw_series(std::iter::once(Circle::new(
                        run[0],
                        3 * scale,
                        style.filled(),
                    )))
                    .map_err(text)?;
            } else {
                let dashes = series.dashed.then_some((8 * scale, 5 * scale));
                draw_polyline(&mut chart, run, style, dashes)?;
            }
        }
    }
    Ok(())
}

/// Draws `points` joined by straight segments: solid, or with `dashes` (dash length, gap) in
/// pixels.
fn draw_polyline<'a, DB, X>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, RangedCoordf64>>,
    points: &[(f64, f64)],
    style: ShapeStyle,
    dashes: Option<(u32, u32)>,
) -> std::result::Result<(), String>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
{
    let points = points.iter().copied();
    match dashes {
        Some((dash, gap)) => chart
            .draw_series(DashedLineSeries::new(points, dash, gap, style))
            .map_err(text)?,
        None => chart
            .draw_series(LineSeries::new(points, style))
            .map_err(text)?,
    };
    Ok(())
}

/// The colour of each series: a labelled series takes the next palette colour, an unlabelled
/// one that of the labelled series before it.
fn series_colors(panel: &Panel) -> Vec<RGBColor> {
    let mut labelled = 0usize;
    panel
        .series
        .iter()
        .map(|series| {
            if !series.label.is_empty() {
                labelled += 1;
            }
            PALETTE[labelled.saturating_sub(1) % PALETTE.len()]
        })
        .collect()
}

/// Legend geometry at scale 1: a line sample, a gap, the label, then space to the next entry.
const LEGEND_SAMPLE: u32 = 24;
const LEGEND_GAP: u32 = 6;
const LEGEND_SPACING: u32 = 18;
const LEGEND_ROW: u32 = 18;
const LEGEND_PAD: u32 = 6;
const LEGEND_FONT: u32 = 12;

/// One legend entry: the series it names and its width at scale 1.
struct LegendEntry {
    series: usize,
    width: u32,
}

/// The labelled series of a panel laid out in rows no wider than `width` (scale 1), in order.
/// An entry wider than a row gets a row of its own.
fn legend_rows(panel: &Panel, width: u32) -> Vec<Vec<LegendEntry>> {
    let usable = width.saturating_sub(2 * LEGEND_PAD);
    let mut rows: Vec<Vec<LegendEntry>> = Vec::new();
    let mut row_width = 0;
    for (index, series) in panel.series.iter().enumerate() {
        if series.label.is_empty() {
            continue;
        }
        let (text_width, _) = font(LEGEND_FONT, 1)
            .box_size(&series.label)
            .unwrap_or((8 * series.label.len() as u32, LEGEND_ROW));
        let width = LEGEND_SAMPLE + LEGEND_GAP + text_width;
        let spaced = if row_width == 0 {
            width
        } else {
            width + LEGEND_SPACING
        };
        match rows.last_mut() {
            Some(row) if row_width + spaced <= usable => {
                row.push(LegendEntry {
                    series: index,
                    width,
                });
                row_width += spaced;
            }
            _ => {
                rows.push(vec![LegendEntry {
                    series: index,
                    width,
                }]);
                row_width = width;
            }
        }
    }
    rows
}

/// Height of a legend strip of these rows at scale 1 (0 for no entry).
fn legend_strip_height(rows: &[Vec<LegendEntry>]) -> u32 {
    if rows.is_empty() {
        0
    } else {
        LEGEND_ROW * rows.len() as u32 + 2 * LEGEND_PAD
    }
}

/// Draws a panel's legend in `area`, the strip below its plot: each row centred, each entry a
/// line sample in the series' colour and dash, then its label.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    scale: u32,
) -> std::result::Result<(), String> {
    let (width, _) = area.dim_in_pixel();
    let s = scale as i32;
    let colors = series_colors(panel);
    let label_style = font(LEGEND_FONT, scale)
        .into_text_style(area)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (r, row) in legend_rows(panel, width / scale).iter().enumerate() {
        let row_width: u32 =
            row.iter().map(|e| e.width).sum::<u32>() + LEGEND_SPACING * (row.len() as u32 - 1);
        let mut x = (width as i32 - (row_width * scale) as i32).max(0) / 2;
        let y = (LEGEND_PAD as i32 + LEGEND_ROW as i32 * r as i32 + LEGEND_ROW as i32 / 2) * s;
        for entry in row {
            let series = &panel.series[entry.series];
            let style = line_style(colors[entry.series], 2 * scale);
            let sample = LEGEND_SAMPLE as i32 * s;
            let segments = if series.dashed {
                vec![(0, sample * 3 / 8), (sample * 5 / 8, sample)]
            } else {
                vec![(0, sample)]
            };
            for (a, b) in segments {
                area.draw(&PathElement::new(vec![(x + a, y), (x + b, y)], style))
                    .map_err(text)?;
            }
            area.draw(&Text::new(
                series.label.clone(),
                (x + sample + LEGEND_GAP as i32 * s, y),
                label_style.clone(),
            ))
            .map_err(text)?;
            x += ((entry.width + LEGEND_SPACING) * scale) as i32;
        }
    }
    Ok(())
}

/// Maps grid coordinates to cell-index space: value `values[i]` sits at index `i`, positions in
/// between are interpolated (on a log scale for positive values spanning a factor of 10 or
/// more), positions outside extrapolate the end cells.
struct AxisMap {
    transformed: Vec<f64>,
    log: bool,
}

impl AxisMap {
    fn new(values: &[f64]) -> AxisMap {
        let (lo, hi) = (values[0], values[values.len() - 1]);
        let log = lo > 0.0 && hi / lo >= 10.0;
        let transformed = values
            .iter()
            .map(|&v| if log { v.ln() } else { v })
            .collect();
        AxisMap { transformed, log }
    }

    /// The value in the axis's interpolation space (log or linear); NaN if not representable.
    fn forward(&self, v: f64) -> f64 {
        if !self.log {
            v
        } else if v > 0.0 {
            v.ln()
        } else {
            f64::NAN
        }
    }

    fn index(&self, v: f64) -> f64 {
        let t = self.forward(v);
        let grid = &self.transformed;
        if !t.is_finite() {
            return f64::NAN;
        }
        if grid.len() == 1 {
            return t - grid[0];
        }
        let segment = grid
            .windows(2)
            .position(|w| t <= w[1])
            .unwrap_or(grid.len() - 2);
        let (a, b) = (grid[segment], grid[segment + 1]);
        segment as f64 + (t - a) / (b - a)
    }
}

/// Liang-Barsky: the part of segment `p -> q` inside the box, if any.
fn clip_segment(
    p: (f64, f64),
    q: (f64, f64),
    (x_lo, x_hi): (f64, f64),
    (y_lo, y_hi): (f64, f64),
) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (q.0 - p.0, q.1 - p.1);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (denominator, numerator) in [
        (-dx, p.0 - x_lo),
        (dx, x_hi - p.0),
        (-dy, p.1 - y_lo),
        (dy, y_hi - p.1),
    ] {
        if denominator == 0.0 {
            if numerator < 0.0 {
                return None;
            }
        } else {
            let t = numerator / denominator;
            if denominator < 0.0 {
                t0 = t0.max(t);
            } else {
                t1 = t1.min(t);
            }
        }
    }
    (t0 <= t1).then_some((
        (p.0 + t0 * dx, p.1 + t0 * dy),
        (p.0 + t1 * dx, p.1 + t1 * dy),
    ))
}

/// An overlay curve in cell-index space, densified (so curves straight in the axes' own scale
/// stay straight) and clipped to the map: one polyline per visible stretch.
fn overlay_polylines(
    series: &Series,
    x_axis: &AxisMap,
    y_axis: &AxisMap,
    x_box: (f64, f64),
    y_box: (f64, f64),
) -> Vec<Vec<(f64, f64)>> {
    const SUBSTEPS: usize = 32;
    let mut dense = vec![];
    for pair in series.points.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let (ax, bx) = (x_axis.forward(a.0), x_axis.forward(b.0));
        let (ay, by) = (y_axis.forward(a.1), y_axis.forward(b.1));
        for k in 0..SUBSTEPS {
            let f = k as f64 / SUBSTEPS as f64;
            let tx = ax + (bx - ax) * f;
            let ty = ay + (by - ay) * f;
            let back = |axis: &AxisMap, t: f64| if axis.log { t.exp() } else { t };
            dense.push((back(x_axis, tx), back(y_axis, ty)));
        }
    }
    if let Some(&last) = series.points.last() {
        dense.push(last);
    }
    let mapped: Vec<(f64, f64)> = dense
        .iter()
        .map(|&(x, y)| (x_axis.index(x), y_axis.index(y)))
        .collect();
    let mut lines: Vec<Vec<(f64, f64)>> = vec![];
    let mut open = false;
    for pair in mapped.windows(2) {
        let (p, q) = (pair[0], pair[1]);
        let finite = p.0.is_finite() && p.1.is_finite() && q.0.is_finite() && q.1.is_finite();
        match clip_segment(p, q, x_box, y_box).filter(|_| finite) {
            Some((start, end)) => {
                let continues = open && start == p;
                if !continues {
                    lines.push(vec![start]);
                }
                lines.last_mut().expect("a line was just pushed").push(end);
                open = end == q;
            }
            None => open = false,
        }
    }
    lines
}

impl Figure for Heatmap {
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        scale: u32,
    ) -> std::result::Result<(), String> {
        let body = titled_body(root, &self.title, scale)?;
        let (body_width, _) = body.dim_in_pixel();
        let (main, side) = body.split_horizontally(body_width - SIDE_WIDTH * scale);
        let (nx, ny) = (self.x_values.len(), self.y_values.len());
        let x_box = (-0.5, nx as f64 - 0.5);
        let y_box = (-0.5, ny as f64 - 0.5);

        let finite = || self.values.iter().copied().filter(|v| v.is_finite());
        let (v_lo, v_hi) = extent(finite(), false, 0.0);
        let color_of = |v: f64| -> RGBColor {
            if v.is_nan() {
                MISSING
            } else if self.categories.is_some() {
                CATEGORY_COLORS[v as usize % CATEGORY_COLORS.len()]
            } else {
                viridis((v - v_lo) / (v_hi - v_lo))
            }
        };

        let mut chart = ChartBuilder::on(&main)
            .margin(10 * scale)
            .x_label_area_size(48 * scale)
            .y_label_area_size(70 * scale)
            .build_cartesian_2d(x_box.0..x_box.1, y_box.0..y_box.1)
            .map_err(text)?;
        let grid_label = |values: &[f64], v: f64| {
            let index = v.round();
            if (v - index).abs() < 1e-9 && index >= 0.0 && (index as usize) < values.len() {
                format_value(values[index as usize])
            } else {
                String::new()
            }
        };
        let x_formatter = |v: &f64| grid_label(&self.x_values, *v);
        let y_formatter = |v: &f64| grid_label(&self.y_values, *v);
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .label_style(font(12, scale))
            .axis_desc_style(font(14, scale))
            .x_labels(nx.min(12))
            .y_labels(ny.min(16))
            .x_label_formatter(&x_formatter)
            .y_label_formatter(&y_formatter)
            .draw()
            .map_err(text)?;
        chart
            .draw_series(self.values.iter().enumerate().map(|(k, &v)| {
                let (ix, iy) = ((k % nx) as f64, (k / nx) as f64);
                Rectangle::new(
                    [(ix - 0.5, iy - 0.5), (ix + 0.5, iy + 0.5)],
                    color_of(v).filled(),
                )
            }))
            .map_err(text)?;

        let x_axis = AxisMap::new(&self.x_values);
        let y_axis = AxisMap::new(&self.y_values);
        for (k, overlay) in self.overlays.iter().enumerate() {
            let color = OVERLAY_COLORS[k % OVERLAY_COLORS.len()];
            for line in overlay_polylines(overlay, &x_axis, &y_axis, x_box, y_box) {
                // A white halo keeps the line visible over any cell colour.
                draw_polyline(&mut chart, &line, line_style(WHITE, 5 * scale), None)?;
                let dashes = overlay.dashed.then_some((9 * scale, 5 * scale));
                draw_polyline(&mut chart, &line, line_style(color, 2 * scale), dashes)?;
            }
        }

        if self.categories.is_none()
            && nx <= MAX_LABELLED_CELLS_PER_AXIS
            && ny <= MAX_LABELLED_CELLS_PER_AXIS
        {
            draw_cell_values(&mut chart, self, &color_of, scale)?;
        }

        draw_side_panel(&side, self, (v_lo, v_hi), scale)
    }
}

/// Prints each finite value at the centre of its cell, in black or white, whichever contrasts
/// more with the cell's colour, at a size that fits the cell.
fn draw_cell_values<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    map: &Heatmap,
    color_of: &dyn Fn(f64) -> RGBColor,
    scale: u32,
) -> std::result::Result<(), String> {
    let (nx, ny) = (map.x_values.len(), map.y_values.len());
    let (x_pixels, y_pixels) = chart.plotting_area().get_pixel_range();
    let cell_width = f64::from(x_pixels.end - x_pixels.start) / nx as f64;
    let cell_height = f64::from(y_pixels.end - y_pixels.start) / ny as f64;
    let labels: Vec<String> = map.values.iter().map(|&v| cell_value_text(v)).collect();
    let longest = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
        .max(1);
    // DejaVu Sans digits are about 0.64 em wide; leave a margin on each side.
    let size = (0.8 * cell_width / (0.64 * longest as f64))
        .min(0.45 * cell_height)
        .min(f64::from(14 * scale));
    if size < f64::from(7 * scale) {
        return Ok(());
    }
    let cells = map.values.iter().zip(&labels).enumerate();
    chart
        .draw_series(
            cells
                .filter(|(_, (v, _))| v.is_finite())
                .map(|(k, (&v, label))| {
                    let style = TextStyle {
                        font: (FONT, size).into_font(),
                        color: text_color_on(color_of(v)).to_backend_color(),
                        pos: Pos::new(HPos::Center, VPos::Center),
                    };
                    Text::new(label.clone(), ((k % nx) as f64, (k / nx) as f64), style)
                }),
        )
        .map_err(text)?;
    Ok(())
}

/// A cell's value: three significant digits, trailing zeros kept so that neighbouring cells
/// read alike (0.700 beside 0.674); integers as integers; compact exponents outside
/// 1e-3..1e5.
fn cell_value_text(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let magnitude = v.abs();
    if v == 0.0 || (v.fract() == 0.0 && magnitude < 1e5) {
        return format!("{v:.0}");
    }
    if !(1e-3..1e5).contains(&magnitude) {
        return format!("{v:.1e}");
    }
    let decimals = (2 - magnitude.log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

/// Black or white, whichever has the higher contrast ratio (WCAG 2) against `background`.
fn text_color_on(background: RGBColor) -> RGBColor {
    let linear = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.03928 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let RGBColor(r, g, b) = background;
    let luminance = 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
    // Contrast with black (L + 0.05) / 0.05 against with white 1.05 / (L + 0.05).
    if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) {
        BLACK
    } else {
        WHITE
    }
}

/// The right-hand column: colour bar or category legend, then the overlay legend and the
/// missing-cell swatch.
fn draw_side_panel<DB: DrawingBackend>(
    side: &DrawingArea<DB, Shift>,
    map: &Heatmap,
    (v_lo, v_hi): (f64, f64),
    scale: u32,
) -> std::result::Result<(), String> {
    let s = scale as i32;
    let (_, height) = side.dim_in_pixel();
    let label_font = font(12, scale);
    const ROW: i32 = 24;
    // Height of one line of a multi-line overlay label.
    const LINE: i32 = 16;
    let swatch = |y: i32, color: RGBColor, name: &str| {
        let corners = [(12 * s, y), (30 * s, y + 16 * s)];
        side.draw(&Rectangle::new(corners, color.filled()))
            .and_then(|_| side.draw(&Rectangle::new(corners, BLACK.mix(0.5).stroke_width(1))))
            .and_then(|_| {
                side.draw(&Text::new(
                    name.to_string(),
                    (38 * s, y),
                    label_font.clone(),
                ))
            })
            .map_err(text)
    };

    // Rows below the colour bar or the category list: overlays, then the missing-cell swatch.
    let mut y = match &map.categories {
        Some(names) => {
            side.draw(&Text::new(
                map.value_label.clone(),
                (12 * s, 14 * s),
                font(13, scale),
            ))
            .map_err(text)?;
            for (k, name) in names.iter().enumerate() {
                swatch(
                    (14 + ROW * (k as i32 + 1)) * s,
                    CATEGORY_COLORS[k % CATEGORY_COLORS.len()],
                    name,
                )?;
            }
            (14 + ROW * (names.len() as i32 + 2)) * s
        }
        None => {
            let bar_height = height * 3 / 5;
            let (top, _) = side.split_vertically(bar_height);
            // A 30 px bar, its ticks and label to the right of it.
            let mut bar = ChartBuilder::on(&top)
                .margin_top(16 * scale)
                .margin_bottom(4 * scale)
                .margin_left(12 * scale)
                .margin_right((SIDE_WIDTH - 12 - 30 - 100) * scale)
                .right_y_label_area_size(100 * scale)
                .build_cartesian_2d(0.0..1.0, v_lo..v_hi)
                .map_err(text)?;
            let formatter = |v: &f64| format_value(*v);
            bar.configure_mesh()
                .disable_mesh()
                .disable_x_axis()
                .y_desc(map.value_label.as_str())
                .y_labels(8)
                .y_label_formatter(&formatter)
                .label_style(font(12, scale))
                .axis_desc_style(font(13, scale))
                .draw()
                .map_err(text)?;
            const STEPS: usize = 128;
            let step = (v_hi - v_lo) / STEPS as f64;
            bar.draw_series((0..STEPS).map(|k| {
                let lo = v_lo + step * k as f64;
                Rectangle::new(
                    [(0.0, lo), (1.0, lo + step)],
                    viridis((k as f64 + 0.5) / STEPS as f64).filled(),
                )
            }))
            .map_err(text)?;
            bar_height as i32 + 14 * s
        }
    };
    for (k, overlay) in map.overlays.iter().enumerate() {
        if overlay.label.is_empty() {
            continue;
        }
        let line_y = y + 8 * s;
        let color = OVERLAY_COLORS[k % OVERLAY_COLORS.len()];
        let style = line_style(color, 2 * scale);
        let segments: Vec<(i32, i32)> = if overlay.dashed {
            vec![(6, 14), (19, 27)]
        } else {
            vec![(6, 27)]
        };
        for (a, b) in segments {
            side.draw(&PathElement::new(
                vec![(a * s, line_y), (b * s, line_y)],
                style,
            ))
            .map_err(text)?;
        }
        // A label of several lines (`\n`) takes a row per line, so a caption fits the column.
        for line in overlay.label.lines() {
            side.draw(&Text::new(
                line.to_string(),
                (34 * s, y),
                label_font.clone(),
            ))
            .map_err(text)?;
            y += LINE * s;
        }
        y += (ROW - LINE) * s;
    }
    if map.values.iter().any(|v| v.is_nan()) {
        swatch(y, MISSING, "missing")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(labels: &[&str]) -> Panel {
        Panel {
            series: labels
                .iter()
                .map(|label| Series {
                    label: label.to_string(),
                    points: vec![(0.0, 0.0), (1.0, 1.0)],
                    dashed: false,
                })
                .collect(),
            ..Panel::default()
        }
    }

    #[test]
    fn legend_rows_keep_every_label_in_order_within_the_width() {
        check_font().unwrap();
        let names = [
            "relevant",
            "weak same",
            "weak other",
            "irrelevant 3",
            "irrelevant 4",
            "irrelevant 5",
            "irrelevant 6",
            "irrelevant 7",
        ];
        let mut panel = labelled(&names);
        // An unlabelled series (error bars) has no entry.
        panel.series.insert(1, Series::default());
        let rows = legend_rows(&panel, 600);
        assert!(rows.len() >= 2, "eight labels do not fit one 600 px row");
        let order: Vec<usize> = rows.iter().flatten().map(|e| e.series).collect();
        assert_eq!(order, [0, 2, 3, 4, 5, 6, 7, 8]);
        for row in &rows {
            let width: u32 =
                row.iter().map(|e| e.width).sum::<u32>() + LEGEND_SPACING * (row.len() as u32 - 1);
            assert!(width <= 600 - 2 * LEGEND_PAD, "a row of {width} px");
        }
        assert_eq!(
            legend_strip_height(&rows),
            LEGEND_ROW * rows.len() as u32 + 2 * LEGEND_PAD
        );
        // A label wider than the panel gets a row of its own; no label, no strip.
        let long = labelled(&["a", &"x".repeat(200), "b"]);
        assert_eq!(legend_rows(&long, 300).len(), 3);
        assert_eq!(legend_strip_height(&legend_rows(&labelled(&[]), 600)), 0);
    }

    #[test]
    fn an_unlabelled_series_takes_the_colour_of_the_labelled_one_before_it() {
        let mut panel = labelled(&["a", "b"]);
        panel.series.insert(1, Series::default());
        assert_eq!(series_colors(&panel), [PALETTE[0], PALETTE[0], PALETTE[1]]);
    }

    #[test]
    fn cell_values_keep_three_significant_digits() {
        for (v, text) in [
            (0.7, "0.700"),
            (0.674, "0.674"),
            (0.00990, "0.00990"),
            (12.34, "12.3"),
            (1000.0, "1000"),
            (0.0, "0"),
            (6.7e-4, "6.7e-4"),
            (f64::NAN, ""),
        ] {
            assert_eq!(cell_value_text(v), text, "{v}");
        }
    }

    #[test]
    fn cell_text_is_white_on_dark_and_black_on_light_cells() {
        assert_eq!(text_color_on(viridis(0.0)), WHITE);
        assert_eq!(text_color_on(viridis(1.0)), BLACK);
        assert_eq!(text_color_on(MISSING), BLACK);
    }
}
