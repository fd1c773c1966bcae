//! TEMPORARY private copy of the parts of `benign::io` and `benign::plot` that the synthetic
//! run calls, with exactly the agreed signatures (/work/notes/shared_io_plot.md). The lead
//! deletes this file at merge and points `run.rs` / `export.rs` at `crate::io` / `crate::plot`.

pub mod io {
    use std::io::Write;
    use std::path::Path;

    use crate::{Error, Result};

    fn io_err(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Writes `bytes` to `path` atomically (temporary file in the same directory, fsync, rename).
    pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
        write_atomic_with(path, |w| w.write_all(bytes))
    }

    /// Same, streaming through a buffered writer over the temporary file.
    pub fn write_atomic_with(
        path: &Path,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
        let file = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        let mut buffered = std::io::BufWriter::new(file);
        write(&mut buffered).map_err(|e| io_err(&tmp, e))?;
        let file = buffered
            .into_inner()
            .map_err(|e| io_err(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
    }

    /// Pretty JSON of any Serialize value, written atomically.
    pub fn write_json_atomic<S: serde::Serialize>(path: &Path, value: &S) -> Result<()> {
        let text = serde_json::to_vec_pretty(value).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        write_atomic(path, &text)
    }

    pub mod npy {
        use std::path::Path;

        use crate::{Error, Result};

        /// Element types storable in .npy (only those the synthetic export uses).
        pub trait NpyElement: Copy {
            const DESCR: &'static str;
            fn write_le(self, out: &mut Vec<u8>);
        }
        impl NpyElement for f64 {
            const DESCR: &'static str = "<f8";
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
        impl NpyElement for bool {
            const DESCR: &'static str = "|b1";
            fn write_le(self, out: &mut Vec<u8>) {
                out.push(u8::from(self));
            }
        }

        /// Writes a C-order .npy (format 1.0) atomically.
        pub fn write_npy<T: NpyElement>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
            let dims: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
            let shape_text = if dims.len() == 1 {
                format!("({},)", dims[0])
            } else {
                format!("({})", dims.join(", "))
            };
            let mut header = format!(
                "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
                T::DESCR,
                shape_text
            );
            let total = 10 + header.len() + 1;
            header.push_str(&" ".repeat((64 - total % 64) % 64));
            header.push('\n');
            super::write_atomic_with(path, |w| {
                w.write_all(b"\x93NUMPY\x01\x00")?;
                w.write_all(&(header.len() as u16).to_le_bytes())?;
                w.write_all(header.as_bytes())?;
                let mut buf = Vec::with_capacity(1 << 16);
                for chunk in data.chunks(8192) {
                    buf.clear();
                    chunk.iter().for_each(|v| v.write_le(&mut buf));
                    w.write_all(&buf)?;
                }
                Ok(())
            })
        }

        /// Reads a C-order little-endian .npy of '<f8', '<f4' or '|b1' values as f64.
        pub fn read_npy_f64(path: &Path) -> Result<(Vec<usize>, Vec<f64>)> {
            let bad = |message: String| Error::Format {
                path: path.to_path_buf(),
                message,
            };
            let bytes = std::fs::read(path).map_err(|e| Error::Io {
                path: path.to_path_buf(),
                source: e,
            })?;
            if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
                return Err(bad("not a .npy file (bad magic)".into()));
            }
            let (header_len, start) = match bytes[6] {
                1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
                2 | 3 if bytes.len() >= 12 => (
                    u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                    12,
                ),
                v => return Err(bad(format!("unsupported .npy version {v}"))),
            };
            let header = std::str::from_utf8(
                bytes
                    .get(start..start + header_len)
                    .ok_or_else(|| bad("truncated header".into()))?,
            )
            .map_err(|_| bad("header is not text".into()))?;
            if header.contains("'fortran_order': True") {
                return Err(bad("Fortran-order arrays are not supported".into()));
            }
            let descr = header
                .split("'descr':")
                .nth(1)
                .and_then(|s| s.split('\'').nth(1))
                .ok_or_else(|| bad("no descr in header".into()))?;
            let shape_text = header
                .split("'shape':")
                .nth(1)
                .and_then(|s| s.split('(').nth(1))
                .and_then(|s| s.split(')').next())
                .ok_or_else(|| bad("no shape in header".into()))?;
            let shape: Vec<usize> = shape_text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<usize>()
                        .map_err(|_| bad(format!("bad shape entry {s:?}")))
                })
                .collect::<Result<_>>()?;
            let count: usize = shape.iter().product();
            let body = &bytes[start + header_len..];
            let width = match descr {
                "<f8" => 8,
                "<f4" => 4,
                "|b1" | "|u1" => 1,
                other => return Err(bad(format!("unsupported dtype {other}"))),
            };
            if body.len() != count * width {
                return Err(bad(format!(
                    "expected {} data bytes for shape {shape:?}, found {}",
                    count * width,
                    body.len()
                )));
            }
            let values = match descr {
                "<f8" => body
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
                "<f4" => body
                    .chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes"))))
                    .collect(),
                _ => body.iter().map(|&b| f64::from(b)).collect(),
            };
            Ok((shape, values))
        }
    }
}

pub mod plot {
    use std::path::Path;

    use plotters::prelude::*;

    use crate::{Error, Result};

    pub struct Series {
        pub label: String,
        pub points: Vec<(f64, f64)>,
        pub dashed: bool,
    }

    pub struct Panel {
        pub title: String,
        pub x_label: String,
        pub y_label: String,
        pub series: Vec<Series>,
        pub y_range: Option<(f64, f64)>,
        pub log_x: bool,
    }

    fn draw<DB: DrawingBackend>(
        root: DrawingArea<DB, plotters::coord::Shift>,
        panels: &[Panel],
        columns: usize,
        title: &str,
    ) -> std::result::Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(|e| e.to_string())?;
        let rows = panels.len().div_ceil(columns.max(1));
        let areas = root.split_evenly((rows, columns.max(1)));
        for (panel, area) in panels.iter().zip(areas) {
            let points = panel.series.iter().flat_map(|s| s.points.iter());
            let (mut x0, mut x1, mut y0, mut y1) = (
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
            );
            for &(x, y) in points {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
            if !x0.is_finite() {
                (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
            }
            // This minimal copy draws linear axes only (`log_x` is honoured by `benign::plot`).
            let _ = panel.log_x;
            if let Some((a, b)) = panel.y_range {
                (y0, y1) = (a, b);
            }
            if x1 <= x0 {
                x1 = x0 + 1.0;
            }
            if y1 <= y0 {
                y1 = y0 + 1.0;
            }
            let mut chart = ChartBuilder::on(&area)
                .caption(&panel.title, ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(32)
                .y_label_area_size(48)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc(&panel.x_label)
                .y_desc(&panel.y_label)
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in panel.series.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                // Dashed series are drawn thin (plotters has no dash style for LineSeries).
                let width = if s.dashed { 1 } else { 2 };
                let style = color.stroke_width(width);
                chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), style))
                    .map_err(|e| e.to_string())?
                    .label(&s.label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())
    }

    /// Renders panels in a grid with `columns` columns to an SVG and a PNG (both atomically).
    pub fn render_panels(
        panels: &[Panel],
        columns: usize,
        title: &str,
        svg: &Path,
        png: &Path,
    ) -> Result<()> {
        let rows = panels.len().div_ceil(columns.max(1)) as u32;
        let size = (520 * columns.max(1) as u32, 380 * rows.max(1) + 40);
        let fail = |path: &Path, message: String| Error::Format {
            path: path.to_path_buf(),
            message,
        };
        let mut text = String::new();
        draw(
            SVGBackend::with_string(&mut text, size).into_drawing_area(),
            panels,
            columns,
            title,
        )
        .map_err(|m| fail(svg, m))?;
        super::io::write_atomic(svg, text.as_bytes())?;
        let tmp = png.with_extension("tmp.png");
        draw(
            BitMapBackend::new(&tmp, size).into_drawing_area(),
            panels,
            columns,
            title,
        )
        .map_err(|m| fail(png, m))?;
        std::fs::rename(&tmp, png).map_err(|e| Error::Io {
            path: png.to_path_buf(),
            source: e,
        })
    }
}
