//! The command line: `config default`, `config check`, `wal inspect`.

use std::process::Command;

use crate::harness::BIN;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_default_prints_a_configuration_that_checks_clean() {
    let (code, yaml, _) = run(&["config", "default"]);
    assert_eq!(code, 0);
    assert!(yaml.contains("# ") && yaml.contains("fsync: always"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("default.yaml");
    std::fs::write(&file, yaml).unwrap();
    let (code, out, err) = run(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with(": ok\n"), "{out}");
}

#[test]
fn config_check_names_each_bad_key_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "queue:\n  kind: wal\n  fsync: never\n  partitionz: 2\nlimits:\n  max_attributes: -3\n",
    )
    .unwrap();
    let (code, out, _) = run(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("queue.fsync:") && out.contains("never"), "{out}");
    assert!(out.contains("queue.partitionz: unknown key"), "{out}");
    assert!(out.contains("limits.max_attributes:"), "{out}");
}

/// A pipeline with an unknown processor kind, a bad regex, a value of the wrong type, an
/// undefined processor and a processor on the wrong signal: each is named by its key path.
const BAD_PIPELINES: &str = r#"
processors:
  frobnicate: {}
  filter/noise:
    spans:
      - name: '(unclosed'
  tail_sampling:
    decision_wait: soon
    policies: [{type: always_sample}]
  span_metrics: {}
pipelines:
  traces:
    processors: [filter/noise, tail_sampling, missing]
  logs:
    processors: [span_metrics]
"#;

#[test]
fn config_check_names_each_bad_pipeline_key_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipelines.yaml");
    std::fs::write(&file, BAD_PIPELINES).unwrap();
    let (code, out, _) = run(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    for needle in [
        "processors.frobnicate: unknown processor kind",
        "processors.filter/noise.spans[0].name: invalid regex",
        "processors.tail_sampling.decision_wait:",
        "pipelines.traces.processors[2]: processor `missing` is not defined",
        "processors.span_metrics: the span_metrics processor applies to traces pipelines",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn serve_with_a_bad_pipeline_refuses_to_start_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipelines.yaml");
    std::fs::write(&file, BAD_PIPELINES).unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("processors.filter/noise.spans[0].name"), "{err}");
    assert!(!dir.path().join("data").join("wal").exists(), "nothing is started with a bad pipeline");
}

#[test]
fn serve_with_a_bad_setting_refuses_to_start_and_says_why() {
    let out = Command::new(BIN)
        .args(["serve", "--set", "queue.fsync=sometimes"])
        .env("PHAROS_OTLP_HTTP_MAX_BODY_SIZE", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("queue.fsync") && err.contains("otlp.http.max_body_size"), "{err}");
}

#[test]
fn wal_inspect_of_a_missing_directory_fails_cleanly() {
    let (code, _, err) = run(&["wal", "inspect", "/nonexistent/pharos-wal"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot inspect"), "{err}");
}
