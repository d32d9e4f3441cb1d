use super::*;

fn issues_of(result: Result<Loaded, ConfigError>) -> Vec<ConfigIssue> {
    match result {
        Err(ConfigError::Invalid(issues)) => issues,
        other => panic!("expected issues, got {other:?}"),
    }
}

#[test]
fn default_yaml_is_the_default_config_and_mentions_every_key() {
    let parsed: Config = serde_yaml::from_str(DEFAULT_YAML).unwrap();
    assert_eq!(parsed, Config::default());
    for path in key_paths() {
        let leaf = path.rsplit('.').next().unwrap();
        assert!(DEFAULT_YAML.contains(&format!("{leaf}:")), "default.yaml lacks {path}");
    }
}

#[test]
fn env_names_are_unique_per_key() {
    let paths = key_paths();
    let mut names: Vec<_> = paths.iter().map(|p| env_name(p)).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), paths.len());
    assert!(names.contains(&"PHAROS_QUEUE_FSYNC".to_string()));
    assert!(names.contains(&"PHAROS_OTLP_HTTP_MAX_BODY_SIZE".to_string()));
}

#[test]
fn load_applies_file_then_env_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, "data_dir: /tmp/a\nqueue:\n  kind: wal\n  partitions: 3\n  fsync: interval\n")
        .unwrap();
    let env = vec![
        ("PHAROS_QUEUE_PARTITIONS".to_string(), "5".to_string()),
        ("PHAROS_OTLP_HTTP_MAX_BODY_SIZE".to_string(), "1MiB".to_string()),
        ("HOME".to_string(), "/root".to_string()),
    ];
    let config = load(Some(&file), env, &["queue.partitions=7".to_string()]).unwrap().config;
    assert_eq!(config.data_dir, PathBuf::from("/tmp/a"));
    assert_eq!(config.wal().partitions, 7, "flag beats env beats file");
    assert_eq!(config.wal().fsync, FsyncMode::Interval);
    assert_eq!(config.otlp.http.max_body_size, ByteSize(1 << 20));
}

#[test]
fn load_names_every_bad_key_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "otlp:\n  http:\n    listen: nowhere\n    max_body_sise: 1MiB\nqueue:\n  fsync: sometimes\n  segment_size: 10 parsecs\n",
    )
    .unwrap();
    let issues = check_file(&file).unwrap();
    let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
    assert!(paths.contains(&"otlp.http.max_body_sise"), "{issues:?}");
    assert!(paths.contains(&"otlp.http.listen"), "{issues:?}");
    assert!(paths.contains(&"queue.fsync"), "{issues:?}");
    assert!(paths.contains(&"queue.segment_size"), "{issues:?}");
    let unknown = issues.iter().find(|i| i.path == "otlp.http.max_body_sise").unwrap();
    assert_eq!(unknown.reason, "unknown key");
    let fsync = issues.iter().find(|i| i.path == "queue.fsync").unwrap();
    assert!(fsync.reason.contains("sometimes"), "{fsync}");
}

#[test]
fn load_warns_of_unknown_env_keys_and_refuses_unknown_flag_keys() {
    let env = || vec![("PHAROS_QUEUE_FSYNK".to_string(), "always".to_string())];
    let loaded = load(None, env(), &[]).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0].contains("PHAROS_QUEUE_FSYNK"), "{:?}", loaded.warnings);
    let issues = issues_of(load(None, env(), &["otlp.nope=1".to_string()]));
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].path, "otlp.nope");
}

#[test]
fn validate_reports_semantic_problems() {
    let mut config = Config::default();
    config.processor.batch_size = 0;
    config.otlp.grpc.listen = config.api.listen;
    let issues = validate(&config);
    let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, vec!["processor.batch_size", "otlp.grpc.listen"]);
}

#[test]
fn example_configs_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let issues = check_file(&path).unwrap();
        assert!(issues.is_empty(), "{}: {issues:?}", path.display());
        load(Some(&path), Vec::new(), &[]).unwrap();
        n += 1;
    }
    assert!(n > 0, "no example configurations in {}", dir.display());
}
