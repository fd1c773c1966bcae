//! `benign bench` from the outside: exit statuses and the JSON-lines format.

use std::process::Command;

fn benign(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_benign"))
        .args(args)
        .output()
        .expect("run the benign binary")
}

/// Every line of `--json` is one measurement that stands alone: the same keys on every line
/// (so `jq -s` and `pandas.read_json(lines=True)` give one table), integer dimensions, the
/// ceiling its `frac_of_peak` is measured against, and the machine figures.
#[test]
fn quick_json_on_one_thread_prints_standalone_records() {
    let out = benign(&["bench", "--quick", "--json", "--threads", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.len() > 5, "too few lines:\n{stdout}");

    let keys = |v: &serde_json::Value| {
        let mut keys: Vec<String> = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {v}"))
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    let first_keys = keys(&lines[0]);
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-300);
    let mut kernels = std::collections::BTreeSet::new();
    for record in &lines {
        assert_eq!(keys(record), first_keys, "{record}");
        for key in [
            "kernel",
            "dtype",
            "m",
            "n",
            "k",
            "rows",
            "cols",
            "shape",
            "threads",
            "gflops",
            "gbps",
            "ratio_vs_matrixmultiply",
            "frac_of_peak",
            "peak",
            "ceiling_gflops",
            "ceiling_gbps",
            "cpu_model",
            "pool_threads",
            "gemm_kernel",
            "gemm_peak_f32_gflops_per_core",
            "triad_gbps",
            "median_seconds",
            "min_seconds",
            "iqr_seconds",
            "runs",
            "single_call",
            "vs_matrixmultiply",
            "load_average_1min",
            "warnings",
            "logical_cpus",
            "machine_warnings",
        ] {
            assert!(record.get(key).is_some(), "{key} missing in {record}");
        }
        assert!(record.get("machine").is_none(), "{record}");
        assert_eq!(record["pool_threads"], 1);
        assert!(record["cpu_model"].is_string(), "{record}");
        for key in [
            "fma_peak_f32_gflops_per_core",
            "fma_peak_f64_gflops_per_core",
            "triad_gbps",
        ] {
            let v = record[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{key} in {record}"));
            assert!(v.is_finite() && v > 0.0, "{key} = {v}");
        }
        let kernel = record["kernel"].as_str().expect("kernel is a string");
        kernels.insert(kernel.to_string());
        assert!(
            matches!(record["dtype"].as_str(), Some("f32" | "f64")),
            "{record}"
        );
        // Every record has a rate, and every rate is a positive finite number.
        let rate = record["gflops"].as_f64().or(record["gbps"].as_f64());
        assert!(rate.is_some_and(|r| r.is_finite() && r > 0.0), "{record}");
        let dim = |key: &str| record[key].as_u64();
        let seconds = record["median_seconds"].as_f64().unwrap();
        // The timing: fastest call <= median, a spread, the number of calls, and a single
        // call marked as one (no spread).
        let min_seconds = record["min_seconds"].as_f64().unwrap();
        let iqr_seconds = record["iqr_seconds"].as_f64().unwrap();
        let runs = record["runs"].as_u64().unwrap();
        assert!(min_seconds > 0.0 && min_seconds <= seconds, "{record}");
        assert!(iqr_seconds >= 0.0 && runs >= 1, "{record}");
        if record["single_call"]
            .as_bool()
            .expect("single_call is a bool")
        {
            assert!(runs == 1 && iqr_seconds == 0.0, "{record}");
        }
        assert!(record["warnings"].is_array(), "{record}");
        assert!(record["machine_warnings"].is_array(), "{record}");
        assert!(record["logical_cpus"].as_u64().is_some_and(|n| n >= 1));
        assert!(
            record["load_average_1min"].is_null() || record["load_average_1min"].is_f64(),
            "{record}"
        );
        match kernel {
            "gemm" | "matrixmultiply::gemm" => {
                let (m, n, k) = (dim("m").unwrap(), dim("n").unwrap(), dim("k").unwrap());
                assert!(
                    record["rows"].is_null() && record["cols"].is_null(),
                    "{record}"
                );
                assert_eq!(record["shape"], format!("{m}x{n}x{k}"));
                // The rate is 2 m n k flops over the median time.
                let flops = 2.0 * (m * n * k) as f64;
                let gflops = record["gflops"].as_f64().unwrap();
                assert!(rel(gflops, flops / seconds / 1e9) < 1e-9, "{record}");
                assert_eq!(record["peak"], "fma");
                let ceiling = record["ceiling_gflops"].as_f64().unwrap();
                let dtype = record["dtype"].as_str().unwrap();
                let per_core = record[format!("gemm_peak_{dtype}_gflops_per_core")]
                    .as_f64()
                    .unwrap();
                let threads = record["threads"].as_u64().unwrap() as f64;
                assert!(rel(ceiling, per_core * threads) < 1e-12, "{record}");
                let frac = record["frac_of_peak"].as_f64().unwrap();
                assert!(rel(frac, gflops / ceiling) < 1e-9, "{record}");
                assert!(record["ceiling_gbps"].is_null(), "{record}");
            }
            "gemv_n" | "gemv_t" | "ger" => {
                assert!(dim("m").is_some() && dim("n").is_some(), "{record}");
                assert!(
                    record["k"].is_null() && record["rows"].is_null(),
                    "{record}"
                );
            }
            _ => {
                assert!(dim("rows").is_some() && dim("cols").is_some(), "{record}");
                assert!(
                    record["m"].is_null() && record["n"].is_null() && record["k"].is_null(),
                    "{record}"
                );
            }
        }
        if record["peak"] == "triad" {
            let ceiling = record["ceiling_gbps"].as_f64().unwrap();
            assert_eq!(ceiling, record["triad_gbps"].as_f64().unwrap());
            let frac = record["frac_of_peak"].as_f64().unwrap();
            let gbps = record["gbps"].as_f64().unwrap();
            assert!(rel(frac, gbps / ceiling) < 1e-9, "{record}");
        }
        if kernel == "gemm" {
            let ratio = record["ratio_vs_matrixmultiply"].as_f64();
            assert!(ratio.is_some_and(|r| r > 0.0), "{record}");
            assert_eq!(record["threads"], 1);
            assert!(
                matches!(
                    record["vs_matrixmultiply"].as_str(),
                    Some("faster" | "slower" | "within_spread" | "single_call")
                ),
                "{record}"
            );
        } else {
            assert!(record["vs_matrixmultiply"].is_null(), "{record}");
        }
    }
    for want in [
        "gemm",
        "matrixmultiply::gemm",
        "gemv_n",
        "gemv_t",
        "ger",
        "softmax_rows",
        "layer_norm",
        "gelu",
    ] {
        assert!(kernels.contains(want), "{want} missing from {kernels:?}");
    }
}

#[test]
fn zero_threads_exits_2_naming_the_field() {
    let out = benign(&["bench", "--quick", "--threads", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("threads"), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "nothing measured before validation");
}

/// The table names the timing columns and says how a single call is marked.
#[test]
fn quick_table_shows_the_spread_and_the_number_of_calls() {
    let out = benign(&["bench", "--quick", "--threads", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    let header = stdout
        .lines()
        .find(|line| line.starts_with("kernel "))
        .unwrap_or_else(|| panic!("no table header:\n{stdout}"));
    for column in ["median", "min", "IQR %", "runs", "load", "vs mm", "of peak"] {
        assert!(header.contains(column), "{column} missing: {header}");
    }
    assert!(stdout.contains("runs 1*: a single call"), "{stdout}");
    assert!(stdout.contains("interleaved rounds"), "{stdout}");
    let gemm_rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("gemm ")).collect();
    assert!(!gemm_rows.is_empty(), "{stdout}");
    for row in gemm_rows {
        assert!(
            ["faster", "slower", "within spread", "single call"]
                .iter()
                .any(|verdict| row.contains(verdict)),
            "{row}"
        );
    }
}
