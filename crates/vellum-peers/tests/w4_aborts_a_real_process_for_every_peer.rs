//! `w4` at its smallest size through the real binary: every peer's phases run in
//! child processes (the abort is a real one: the child dies with its store open), the
//! parent reopens and checks every count and every acknowledged append, and the report
//! lists every row.

#[test]
fn w4_reopens_every_peer_after_a_clean_close_and_after_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("benchmarks.md");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_vellum-peers"))
        .args(["--runs", "1", "--scale", "0.002", "--workloads", "w4"])
        .args(["--skip-missing", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = std::fs::read_to_string(&out).unwrap();
    for row in ["| Vellum |", "| SQLite |", "| fjall |", "| redb |"] {
        assert!(report.contains(row), "{row} missing from:\n{report}");
    }
    assert!(!report.contains("## w1"), "only w4 was asked for");
}
