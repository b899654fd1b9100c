//! Rankings out of the queue, in the preference formats `rlhf reward` (and TRL) read:
//! - `pairs`: one `{prompt, chosen, rejected}` row per ordered pair of a ranking, C(K,2) for a
//!   ranking without ties; tied responses give no pair.
//! - `rankings`: one `{prompt, responses, ranking}` row per ranking; a tie is a nested list.
//!
//! Items that anyone flagged are left out, as are skips. Every row carries the item, the annotator
//! and how far the item's other annotators agree, so a consumer can filter on agreement.

use super::agreement::{pairwise, Preference};
use super::db::{ExportItem, LabelDb, StoredSubmission};
use super::error::Result;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Pairs,
    Rankings,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ExportOptions {
    /// Keep a pair only when at least this share of the item's annotators agree with it
    /// (a ranking: the mean over its pairs). 0 keeps everything.
    pub min_agreement: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportCounts {
    pub rows: usize,
    pub rankings: usize,
    pub flagged_items: usize,
    pub tied_pairs: usize,
    pub below_agreement: usize,
}

/// The export rows (JSON objects, one per output line) and what was left out.
pub fn export(db: &LabelDb, format: ExportFormat, opts: ExportOptions) -> Result<(Vec<Value>, ExportCounts)> {
    let items = db.export_items()?;
    let mut by_item: BTreeMap<i64, Vec<StoredSubmission>> = BTreeMap::new();
    for s in db.submissions()?.into_iter().filter(|s| s.action == "submit") {
        by_item.entry(s.item).or_default().push(s);
    }
    let mut rows = vec![];
    let mut counts = ExportCounts::default();
    for item in &items {
        let Some(judged) = by_item.get(&item.id) else { continue };
        if item.flagged {
            counts.flagged_items += 1;
            continue;
        }
        let labels: Vec<_> = judged.iter().map(|s| pairwise(&s.tiers)).collect();
        for (j, s) in judged.iter().enumerate() {
            counts.rankings += 1;
            // Share of the item's annotators (this one included) who order a pair the same way.
            let agreement = |a: i64, b: i64| -> f64 {
                let key = (a.min(b), a.max(b));
                let want = if a < b { Preference::First } else { Preference::Second };
                labels.iter().filter(|l| l.get(&key) == Some(&want)).count() as f64 / labels.len() as f64
            };
            let tie_pairs = labels[j].values().filter(|p| **p == Preference::Tie).count();
            counts.tied_pairs += tie_pairs;
            let meta = |agreement: f64| json!({ "item": item.id, "annotator": s.annotator, "annotators": judged.len(), "agreement": agreement });
            match format {
                ExportFormat::Pairs => {
                    for (t, tier) in s.tiers.iter().enumerate() {
                        for &better in tier {
                            for &worse in s.tiers[t + 1..].iter().flatten() {
                                let share = agreement(better, worse);
                                if share < opts.min_agreement {
                                    counts.below_agreement += 1;
                                    continue;
                                }
                                let mut row = meta(share);
                                row["prompt"] = item.prompt_json.clone();
                                row["chosen"] = Value::String(text(item, better));
                                row["rejected"] = Value::String(text(item, worse));
                                rows.push(row);
                            }
                        }
                    }
                }
                ExportFormat::Rankings => {
                    if s.tiers.len() < 2 {
                        continue; // all tied: nothing to learn
                    }
                    let ordered: Vec<(i64, i64)> = s
                        .tiers
                        .iter()
                        .enumerate()
                        .flat_map(|(t, tier)| {
                            tier.iter().flat_map(move |&b| s.tiers[t + 1..].iter().flatten().map(move |&w| (b, w)))
                        })
                        .collect();
                    let share =
                        ordered.iter().map(|&(b, w)| agreement(b, w)).sum::<f64>() / ordered.len().max(1) as f64;
                    if share < opts.min_agreement {
                        counts.below_agreement += 1;
                        continue;
                    }
                    let index = |id: i64| item.responses.iter().position(|(r, _)| *r == id).unwrap_or(usize::MAX);
                    let ranking: Vec<Value> = s
                        .tiers
                        .iter()
                        .map(|tier| match tier.as_slice() {
                            [one] => json!(index(*one)),
                            many => json!(many.iter().map(|&id| index(id)).collect::<Vec<_>>()),
                        })
                        .collect();
                    let mut row = meta(share);
                    row["prompt"] = item.prompt_json.clone();
                    row["responses"] = json!(item.responses.iter().map(|(_, t)| t).collect::<Vec<_>>());
                    row["ranking"] = Value::Array(ranking);
                    rows.push(row);
                }
            }
        }
    }
    counts.rows = rows.len();
    Ok((rows, counts))
}

fn text(item: &ExportItem, response: i64) -> String {
    item.responses.iter().find(|(id, _)| *id == response).map(|(_, t)| t.clone()).unwrap_or_default()
}
