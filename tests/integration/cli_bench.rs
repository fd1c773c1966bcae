//! `benign bench` from the outside: exit statuses and the JSON-lines format.

use std::process::Command;

fn benign(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_benign"))
        .args(args)
        .output()
        .expect("run the benign binary")
}

#[test]
fn quick_json_on_one_thread_prints_machine_then_records() {
    let out = benign(&["bench", "--quick", "--json", "--threads", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines.len() > 5, "too few lines:\n{stdout}");

    let machine = &lines[0]["machine"];
    assert_eq!(machine["threads"], 1);
    for key in [
        "fma_peak_f32_gflops_per_core",
        "fma_peak_f64_gflops_per_core",
        "triad_gbps",
    ] {
        let v = machine[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {machine}"));
        assert!(v.is_finite() && v > 0.0, "{key} = {v}");
    }

    let mut kernels = std::collections::BTreeSet::new();
    for record in &lines[1..] {
        for key in [
            "kernel",
            "shape",
            "dtype",
            "threads",
            "gflops",
            "gbps",
            "ratio_vs_matrixmultiply",
            "frac_of_peak",
        ] {
            assert!(record.get(key).is_some(), "{key} missing in {record}");
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
        if kernel == "gemm" {
            let ratio = record["ratio_vs_matrixmultiply"].as_f64();
            assert!(ratio.is_some_and(|r| r > 0.0), "{record}");
            assert_eq!(record["threads"], 1);
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
