//! Runs Prometheus's promqltest scripts against the engine and guards a pass-count baseline.
//!
//! Each `eval` is run the way Prometheus's own runner does: the instant query, the same
//! query with `@ <eval time>` on every selector evaluated at other times, and the query in
//! range mode checked at its middle step. Annotations (`eval_warn`, `expect warn|info`, `expect
//! no_warn|no_info`) are checked on the query as written, as promqltest checks them, with the
//! messages compared without their `(line:col)` position. Evals that fail and involve native
//! histograms (in the data they read or in the expectation) count as skipped.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pharos_metrics::model::{Labels, Series, is_stale_nan};
use pharos_metrics::query::{
    Annotations, CancelToken, Engine, EngineOptions, Expr, Matcher, MemSource, QueryError, QueryValue,
    SeriesSource, matches_all, parse,
};
use pharos_metrics::store::{AppendError, Head, HeadOptions};
use promql_parser::parser::AtModifier;

use crate::promqltest::{Command, EvalCmd, EvalTime, SeqValue, parse_script};

/// Where a script's samples are loaded: the reference in-memory source, or the TSDB head.
enum Backend {
    Mem(MemSource),
    /// The head, and the same samples in a reference source: scripts may load a new
    /// value for a loaded timestamp, which the head refuses, so then the head is rebuilt.
    Head(Box<Head>, MemSource),
}

impl Backend {
    fn new(head: bool) -> Self {
        if head {
            // Scripts may load a series' samples in any order across `load` commands.
            Self::Head(Box::new(test_head()), MemSource::new())
        } else {
            Self::Mem(MemSource::new())
        }
    }

    fn add(&mut self, labels: &Labels, t: i64, v: f64) -> Result<(), String> {
        match self {
            Self::Mem(m) => {
                m.add(labels.clone(), t, v);
                Ok(())
            }
            Self::Head(h, shadow) => {
                shadow.add(labels.clone(), t, v);
                match h.append(labels, t, v) {
                    Err(AppendError::DuplicateSample { .. }) => {
                        **h = test_head();
                        for s in shadow.select(&[], i64::MIN, i64::MAX).map_err(|e| e.to_string())? {
                            let out = h.append_samples(&s.labels, &s.samples);
                            if let Some(e) = out.first_error {
                                return Err(format!("reload {}: {e}", s.labels));
                            }
                        }
                        Ok(())
                    }
                    r => r.map_err(|e| format!("load {labels} at {t}: {e}")),
                }
            }
        }
    }

    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>, QueryError> {
        match self {
            Self::Mem(m) => m.select(matchers, mint, maxt),
            Self::Head(h, _) => h.select(matchers, mint, maxt),
        }
    }
}

fn test_head() -> Head {
    // Scripts may load a series' samples in any order across `load` commands.
    Head::new(HeadOptions {
        out_of_order_window: Duration::from_secs(100 * 365 * 86_400),
        max_series: 0,
        ..HeadOptions::default()
    })
}

/// The store the scripts load into, remembering which series carried native histograms.
struct TestSource {
    mem: Backend,
    histogram_series: HashSet<Labels>,
    touched_histograms: AtomicBool,
}

impl SeriesSource for TestSource {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<Vec<Series>, QueryError> {
        if self.histogram_series.iter().any(|l| matches_all(l, matchers)) {
            self.touched_histograms.store(true, Ordering::Relaxed);
        }
        self.mem.select(matchers, mint, maxt)
    }
}

/// Outcome of one eval.
enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

/// Per-file tally.
#[derive(Default)]
pub(crate) struct FileReport {
    pub(crate) passed: usize,
    pub(crate) failed: usize,
    pub(crate) skipped: usize,
    pub(crate) failures: Vec<String>,
    pub(crate) skip_reasons: BTreeMap<String, usize>,
}

/// promqltest's float comparison: relative tolerance 1e-6, NaN equals NaN, the staleness
/// marker equals only itself.
fn almost_equal(a: f64, b: f64) -> bool {
    const EPSILON: f64 = 1e-6;
    if is_stale_nan(a) || is_stale_nan(b) {
        return is_stale_nan(a) && is_stale_nan(b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < EPSILON * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < EPSILON
}

fn time_of(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Functions whose result depends on the evaluation time even with `@` on every selector.
const AT_UNSAFE: &[&str] = &[
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "end",
    "hour",
    "minute",
    "month",
    "year",
    "predict_linear",
    "range",
    "start",
    "step",
    "time",
    "timestamp",
];

fn contains_at_unsafe(e: &Expr) -> bool {
    match e {
        Expr::Call(c) => {
            AT_UNSAFE.contains(&c.func.name) || c.args.args.iter().any(|a| contains_at_unsafe(a))
        }
        Expr::Aggregate(a) => {
            contains_at_unsafe(&a.expr) || a.param.as_deref().is_some_and(contains_at_unsafe)
        }
        Expr::Unary(u) => contains_at_unsafe(&u.expr),
        Expr::Paren(p) => contains_at_unsafe(&p.expr),
        Expr::Binary(b) => contains_at_unsafe(&b.lhs) || contains_at_unsafe(&b.rhs),
        Expr::Subquery(s) => contains_at_unsafe(&s.expr),
        _ => false,
    }
}

/// Sets `@ ts` on every selector and subquery that has none, not descending into
/// subqueries (whose inner selectors follow the subquery's own time).
fn set_at(e: &mut Expr, ts: i64) {
    match e {
        Expr::VectorSelector(vs) => {
            vs.at.get_or_insert_with(|| AtModifier::At(time_of(ts)));
        }
        Expr::MatrixSelector(ms) => {
            ms.vs.at.get_or_insert_with(|| AtModifier::At(time_of(ts)));
        }
        Expr::Subquery(sq) => {
            sq.at.get_or_insert_with(|| AtModifier::At(time_of(ts)));
        }
        Expr::Call(c) => c.args.args.iter_mut().for_each(|a| set_at(a, ts)),
        Expr::Aggregate(a) => {
            set_at(&mut a.expr, ts);
            if let Some(p) = a.param.as_deref_mut() {
                set_at(p, ts);
            }
        }
        Expr::Unary(u) => set_at(&mut u.expr, ts),
        Expr::Paren(p) => set_at(&mut p.expr, ts),
        Expr::Binary(b) => {
            set_at(&mut b.lhs, ts);
            set_at(&mut b.rhs, ts);
        }
        _ => {}
    }
}

fn uses_query_context(expr: &str) -> bool {
    ["start()", "end()", "range()", "step()"].iter().any(|f| expr.contains(f))
}

fn check_failure(cmd: &EvalCmd, err: &QueryError) -> Result<(), String> {
    let msg = err.to_string();
    if let Some(m) = &cmd.fail_message
        && m != &msg
    {
        return Err(format!("expected error {m:?}, got {msg:?}"));
    }
    if let Some(r) = &cmd.fail_regex {
        let re = regex::Regex::new(r).map_err(|e| format!("bad expected regex: {e}"))?;
        if !re.is_match(&msg) {
            return Err(format!("expected error matching {r:?}, got {msg:?}"));
        }
    }
    Ok(())
}

/// Compares a result with the expectation, like promqltest's `compareResult`.
fn compare(cmd: &EvalCmd, got: &QueryValue, range: Option<(i64, i64, i64)>) -> Result<(), String> {
    let expected_for = |labels: &Labels| cmd.series.iter().position(|s| &s.labels == labels);
    match got {
        QueryValue::Scalar { v, .. } => {
            let Some(exp) = cmd.scalar else {
                return Err(format!("expected vector or matrix result, got scalar {v}"));
            };
            if !almost_equal(exp, *v) {
                return Err(format!("expected scalar {exp} but got {v}"));
            }
        }
        QueryValue::String { value, .. } => {
            if cmd.string.as_deref() != Some(value.as_str()) {
                return Err(format!("expected string {:?} but got {value:?}", cmd.string));
            }
        }
        QueryValue::Vector(vec) => {
            if cmd.scalar.is_some() {
                return Err(format!("expected scalar result, got vector of {}", vec.len()));
            }
            let mut seen = vec![false; cmd.series.len()];
            for (pos, s) in vec.iter().enumerate() {
                let Some(i) = expected_for(&s.labels) else {
                    return Err(format!("unexpected metric {} in result, has value {}", s.labels, s.v));
                };
                if cmd.ordered && i != pos {
                    return Err(format!(
                        "expected {} at position {} but was at {}",
                        s.labels,
                        i + 1,
                        pos + 1
                    ));
                }
                let exp = match cmd.series[i].values.first() {
                    Some(SeqValue::Float(f)) => *f,
                    other => return Err(format!("expected {other:?} for {}", s.labels)),
                };
                if !almost_equal(exp, s.v) {
                    return Err(format!("expected {exp} for {} but got {}", s.labels, s.v));
                }
                seen[i] = true;
            }
            if let Some(i) = seen.iter().position(|s| !s) {
                return Err(format!("expected metric {} not found", cmd.series[i].labels));
            }
        }
        QueryValue::Matrix(m) => {
            if cmd.scalar.is_some() {
                return Err("expected scalar result, got matrix".into());
            }
            if cmd.ordered {
                return Err("expected ordered result, but query returned a matrix".into());
            }
            let Some((start, end, step)) = range else {
                return Err("got a matrix for an instant expectation".into());
            };
            let mut seen = vec![false; cmd.series.len()];
            for s in m {
                let Some(i) = expected_for(&s.labels) else {
                    return Err(format!(
                        "unexpected metric {} in result ({} points)",
                        s.labels,
                        s.samples.len()
                    ));
                };
                seen[i] = true;
                let mut expected = Vec::new();
                for (k, v) in cmd.series[i].values.iter().enumerate() {
                    let t = start + k as i64 * step;
                    if t > end {
                        return Err(format!(
                            "expected {} points for {}, too many for the range",
                            cmd.series[i].values.len(),
                            s.labels
                        ));
                    }
                    match v {
                        SeqValue::Float(f) => expected.push((t, *f)),
                        SeqValue::Omitted => {}
                        SeqValue::Histogram => return Err("histogram expected".into()),
                    }
                }
                if expected.len() != s.samples.len() {
                    return Err(format!(
                        "expected {} points for {}, got {:?}",
                        expected.len(),
                        s.labels,
                        s.samples.iter().map(|p| (p.t, p.v)).collect::<Vec<_>>()
                    ));
                }
                for (e, g) in expected.iter().zip(&s.samples) {
                    if e.0 != g.t {
                        return Err(format!("expected timestamp {} for {} but got {}", e.0, s.labels, g.t));
                    }
                    if !almost_equal(e.1, g.v) {
                        return Err(format!(
                            "expected {} at t={} for {} but got {}",
                            e.1, g.t, s.labels, g.v
                        ));
                    }
                }
            }
            if let Some(i) = seen.iter().position(|s| !s) {
                return Err(format!("expected metric {} not found", cmd.series[i].labels));
            }
        }
    }
    Ok(())
}

/// The annotations of a query against the eval's expectations (promqltest checks the query as
/// written, not the variants it derives).
fn check_annotations(cmd: &EvalCmd, got: &Annotations) -> Result<(), String> {
    cmd.warn.check("warn", &got.warnings)?;
    cmd.info.check("info", &got.infos)
}

fn run_instant(
    engine: &Engine,
    src: &TestSource,
    cmd: &EvalCmd,
    expr: &Expr,
    t: i64,
    as_written: bool,
) -> Result<(), String> {
    let cancel = CancelToken::new();
    let res = engine.instant_annotated(src, expr, t, &cancel);
    let got = match res {
        Err(e) if cmd.fail => return check_failure(cmd, &e),
        Err(e) => return Err(format!("error evaluating at {t}: {e}")),
        Ok(_) if cmd.fail => return Err(format!("expected error evaluating at {t} but got none")),
        Ok((v, annotations)) => {
            if as_written {
                check_annotations(cmd, &annotations).map_err(|e| format!("at {t}: {e}"))?;
            }
            v
        }
    };
    compare(cmd, &got, cmd.range_vector).map_err(|e| format!("at {t}: {e}"))?;
    if cmd.range_vector.is_some() || cmd.string.is_some() || uses_query_context(&cmd.expr) {
        return Ok(());
    }
    // The same query in range mode must give the same result at its middle step.
    let ranged = engine
        .range(src, expr, t - 60_000, t + 60_000, 60_000, &cancel)
        .map_err(|e| format!("error in range mode at {t}: {e}"))?;
    if cmd.ordered {
        return Ok(());
    }
    let QueryValue::Matrix(m) = ranged else {
        return Err("range mode did not return a matrix".into());
    };
    let vec: Vec<pharos_metrics::query::VectorSample> = m
        .iter()
        .filter_map(|s| {
            s.samples.iter().find(|p| p.t == t).map(|p| pharos_metrics::query::VectorSample {
                labels: s.labels.clone(),
                t,
                v: p.v,
            })
        })
        .collect();
    let as_value = if matches!(got, QueryValue::Scalar { .. }) {
        match vec.first() {
            Some(s) => QueryValue::Scalar { t, v: s.v },
            None => return Err("range mode returned no scalar".into()),
        }
    } else {
        QueryValue::Vector(vec)
    };
    compare(cmd, &as_value, None).map_err(|e| format!("range mode at {t}: {e}"))
}

fn run_eval(engine: &Engine, src: &TestSource, cmd: &EvalCmd) -> Result<(), String> {
    let expr = match parse(&cmd.expr) {
        Ok(e) => e,
        Err(e) if cmd.fail => return check_failure(cmd, &e),
        Err(e) => return Err(e.to_string()),
    };
    match cmd.time {
        EvalTime::Range { start, end, step } => {
            let cancel = CancelToken::new();
            match engine.range_annotated(src, &expr, start, end, step, &cancel) {
                Err(e) if cmd.fail => check_failure(cmd, &e),
                Err(e) => Err(format!("error evaluating range query: {e}")),
                Ok(_) if cmd.fail => Err("expected error evaluating range query but got none".into()),
                Ok((v, annotations)) => {
                    check_annotations(cmd, &annotations)?;
                    compare(cmd, &v, Some((start, end, step)))
                }
            }
        }
        EvalTime::Instant(t) => {
            run_instant(engine, src, cmd, &expr, t, true)?;
            if contains_at_unsafe(&expr) {
                return Ok(());
            }
            let times: Vec<i64> =
                if t == 0 { vec![-1000, 0, 1000] } else { vec![-10 * t, 0, t / 5, t, 10 * t] };
            let mut with_at = expr.clone();
            set_at(&mut with_at, t);
            for et in times {
                run_instant(engine, src, cmd, &with_at, et, false).map_err(|e| format!("with @ {t}: {e}"))?;
            }
            Ok(())
        }
    }
}

/// Runs one script.
pub(crate) fn run_file(path: &Path) -> Result<FileReport, String> {
    run_file_on(path, false)
}

/// Runs one script with its samples in the reference source or (`head`) in a TSDB head.
fn run_file_on(path: &Path, head: bool) -> Result<FileReport, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let cmds = parse_script(&text)?;
    let engine =
        Engine::new(EngineOptions { timeout: Some(Duration::from_secs(100)), ..EngineOptions::default() });
    let mut src = TestSource {
        mem: Backend::new(head),
        histogram_series: HashSet::new(),
        touched_histograms: AtomicBool::new(false),
    };
    let mut report = FileReport::default();
    for c in cmds {
        match c {
            Command::Clear => {
                src.mem = Backend::new(head);
                src.histogram_series.clear();
            }
            Command::Load { step, with_nhcb, series } => {
                for s in series {
                    if with_nhcb && let Some(h) = nhcb_series(&s.labels) {
                        src.histogram_series.insert(h);
                    }
                    for (i, v) in s.values.iter().enumerate() {
                        let t = i as i64 * step;
                        match v {
                            SeqValue::Float(f) => src.mem.add(&s.labels, t, *f)?,
                            SeqValue::Histogram => {
                                src.histogram_series.insert(s.labels.clone());
                            }
                            SeqValue::Omitted => {}
                        }
                    }
                }
            }
            Command::Eval(cmd) => {
                if cmd.ignored {
                    report.skipped += 1;
                    *report.skip_reasons.entry("ignored by the script".into()).or_default() += 1;
                    continue;
                }
                src.touched_histograms.store(false, Ordering::Relaxed);
                let outcome = match run_eval(&engine, &src, &cmd) {
                    Ok(()) => Outcome::Pass,
                    Err(e)
                        if std::env::var_os("PHAROS_PROMQL_VERBOSE").is_some()
                            && (cmd.expects_histogram()
                                || src.touched_histograms.load(Ordering::Relaxed)) =>
                    {
                        Outcome::Skip(format!("native histograms are not supported ({e})"))
                    }
                    Err(_) if cmd.expects_histogram() || src.touched_histograms.load(Ordering::Relaxed) => {
                        Outcome::Skip("native histograms are not supported".into())
                    }
                    Err(e) => Outcome::Fail(e),
                };
                if std::env::var_os("PHAROS_PROMQL_VERBOSE").is_some() {
                    match &outcome {
                        Outcome::Pass => {}
                        Outcome::Skip(r) => println!("    skip line {}: {}: {r}", cmd.line, cmd.expr),
                        Outcome::Fail(e) => println!("    fail line {}: {}: {e}", cmd.line, cmd.expr),
                    }
                }
                match outcome {
                    Outcome::Pass => report.passed += 1,
                    Outcome::Skip(reason) => {
                        report.skipped += 1;
                        *report.skip_reasons.entry(reason).or_default() += 1;
                    }
                    Outcome::Fail(e) => {
                        report.failed += 1;
                        report.failures.push(format!("line {}: {}\n      {e}", cmd.line, cmd.expr));
                    }
                }
            }
        }
    }
    Ok(report)
}

/// The native histogram `load_with_nhcb` derives from a classic histogram series.
fn nhcb_series(labels: &Labels) -> Option<Labels> {
    let name = labels.get("__name__");
    let base = ["_bucket", "_count", "_sum"].iter().find_map(|suffix| name.strip_suffix(suffix))?;
    let mut out = labels.clone();
    out.remove("le");
    out.set("__name__", base);
    Some(out)
}

fn testdata_dir() -> PathBuf {
    match std::env::var_os("PHAROS_PROMQL_TESTDATA") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/promql"),
    }
}

fn baseline_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/promql-baseline.txt")
}

fn read_baseline() -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(baseline_path()).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (name, n) = l.split_once(char::is_whitespace)?;
            Some((name.to_owned(), n.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn promql_conformance_passes_at_least_the_baseline() {
    let dir = testdata_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read PromQL test data {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let baseline = read_baseline();
    let mut results = BTreeMap::new();
    let mut regressions = Vec::new();
    let (mut total_pass, mut total_fail, mut total_skip) = (0, 0, 0);
    for f in &files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let report = match run_file(f) {
            Ok(r) => r,
            Err(e) => {
                println!("{name}: cannot run: {e}");
                regressions.push(format!("{name}: cannot run: {e}"));
                continue;
            }
        };
        let total = report.passed + report.failed + report.skipped;
        println!(
            "{name}: passed {}/{} ({} failed, {} skipped)",
            report.passed, total, report.failed, report.skipped
        );
        for (reason, n) in &report.skip_reasons {
            println!("    skipped {n}: {reason}");
        }
        for failure in report.failures.iter().take(5) {
            println!("    FAIL {failure}");
        }
        total_pass += report.passed;
        total_fail += report.failed;
        total_skip += report.skipped;
        if let Some(&want) = baseline.get(&name)
            && report.passed < want
        {
            regressions.push(format!("{name}: {} passing, baseline {want}", report.passed));
        }
        results.insert(name, report.passed);
    }
    println!("total: passed {total_pass}, failed {total_fail}, skipped {total_skip}");
    if std::env::var_os("PHAROS_PROMQL_UPDATE_BASELINE").is_some_and(|v| v == "1") {
        let mut out = String::from(
            "# Passing evals per PromQL conformance file; regenerate with\n# PHAROS_PROMQL_UPDATE_BASELINE=1 cargo test -p pharos-metrics --test it promql_conformance\n",
        );
        for (name, n) in &results {
            out.push_str(&format!("{name} {n}\n"));
        }
        std::fs::write(baseline_path(), out).unwrap_or_else(|e| panic!("write baseline: {e}"));
        println!("baseline written to {}", baseline_path().display());
        return;
    }
    assert!(regressions.is_empty(), "PromQL conformance regressed:\n{}", regressions.join("\n"));
}

/// The same scripts with their samples in the TSDB head (compressed chunks, the index,
/// out-of-order merging) must give exactly the results they give on the reference source.
#[test]
fn promql_conformance_over_head_matches_mem_source() {
    let dir = testdata_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read PromQL test data {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let mut differences = Vec::new();
    for f in &files {
        let mem = run_file_on(f, false);
        let head = run_file_on(f, true);
        match (mem, head) {
            (Ok(m), Ok(h)) => {
                if (m.passed, m.failed, m.skipped) != (h.passed, h.failed, h.skipped) {
                    differences.push(format!(
                        "{}: mem {}/{}/{} head {}/{}/{} (passed/failed/skipped); head failures: {:?}",
                        f.display(),
                        m.passed,
                        m.failed,
                        m.skipped,
                        h.passed,
                        h.failed,
                        h.skipped,
                        h.failures.iter().take(3).collect::<Vec<_>>()
                    ));
                }
            }
            (Ok(_), Err(e)) => differences.push(format!("{}: head cannot run: {e}", f.display())),
            (Err(_), _) => {}
        }
    }
    assert!(differences.is_empty(), "head and mem source disagree:\n{}", differences.join("\n"));
}
