//! `benign::io` (atomic files, `.npy`) and `benign::plot` (panels and heatmaps).
//!
//! Figures are kept in `target/tmp/io_plot-figures/` for inspection.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use benign::io::npy::{read_npy, read_npy_f64, write_npy, NpyElement};
use benign::plot::{render_heatmap, render_panels, Heatmap, Panel, Series};
use benign::Error;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("io_plot-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn round_trip<T: NpyElement + PartialEq + std::fmt::Debug>(
    dir: &Path,
    shape: &[usize],
    data: Vec<T>,
) {
    let path = dir.join(format!(
        "{}-{}.npy",
        T::DESCR.replace(['<', '|'], ""),
        shape.len()
    ));
    write_npy(&path, shape, &data).unwrap();
    let bytes = fs::read(&path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0, "data must start 64-byte aligned");
    let (read_shape, read_data) = read_npy::<T>(&path).unwrap();
    assert_eq!(read_shape, shape);
    assert_eq!(read_data, data);
    let (f_shape, f_data) = read_npy_f64(&path).unwrap();
    assert_eq!(f_shape, shape);
    assert_eq!(f_data.len(), data.len());
}

#[test]
fn npy_round_trips_every_dtype_and_awkward_shapes() {
    let dir = scratch("npy-roundtrip");
    round_trip(
        &dir,
        &[2, 3],
        vec![0.5f32, -1.25, f32::MAX, f32::MIN_POSITIVE, 0.0, -0.0],
    );
    round_trip(
        &dir,
        &[2, 2, 2],
        (0..8).map(|k| k as f64 * 1e-300 - 3.5).collect(),
    );
    round_trip(&dir, &[], vec![std::f64::consts::PI]);
    round_trip(&dir, &[0], Vec::<f64>::new());
    round_trip(&dir, &[3, 0, 5], Vec::<f32>::new());
    round_trip(&dir, &[4], vec![i8::MIN, -1, 0, i8::MAX]);
    round_trip(&dir, &[4], vec![0u8, 1, 128, 255]);
    round_trip(&dir, &[3], vec![i16::MIN, 7, i16::MAX]);
    round_trip(&dir, &[1, 3], vec![i32::MIN, 0, i32::MAX]);
    round_trip(&dir, &[3], vec![0u32, 1, u32::MAX]);
    round_trip(&dir, &[3, 1], vec![i64::MIN, 42, i64::MAX]);
    round_trip(&dir, &[5], vec![true, false, false, true, true]);
    round_trip(
        &dir,
        &[1, 1, 1, 1, 1, 1, 1, 7],
        (0..7).map(|k| k as f64).collect(),
    );
}

#[test]
fn npy_f64_reader_converts_values_exactly() {
    let dir = scratch("npy-convert");
    let path = dir.join("ints.npy");
    write_npy(&path, &[3], &[-3i32, 0, 1 << 30]).unwrap();
    assert_eq!(
        read_npy_f64(&path).unwrap().1,
        vec![-3.0, 0.0, f64::from(1 << 30)]
    );
    write_npy(&path, &[2], &[true, false]).unwrap();
    assert_eq!(read_npy_f64(&path).unwrap().1, vec![1.0, 0.0]);
    write_npy(&path, &[2], &[0.1f32, -2.5]).unwrap();
    assert_eq!(
        read_npy_f64(&path).unwrap().1,
        vec![f64::from(0.1f32), -2.5]
    );
    // The exact-dtype reader refuses a different dtype instead of reinterpreting bytes.
    let err = read_npy::<f64>(&path).unwrap_err();
    assert!(err.to_string().contains("expected '<f8'"), "{err}");
}

#[test]
fn npy_write_refuses_mismatched_length() {
    let dir = scratch("npy-mismatch");
    let err = write_npy(&dir.join("x.npy"), &[2, 3], &[1.0f64; 5]).unwrap_err();
    assert!(matches!(err, Error::InvalidOption { .. }), "{err}");
    assert!(!dir.join("x.npy").exists());
}

/// A valid file's bytes, to be damaged by the malformed-input tests.
fn valid_bytes(dir: &Path) -> Vec<u8> {
    let path = dir.join("valid.npy");
    write_npy(&path, &[2, 3], &[1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    fs::read(&path).unwrap()
}

fn expect_format_error(dir: &Path, name: &str, bytes: &[u8], needles: &[&str]) {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    for result in [
        read_npy_f64(&path).map(|_| ()),
        read_npy::<f64>(&path).map(|_| ()),
    ] {
        match result {
            Err(Error::Format { path: p, message }) => {
                assert_eq!(p, path);
                for needle in needles {
                    assert!(
                        message.contains(needle),
                        "{name}: '{message}' lacks '{needle}'"
                    );
                }
            }
            other => panic!("{name}: expected a format error, got {other:?}"),
        }
    }
}

fn with_header(dict: &str) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

#[test]
fn npy_malformed_files_are_named_format_errors() {
    let dir = scratch("npy-malformed");
    let valid = valid_bytes(&dir);
    let data_offset = valid.len() - 48;

    let mut bad_magic = valid.clone();
    bad_magic[1] = b'X';
    expect_format_error(&dir, "magic.npy", &bad_magic, &["bad magic", "offset 0"]);
    expect_format_error(&dir, "empty.npy", &[], &["too short"]);
    expect_format_error(
        &dir,
        "short-header.npy",
        &valid[..40],
        &["truncated header"],
    );
    let truncated = &valid[..valid.len() - 5];
    expect_format_error(
        &dir,
        "truncated.npy",
        truncated,
        &[
            "truncated data",
            "needs 48 bytes",
            &format!("offset {data_offset}"),
            "has 43",
        ],
    );
    let mut trailing = valid.clone();
    trailing.extend_from_slice(&[0; 3]);
    expect_format_error(
        &dir,
        "trailing.npy",
        &trailing,
        &["3 unexpected trailing bytes"],
    );
    let mut version = valid.clone();
    version[6] = 9;
    expect_format_error(&dir, "version.npy", &version, &["version 9.0"]);

    let mut fortran = with_header("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }");
    fortran.extend_from_slice(&[0; 48]);
    expect_format_error(&dir, "fortran.npy", &fortran, &["fortran_order is True"]);
    let mut unknown = with_header("{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }");
    unknown.extend_from_slice(&[0; 32]);
    expect_format_error(&dir, "complex.npy", &unknown, &["unsupported dtype '<c16'"]);
    let mut big = with_header("{'descr': '>f8', 'fortran_order': False, 'shape': (1,), }");
    big.extend_from_slice(&[0; 8]);
    expect_format_error(&dir, "big-endian.npy", &big, &["big-endian"]);
    let garbled = with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3 }");
    expect_format_error(
        &dir,
        "garbled.npy",
        &garbled,
        &["garbled header at byte offset 66"],
    );
    let huge = with_header(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 4), }",
    );
    expect_format_error(&dir, "huge.npy", &huge, &["overflows"]);
    let lying =
        with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }");
    expect_format_error(&dir, "lying.npy", &lying, &["truncated data"]);
}

fn numpy_available() -> bool {
    let python = super::python();
    match Command::new(&python).args(["-c", "import numpy"]).output() {
        Ok(out) if out.status.success() => true,
        _ => super::missing(&format!(
            "numpy cross-check: `{python} -c \"import numpy\"` failed (set BENIGN_PYTHON)"
        )),
    }
}

#[test]
fn npy_agrees_with_numpy_both_ways() {
    if !numpy_available() {
        return;
    }
    let dir = scratch("npy-numpy");
    let ours = dir.join("ours.npy");
    let data: Vec<f64> = (0..24).map(|k| (k as f64 - 7.0) / 3.0).collect();
    write_npy(&ours, &[2, 3, 4], &data).unwrap();
    write_npy(&dir.join("flags.npy"), &[3], &[true, false, true]).unwrap();
    write_npy(&dir.join("scalar.npy"), &[], &[2.5f32]).unwrap();
    let script = r#"
import sys, numpy as np
d = sys.argv[1]
a = np.load(d + '/ours.npy')
assert a.shape == (2, 3, 4) and a.dtype == np.float64, (a.shape, a.dtype)
assert np.array_equal(a.ravel(), (np.arange(24) - 7.0) / 3.0)
f = np.load(d + '/flags.npy'); assert f.dtype == np.bool_ and f.tolist() == [True, False, True]
s = np.load(d + '/scalar.npy'); assert s.shape == () and s.dtype == np.float32 and s == 2.5
np.save(d + '/theirs_f4.npy', np.arange(12, dtype=np.float32).reshape(3, 4) / 8)
np.save(d + '/theirs_i8.npy', np.array([-5, 0, 2**40], dtype=np.int64))
np.save(d + '/theirs_b1.npy', np.array([[True], [False]]))
np.save(d + '/theirs_u1.npy', np.arange(256, dtype=np.uint8))
np.save(d + '/theirs_empty.npy', np.zeros((0, 3)))
np.save(d + '/theirs_scalar.npy', np.float64(-1.5))
np.save(d + '/theirs_fortran.npy', np.asfortranarray(np.ones((2, 3))))
np.lib.format.write_array(open(d + '/theirs_v2.npy', 'wb'), np.arange(3.0), version=(2, 0))
"#;
    super::ok(
        &Command::new(super::python())
            .args(["-c", script])
            .arg(&dir)
            .output()
            .unwrap(),
    );

    let (shape, f4) = read_npy::<f32>(&dir.join("theirs_f4.npy")).unwrap();
    assert_eq!(shape, [3, 4]);
    assert_eq!(f4, (0..12).map(|k| k as f32 / 8.0).collect::<Vec<_>>());
    assert_eq!(
        read_npy::<i64>(&dir.join("theirs_i8.npy")).unwrap().1,
        [-5, 0, 1 << 40]
    );
    let (shape, flags) = read_npy::<bool>(&dir.join("theirs_b1.npy")).unwrap();
    assert_eq!((shape, flags), (vec![2, 1], vec![true, false]));
    let bytes = read_npy::<u8>(&dir.join("theirs_u1.npy")).unwrap().1;
    assert_eq!(bytes, (0..=255).collect::<Vec<u8>>());
    assert_eq!(
        read_npy_f64(&dir.join("theirs_empty.npy")).unwrap(),
        (vec![0, 3], vec![])
    );
    assert_eq!(
        read_npy_f64(&dir.join("theirs_scalar.npy")).unwrap(),
        (vec![], vec![-1.5])
    );
    assert_eq!(
        read_npy_f64(&dir.join("theirs_v2.npy")).unwrap(),
        (vec![3], vec![0.0, 1.0, 2.0])
    );
    let err = read_npy_f64(&dir.join("theirs_fortran.npy")).unwrap_err();
    assert!(err.to_string().contains("fortran_order is True"), "{err}");
}

fn assert_figure_files(svg: &Path, png: &Path, min_width: u32) {
    let svg_text = fs::read_to_string(svg).unwrap();
    assert!(
        svg_text.trim_start().starts_with("<svg"),
        "{}",
        &svg_text[..60.min(svg_text.len())]
    );
    assert!(svg_text.trim_end().ends_with("</svg>"));
    let png_bytes = fs::read(png).unwrap();
    assert_eq!(&png_bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(png_bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png_bytes[20..24].try_into().unwrap());
    assert!(
        width >= min_width && (400..=8000).contains(&height),
        "{width} x {height}"
    );
    assert!(png_bytes.len() > 20_000, "a real figure, not a blank image");
    for entry in fs::read_dir(svg.parent().unwrap()).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            !name.to_string_lossy().contains(".tmp-"),
            "leftover temp {name:?}"
        );
    }
}

fn training_panels() -> Vec<Panel> {
    let steps: Vec<f64> = (0..=100).map(|k| f64::from(k) * 10.0).collect();
    let curve = |f: &dyn Fn(f64) -> f64| steps.iter().map(|&s| (s, f(s))).collect::<Vec<_>>();
    let series = |label: &str, points, dashed| Series {
        label: label.into(),
        points,
        dashed,
    };
    vec![
        Panel {
            title: "loss".into(),
            x_label: "step".into(),
            y_label: "logistic loss".into(),
            series: vec![
                series("train", curve(&|s| 0.45 + 0.25 * (-s / 80.0).exp()), false),
                series("test", curve(&|s| 0.47 + 0.2 * (-s / 300.0).exp()), true),
            ],
            y_range: None,
            log_x: false,
        },
        Panel {
            title: "accuracy (log step)".into(),
            x_label: "step".into(),
            y_label: "accuracy".into(),
            series: vec![
                // Step 0 cannot sit on a log axis: it is skipped, not an error.
                series("train", curve(&|s| 1.0 - 0.5 * (-s / 150.0).exp()), false),
                series("train (noisy)", curve(&|s| 1.0 - (-s / 400.0).exp()), true),
                series(
                    "test",
                    curve(&|s| {
                        if s > 500.0 && s < 520.0 {
                            f64::NAN
                        } else {
                            0.99
                        }
                    }),
                    false,
                ),
            ],
            y_range: Some((0.0, 1.05)),
            log_x: true,
        },
        Panel {
            title: "attention on the relevant token".into(),
            x_label: "step".into(),
            y_label: "probability".into(),
            series: vec![series(
                "clean",
                curve(&|s| 1.0 - 0.875 * (-s / 60.0).exp()),
                false,
            )],
            y_range: Some((0.0, 1.0)),
            log_x: false,
        },
        Panel {
            title: "no data yet".into(),
            x_label: "step".into(),
            y_label: "value".into(),
            series: vec![series("empty", vec![], false)],
            y_range: None,
            log_x: false,
        },
    ]
}

#[test]
fn panels_render_to_svg_and_png_deterministically() {
    let dir = scratch("figures-panels");
    let (svg, png) = (dir.join("panels.svg"), dir.join("panels.png"));
    let render = || {
        render_panels(
            &training_panels(),
            2,
            "benign run: n = 20, d = 2000",
            &svg,
            &png,
        )
        .unwrap()
    };
    render();
    assert_figure_files(&svg, &png, 2000);
    let svg_text = fs::read_to_string(&svg).unwrap();
    for text in [
        "benign run: n = 20, d = 2000",
        "attention on the relevant token",
        "train (noisy)",
    ] {
        assert!(svg_text.contains(text), "SVG lacks '{text}'");
    }
    let (first_svg, first_png) = (fs::read(&svg).unwrap(), fs::read(&png).unwrap());
    render();
    assert_eq!(
        fs::read(&svg).unwrap(),
        first_svg,
        "SVG output must be deterministic"
    );
    assert_eq!(
        fs::read(&png).unwrap(),
        first_png,
        "PNG output must be deterministic"
    );
}

#[test]
fn panels_refuse_bad_layouts() {
    let dir = scratch("figures-bad");
    let (svg, png) = (dir.join("x.svg"), dir.join("x.png"));
    let err = render_panels(&[], 2, "t", &svg, &png).unwrap_err();
    assert!(
        matches!(err, Error::InvalidOption { ref field, .. } if field == "panels"),
        "{err}"
    );
    let err = render_panels(&training_panels(), 0, "t", &svg, &png).unwrap_err();
    assert!(
        matches!(err, Error::InvalidOption { ref field, .. } if field == "columns"),
        "{err}"
    );
    let mut panels = training_panels();
    panels[0].y_range = Some((1.0, 1.0));
    let err = render_panels(&panels, 2, "t", &svg, &png).unwrap_err();
    assert!(
        matches!(err, Error::InvalidOption { ref field, .. } if field == "y_range"),
        "{err}"
    );
    assert!(!svg.exists() && !png.exists());
}

/// The (d, ||mu||) phase map with the theory's boundaries, as the sweep reports will draw it.
fn phase_map(categorical: bool) -> Heatmap {
    let dims: Vec<f64> = [
        500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 50000.0, 100000.0,
    ]
    .to_vec();
    let norms: Vec<f64> = [2.0, 4.0, 6.0, 10.0, 15.0, 20.0, 30.0, 50.0, 80.0].to_vec();
    let n = 20.0f64;
    let mut values = vec![];
    for &mu in &norms {
        for &d in &dims {
            let snr = mu / d.sqrt();
            let value = if d == 5000.0 && mu == 15.0 {
                f64::NAN // a failed cell
            } else if categorical {
                if snr > n.powf(-0.5) {
                    0.0
                } else if snr > d.powf(-0.25) {
                    1.0
                } else {
                    2.0
                }
            } else {
                (0.5 + 0.5 * (4.0 * (snr / d.powf(-0.25)).ln()).tanh()).min(1.0)
            };
            values.push(value);
        }
    }
    let boundary = |label: &str, f: &dyn Fn(f64) -> f64, dashed| Series {
        label: label.into(),
        points: [100.0, 1e3, 1e4, 1e5, 1e6]
            .iter()
            .map(|&d| (d, f(d)))
            .collect(),
        dashed,
    };
    Heatmap {
        title: if categorical {
            "regime by (d, ||mu||)"
        } else {
            "test accuracy by (d, ||mu||)"
        }
        .into(),
        x_label: "d".into(),
        y_label: "||mu||".into(),
        x_values: dims,
        y_values: norms,
        values,
        value_label: if categorical {
            "regime"
        } else {
            "test accuracy"
        }
        .into(),
        categories: categorical
            .then(|| vec!["not overfitting".into(), "benign".into(), "harmful".into()]),
        overlays: vec![
            boundary("SNR = n^-1/2", &|d| (d / n).sqrt(), false),
            boundary("SNR = d^-1/4", &|d| d.powf(0.25), true),
        ],
    }
}

#[test]
fn heatmaps_render_continuous_and_categorical() {
    let dir = scratch("figures-heatmap");
    for categorical in [false, true] {
        let name = if categorical { "regimes" } else { "accuracy" };
        let (svg, png) = (
            dir.join(format!("{name}.svg")),
            dir.join(format!("{name}.png")),
        );
        render_heatmap(&phase_map(categorical), &svg, &png).unwrap();
        assert_figure_files(&svg, &png, 2000);
        let svg_text = fs::read_to_string(&svg).unwrap();
        let expected: &[&str] = if categorical {
            &[
                "not overfitting",
                "benign",
                "harmful",
                "SNR = d^-1/4",
                "missing",
            ]
        } else {
            &["test accuracy", "SNR = n^-1/2", "missing", "1e5"]
        };
        for text in expected {
            assert!(svg_text.contains(text), "{name}: SVG lacks '{text}'");
        }
    }
}

/// The opening tag of the `<text>` element whose content is exactly `content`, if any (the
/// SVG backend writes the content on a line of its own).
fn svg_text_element<'a>(svg: &'a str, content: &str) -> Option<&'a str> {
    let end = svg.find(&format!(">\n{content}\n</text>"))?;
    let start = svg[..end].rfind("<text")?;
    Some(&svg[start..end])
}

/// A small map prints its values in the cells (two cells 0.674 and 0.700 would otherwise read
/// as the two ends of the colour scale), each in the colour that contrasts with its cell; a
/// large one does not.
#[test]
fn small_heatmaps_print_their_values_and_large_ones_do_not() {
    let dir = scratch("figures-heatmap-values");
    let (svg, png) = (dir.join("two.svg"), dir.join("two.png"));
    let two_cells = Heatmap {
        title: "test accuracy by eta".into(),
        x_label: "eta".into(),
        y_label: "model".into(),
        x_values: vec![0.1, 0.2],
        y_values: vec![0.0],
        values: vec![0.674, 0.7],
        value_label: "test accuracy".into(),
        ..Heatmap::default()
    };
    render_heatmap(&two_cells, &svg, &png).unwrap();
    assert_figure_files(&svg, &png, 1000);
    let text = fs::read_to_string(&svg).unwrap();
    // The low end of viridis is dark purple, the high end yellow.
    let low = svg_text_element(&text, "0.674").expect("0.674 printed");
    let high = svg_text_element(&text, "0.700").expect("0.700 printed");
    assert!(low.contains("#FFFFFF"), "white on dark purple: {low}");
    assert!(high.contains("#000000"), "black on yellow: {high}");

    // Missing cells stay blank; 12 x 12 is still labelled.
    let mut twelve = Heatmap {
        x_values: (0..12).map(f64::from).collect(),
        y_values: (0..12).map(f64::from).collect(),
        values: (0..144).map(|k| 0.5 + f64::from(k) / 1000.0).collect(),
        ..two_cells.clone()
    };
    twelve.values[7] = f64::NAN;
    render_heatmap(&twelve, &svg, &png).unwrap();
    let text = fs::read_to_string(&svg).unwrap();
    assert!(svg_text_element(&text, "0.643").is_some());
    assert!(svg_text_element(&text, "0.507").is_none());
    assert!(text.contains("missing"));

    let large = Heatmap {
        x_values: (0..13).map(f64::from).collect(),
        y_values: (0..12).map(f64::from).collect(),
        values: (0..156).map(|k| 0.5 + f64::from(k) / 1000.0).collect(),
        ..two_cells
    };
    render_heatmap(&large, &svg, &png).unwrap();
    let text = fs::read_to_string(&svg).unwrap();
    assert!(svg_text_element(&text, "0.643").is_none());
}

#[test]
fn heatmaps_refuse_inconsistent_grids() {
    let dir = scratch("figures-heatmap-bad");
    let (svg, png) = (dir.join("x.svg"), dir.join("x.png"));
    let mut map = phase_map(false);
    map.values.pop();
    let err = render_heatmap(&map, &svg, &png).unwrap_err();
    assert!(
        matches!(err, Error::InvalidOption { ref field, .. } if field == "values"),
        "{err}"
    );
    let mut map = phase_map(false);
    map.x_values.swap(0, 1);
    let err = render_heatmap(&map, &svg, &png).unwrap_err();
    assert!(
        matches!(err, Error::InvalidOption { ref field, .. } if field == "x_values"),
        "{err}"
    );
    let mut map = phase_map(true);
    map.values[3] = 3.0;
    let err = render_heatmap(&map, &svg, &png).unwrap_err();
    assert!(
        err.to_string().contains("not an index into 3 categories"),
        "{err}"
    );
    assert!(!svg.exists() && !png.exists());
}

/// Runs in a child process (see below) where fontconfig sees no fonts at all.
#[test]
#[ignore = "run by figures_need_no_system_font in a child process"]
fn font_probe_child() {
    if std::env::var_os("BENIGN_FONT_PROBE").is_none() {
        return;
    }
    let dir = scratch("figures-no-system-font");
    let (svg, png) = (dir.join("x.svg"), dir.join("x.png"));
    render_panels(&training_panels(), 2, "t", &svg, &png).unwrap();
    render_heatmap(&phase_map(true), &svg, &png).unwrap();
    assert!(svg.is_file() && png.is_file());
}

/// Figures draw their text with the embedded font: a child process whose fontconfig knows no
/// font at all (and has no font folder) still draws both formats.
#[test]
fn figures_need_no_system_font() {
    let dir = scratch("fontconfig-empty");
    let config = dir.join("fonts.conf");
    fs::write(
        &config,
        format!(
            "<?xml version=\"1.0\"?>\n<fontconfig><dir>{0}/none</dir><cachedir>{0}/cache</cachedir></fontconfig>\n",
            dir.display()
        ),
    )
    .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "io_plot::font_probe_child",
            "--include-ignored",
            "--nocapture",
        ])
        .env("BENIGN_FONT_PROBE", "1")
        .env("FONTCONFIG_FILE", &config)
        .env("XDG_DATA_HOME", dir.join("none"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
