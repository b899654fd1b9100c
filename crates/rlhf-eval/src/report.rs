//! `report.html`: for each run folder, one chart per metric of its `metrics.jsonl` (a held-out
//! `eval/x` drawn with its training `x`), and each evaluation file as a table. One file, no
//! scripts: it opens from disk or from a CI artifact as it is.

use crate::svg::{escape, line_chart, Series};
use serde_json::{Map, Value};
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    Bad { path: PathBuf, line: usize, message: String },
}

type Result<T> = std::result::Result<T, ReportError>;
type Row = Map<String, Value>;

/// Metric families first in this order (`reward` covers `reward/mean`, `reward_std`, …); the
/// rest alphabetically.
const FIRST: &[&str] = &["loss", "reward", "accuracy", "kl", "entropy", "response_length", "value", "lr", "grad_norm"];

fn family_rank(name: &str) -> usize {
    let in_family = |f: &&str| name == *f || name.strip_prefix(f).is_some_and(|rest| rest.starts_with(['/', '_']));
    FIRST.iter().position(in_family).unwrap_or(FIRST.len())
}
/// Bookkeeping, not curves.
const SKIP: &[&str] = &["step", "time", "epoch", "round"];
const MAX_CHARTS: usize = 30;

#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub name: String,
    pub dir: PathBuf,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvalTable {
    pub source: PathBuf,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

fn read_jsonl(path: &Path) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io { path: path.to_path_buf(), source })?;
    let mut rows = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| ReportError::Bad { path: path.to_path_buf(), line: i + 1, message };
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(row)) => rows.push(row),
            Ok(other) => return Err(bad(format!("expected a JSON object, found {other}"))),
            Err(e) => return Err(bad(format!("not valid JSON: {e}"))),
        }
    }
    Ok(rows)
}

/// A run folder (`metrics.jsonl` inside) or a metrics file itself.
pub fn load_run(path: &Path) -> Result<Run> {
    let file = if path.is_dir() { path.join("metrics.jsonl") } else { path.to_path_buf() };
    let dir = if path.is_dir() { path.to_path_buf() } else { path.parent().unwrap_or(Path::new(".")).to_path_buf() };
    let rows = read_jsonl(&file)?;
    Ok(Run { name: dir.display().to_string(), dir, rows })
}

/// Columns that name a row come first, then the headline metrics (what a reader compares across
/// rounds: verifier accuracy, win rates, KL, length, reward); the rest follow alphabetically.
const NAMING: &[&str] = &[
    "model",
    "name",
    "run",
    "round",
    "checkpoint",
    "accuracy",
    "win_rate_verifier",
    "win_rate_rm",
    "win_rate_judge",
    "kl_to_reference",
    "mean_length",
    "rm_reward",
];

/// A JSONL file of evaluation rows (e.g. `rlhf eval --out`), with every column any row has.
pub fn load_eval(path: &Path) -> Result<EvalTable> {
    let rows = read_jsonl(path)?;
    let mut columns: Vec<String> = vec![];
    for row in &rows {
        for k in row.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    // A column with no value in any row (e.g. maj@K of a run without samples) says nothing.
    columns.retain(|c| rows.iter().any(|r| r.get(c).is_some_and(|v| !v.is_null())));
    columns.sort_by_key(|c| (NAMING.iter().position(|n| n == c).unwrap_or(NAMING.len()), c.clone()));
    Ok(EvalTable { source: path.to_path_buf(), columns, rows })
}

/// Metric names to chart, training names with `eval/` twins folded in.
fn metric_names(rows: &[Row]) -> Vec<String> {
    let mut names: Vec<String> = vec![];
    for row in rows {
        for (k, v) in row {
            let base = k.strip_prefix("eval/").unwrap_or(k);
            if v.is_number() && !SKIP.contains(&base) && !names.iter().any(|n| n == base) {
                names.push(base.to_string());
            }
        }
    }
    names.sort_by_key(|n| (family_rank(n), n.clone()));
    names
}

fn series(rows: &[Row], key: &str, name: &str) -> Series {
    let points = rows.iter().filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?))).collect();
    Series { name: name.to_string(), points }
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "–".into(),
        Some(Value::Number(n)) if n.is_f64() => n.as_f64().map_or_else(|| n.to_string(), |x| format!("{x:.3}")),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => escape(s),
        Some(other) => escape(&other.to_string()),
    }
}

const STYLE: &str =
    "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;padding:0 16px;color:#1d2330}\
h1{font-size:22px}h2{font-size:17px;margin-top:32px}.meta{color:#5a6275}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:12px}\
.grid figure{margin:0;border:1px solid #d8dce6;border-radius:6px;padding:4px;background:#fff}\
svg{width:100%;height:auto}svg .grid{stroke:#e5e8ef;stroke-width:1}svg .tick{font-size:10px;fill:#5a6275}\
svg .title{font-size:12px;font-weight:600;fill:#1d2330}svg .legend{font-size:10px}\
table{border-collapse:collapse;margin:8px 0}th,td{padding:4px 10px;border-bottom:1px solid #e5e8ef;text-align:right}\
th:first-child,td:first-child{text-align:left}th{font-size:12px;color:#5a6275}.wide{overflow-x:auto}";

/// The whole report as one HTML document.
pub fn render(title: &str, runs: &[Run], evals: &[EvalTable]) -> String {
    let mut h = String::new();
    let _ = write!(h, "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>", escape(title));
    let _ = write!(
        h,
        "<h1>{}</h1><p class=\"meta\">{} run(s), {} evaluation table(s)</p>",
        escape(title),
        runs.len(),
        evals.len()
    );
    for t in evals {
        let _ = write!(
            h,
            "<h2>Evaluation: {}</h2><div class=\"wide\"><table><thead><tr>",
            escape(&t.source.display().to_string())
        );
        for c in &t.columns {
            let _ = write!(h, "<th>{}</th>", escape(c));
        }
        h.push_str("</tr></thead><tbody>");
        for row in &t.rows {
            h.push_str("<tr>");
            for c in &t.columns {
                let _ = write!(h, "<td>{}</td>", cell(row.get(c)));
            }
            h.push_str("</tr>");
        }
        h.push_str("</tbody></table></div>");
    }
    for run in runs {
        let steps = run.rows.iter().filter_map(|r| r.get("step")?.as_f64()).fold(0.0, f64::max);
        let times: Vec<f64> = run.rows.iter().filter_map(|r| r.get("time")?.as_f64()).collect();
        let minutes = match (times.first(), times.last()) {
            (Some(a), Some(b)) if b > a => format!(", {:.1} min", (b - a) / 60.0),
            _ => String::new(),
        };
        let _ = write!(
            h,
            "<h2>Run: {}</h2><p class=\"meta\">{} rows, {steps} steps{minutes}</p><div class=\"grid\">",
            escape(&run.name),
            run.rows.len()
        );
        let names = metric_names(&run.rows);
        for name in names.iter().take(MAX_CHARTS) {
            let mut s = vec![series(&run.rows, name, "train")];
            let held_out = series(&run.rows, &format!("eval/{name}"), "held-out");
            if !held_out.points.is_empty() {
                if s[0].points.is_empty() {
                    s.clear();
                }
                s.push(held_out);
            }
            if let Some(svg) = line_chart(name, &s) {
                let _ = write!(h, "<figure>{svg}</figure>");
            }
        }
        if names.len() > MAX_CHARTS {
            let _ = write!(h, "<p class=\"meta\">{} more metrics in metrics.jsonl</p>", names.len() - MAX_CHARTS);
        }
        h.push_str("</div>");
    }
    h.push_str("</body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Row {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn eval_twins_share_a_chart_and_bookkeeping_is_not_drawn() {
        let rows = vec![
            row(json!({"step": 1, "time": 10.0, "loss": 2.0, "lr": 1e-5, "zeta": 1})),
            row(json!({"step": 2, "time": 70.0, "loss": 1.0, "lr": 1e-5, "eval/loss": 1.5, "note": "x"})),
        ];
        assert_eq!(metric_names(&rows), vec!["loss", "lr", "zeta"]);
        let families =
            [row(json!({"step": 1, "entropy": 1, "reward/mean": 1, "reward_std": 1, "rewardish": 1, "kl": 1}))];
        assert_eq!(metric_names(&families), vec!["reward/mean", "reward_std", "kl", "entropy", "rewardish"]);
        let html = render("t", &[Run { name: "runs/<a>".into(), dir: "runs/a".into(), rows }], &[]);
        assert!(html.contains("Run: runs/&lt;a&gt;"));
        assert!(html.contains("2 steps, 1.0 min"));
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains(">held-out</text>"), "loss has its held-out twin in the legend");
        assert!(!html.contains("<script"), "the report runs no scripts");
    }

    #[test]
    fn eval_tables_keep_every_column_and_name_bad_lines() {
        let dir = std::env::temp_dir().join(format!("rlhf-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("eval.jsonl");
        std::fs::write(
            &path,
            "{\"model\": \"sft\", \"accuracy\": 0.4333, \"maj_at_k\": null}\n\
             {\"model\": \"grpo\", \"kl\": 0.9, \"win_rate_rm\": 0.6}\n",
        )
        .unwrap();
        let t = load_eval(&path).unwrap();
        assert_eq!(t.columns, vec!["model", "accuracy", "win_rate_rm", "kl"], "headline first, all-null dropped");
        let html = render("t", &[], &[t]);
        assert!(html.contains("<td>0.433</td>") && html.contains("<td>–</td>"), "{html}");
        std::fs::write(&path, "{\"model\": 1}\nnot json\n").unwrap();
        let err = load_eval(&path).unwrap_err().to_string();
        assert!(err.contains("eval.jsonl:2: not valid JSON"), "{err}");
        std::fs::create_dir_all(dir.join("empty-run")).unwrap();
        let err = load_run(&dir.join("empty-run")).unwrap_err().to_string();
        assert!(err.contains("empty-run/metrics.jsonl"), "{err}");
    }
}
