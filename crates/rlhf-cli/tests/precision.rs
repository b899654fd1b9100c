//! The precision a command runs in: `auto` takes bf16 only where the CPU has AMX, a forced
//! "no AMX" (`RLHF_NO_AMX=1`) takes the fp32 path, and the choice is printed at start-up.

use std::process::Command;

/// (stderr, the JSON `rlhf bench --only matmul` prints) for the given flags and environment.
fn matmul_bench(args: &[&str], no_amx: bool) -> (String, serde_json::Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlhf"));
    cmd.args(["bench", "--only", "matmul"]).args(args);
    if no_amx {
        cmd.env("RLHF_NO_AMX", "1");
    } else {
        cmd.env_remove("RLHF_NO_AMX");
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (stderr, serde_json::from_slice(&out.stdout).unwrap())
}

fn has_amx() -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo.split_whitespace().any(|f| f == "amx_bf16") && cpuinfo.split_whitespace().any(|f| f == "amx_tile")
}

#[test]
fn without_amx_auto_runs_fp32_and_says_so() {
    let (stderr, json) = matmul_bench(&[], true);
    assert!(stderr.contains("precision: fp32 (auto; matrix unit: none)"), "{stderr}");
    assert_eq!(json["precision"], "fp32");
    // Asking for bf16 anyway runs it emulated, with a warning.
    let (stderr, json) = matmul_bench(&["--precision", "bf16"], true);
    assert!(stderr.contains("runs emulated"), "{stderr}");
    assert_eq!(json["precision"], "bf16");
}

#[test]
fn with_amx_auto_runs_bf16() {
    let (stderr, json) = matmul_bench(&[], false);
    let want = if has_amx() { "bf16" } else { "fp32" };
    assert_eq!(json["precision"], want, "{stderr}");
    assert!(stderr.contains(&format!("precision: {want} (auto")), "{stderr}");
}

#[test]
fn an_unknown_precision_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args(["bench", "--only", "matmul", "--precision", "fp8"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected \"auto\", \"bf16\" or \"fp32\""));
}
