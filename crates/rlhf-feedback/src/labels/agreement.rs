//! Inter-annotator agreement for preference rankings, so that the admin page and CLI can tell
//! noisy annotators and ambiguous items apart: Cohen's κ per annotator pair over response-pair
//! preferences, Krippendorff's α (ordinal) over tier ranks, and each annotator's agreement with
//! the majority of the others. Everything here is pure and deterministic (sorted output).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

/// One annotator's ranking of one item: tiers of response ids, best first; a tier of 2+ is a tie.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub item: i64,
    pub annotator: String,
    pub tiers: Vec<Vec<i64>>,
}

/// Label of a response pair `(a, b)` with `a < b`: `a` better, `b` better, or tied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Preference {
    First,
    Second,
    Tie,
}

/// 1-based tier of each response. An id listed twice keeps its first (best) tier, so a malformed
/// ranking still yields one consistent label per pair.
fn tier_of(tiers: &[Vec<i64>]) -> BTreeMap<i64, usize> {
    let mut rank = BTreeMap::new();
    for (t, tier) in tiers.iter().enumerate() {
        for &id in tier {
            rank.entry(id).or_insert(t + 1);
        }
    }
    rank
}

/// Pairwise preferences implied by tiers, keyed by (smaller id, larger id): the common unit that
/// makes rankings of different shapes (ties, partial lists) comparable.
pub fn pairwise(tiers: &[Vec<i64>]) -> BTreeMap<(i64, i64), Preference> {
    let rank: Vec<(i64, usize)> = tier_of(tiers).into_iter().collect();
    let mut out = BTreeMap::new();
    for (i, &(a, ra)) in rank.iter().enumerate() {
        for &(b, rb) in &rank[i + 1..] {
            let p = match ra.cmp(&rb) {
                Ordering::Less => Preference::First,
                Ordering::Greater => Preference::Second,
                Ordering::Equal => Preference::Tie,
            };
            out.insert((a, b), p);
        }
    }
    out
}

/// Cohen's kappa of two raters over the same units (any category type): agreement corrected for
/// what their label frequencies would give by chance. `None` when undefined: no units, or chance
/// agreement p_e = 1 (both raters used one and the same category; the textbook convention, since
/// 0/0 says nothing about reliability). Computed from integer counts, so exact cases are exact.
///
/// # Panics
/// If `a` and `b` differ in length: that is a caller bug, not missing data.
pub fn cohen_kappa<T: Eq + Hash + Clone>(a: &[T], b: &[T]) -> Option<f64> {
    assert_eq!(a.len(), b.len(), "cohen_kappa: both raters must label the same units");
    let n = a.len() as u128;
    let mut counts: HashMap<&T, (u128, u128)> = HashMap::new();
    let mut agree = 0u128;
    for (x, y) in a.iter().zip(b) {
        counts.entry(x).or_default().0 += 1;
        counts.entry(y).or_default().1 += 1;
        agree += u128::from(x == y);
    }
    // κ = (p_o − p_e)/(1 − p_e), multiplied through by n².
    let chance: u128 = counts.values().map(|&(ca, cb)| ca * cb).sum();
    if n == 0 || chance == n * n {
        return None;
    }
    Some(((n * agree) as f64 - chance as f64) / ((n * n - chance) as f64))
}

/// Level of measurement for Krippendorff's α: which differences count as how much disagreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Nominal,
    Ordinal,
    Interval,
}

/// Krippendorff's alpha from reliability data: `units[u][rater] = Option<value>`; it tolerates
/// missing values and any number of raters, which κ does not. Units with fewer than two values
/// are not pairable and are left out; NaN counts as missing. Values are compared exactly (they
/// are small integers or ranks). `None` when undefined: no pairable values, or only one distinct
/// value (D_e = 0, no disagreement possible).
pub fn krippendorff_alpha(units: &[Vec<Option<f64>>], metric: Metric) -> Option<f64> {
    // `+ 0.0` folds −0.0 into 0.0 so that exact comparison is IEEE equality.
    let units: Vec<Vec<f64>> = units
        .iter()
        .map(|u| u.iter().flatten().filter(|v| !v.is_nan()).map(|v| v + 0.0).collect::<Vec<_>>())
        .filter(|u| u.len() >= 2)
        .collect();
    let mut values: Vec<f64> = units.iter().flatten().copied().collect();
    values.sort_by(f64::total_cmp);
    values.dedup();
    if values.len() < 2 {
        return None;
    }
    let index = |v: f64| values.binary_search_by(|x| x.total_cmp(&v)).expect("value collected above");
    // Coincidence matrix: o_ck = Σ_u n_uc (n_uk − [c = k]) / (m_u − 1), i.e. every ordered pair of
    // values within a unit, each unit weighted to contribute m_u pairable values in total.
    let k = values.len();
    let mut o = vec![vec![0.0f64; k]; k];
    for u in &units {
        let mut n_u: BTreeMap<usize, f64> = BTreeMap::new();
        for &v in u {
            *n_u.entry(index(v)).or_default() += 1.0;
        }
        let w = (u.len() - 1) as f64;
        for (&c, &nc) in &n_u {
            for (&d, &nd) in &n_u {
                let partners = if c == d { nd - 1.0 } else { nd };
                o[c][d] += nc * partners / w;
            }
        }
    }
    let n_c: Vec<f64> = o.iter().map(|row| row.iter().sum()).collect();
    let n: f64 = n_c.iter().sum();
    let delta2 = |c: usize, d: usize| match metric {
        Metric::Nominal => f64::from(u8::from(c != d)),
        Metric::Interval => (values[c] - values[d]).powi(2),
        // Ordinal distance is the mass of values between c and k (halving the endpoints): ranks
        // matter, not their spacing.
        Metric::Ordinal => {
            let between: f64 = n_c[c.min(d)..=c.max(d)].iter().sum();
            (between - (n_c[c] + n_c[d]) / 2.0).powi(2)
        }
    };
    let (mut d_o, mut d_e) = (0.0, 0.0);
    for c in 0..k {
        for d in (0..k).filter(|&d| d != c) {
            let delta = delta2(c, d);
            d_o += o[c][d] * delta;
            d_e += n_c[c] * n_c[d] * delta;
        }
    }
    Some(1.0 - d_o / (d_e / (n - 1.0)))
}

/// Cohen's κ and raw agreement of two annotators over the response pairs both labelled.
#[derive(Debug, Clone, Serialize)]
pub struct PairAgreement {
    pub a: String,
    pub b: String,
    pub shared_items: usize,
    pub comparisons: usize,
    pub kappa: Option<f64>,
    pub raw_agreement: f64,
}

/// How often an annotator sides with the majority of the others on the same response pairs.
#[derive(Debug, Clone, Serialize)]
pub struct AnnotatorAgreement {
    pub annotator: String,
    pub compared: usize,
    pub agreement_with_majority: Option<f64>,
}

/// Agreement summary for the admin page and CLI.
#[derive(Debug, Clone, Serialize)]
pub struct AgreementReport {
    pub items_with_overlap: usize,
    pub pairs: Vec<PairAgreement>,
    pub alpha_ordinal: Option<f64>,
    pub per_annotator: Vec<AnnotatorAgreement>,
}

/// One annotator's judgement of one item, in both views the statistics need.
struct Judged {
    prefs: BTreeMap<(i64, i64), Preference>,
    ranks: BTreeMap<i64, usize>,
}

/// The label with strictly the most votes; `None` on a tied vote, which has no majority to match.
fn strict_plurality(votes: &BTreeMap<Preference, usize>) -> Option<Preference> {
    let best = *votes.values().max()?;
    let mut top = votes.iter().filter(|&(_, &v)| v == best);
    let (&label, _) = top.next()?;
    top.next().is_none().then_some(label)
}

/// Agreement report over all judgements. If an annotator judged an item more than once, the last
/// judgement in `judgements` wins (a re-submission is a correction). `pairs` lists, sorted by
/// (a, b), each annotator pair with at least one shared response pair (raw agreement is undefined
/// otherwise); `shared_items` counts items both judged. `per_annotator` lists every annotator,
/// sorted; the "majority" of a single other annotator is that annotator's label.
pub fn report(judgements: &[Judgement]) -> AgreementReport {
    let mut by_item: BTreeMap<i64, BTreeMap<&str, &[Vec<i64>]>> = BTreeMap::new();
    for j in judgements {
        by_item.entry(j.item).or_default().insert(&j.annotator, &j.tiers);
    }
    let names: Vec<&str> =
        by_item.values().flat_map(|m| m.keys().copied()).collect::<BTreeSet<_>>().into_iter().collect();
    // Only items judged by 2+ annotators can show (dis)agreement.
    let overlap: Vec<BTreeMap<&str, Judged>> = by_item
        .values()
        .filter(|m| m.len() >= 2)
        .map(|m| m.iter().map(|(&who, t)| (who, Judged { prefs: pairwise(t), ranks: tier_of(t) })).collect())
        .collect();

    let mut pairs = Vec::new();
    for (i, &a) in names.iter().enumerate() {
        for &b in &names[i + 1..] {
            let (mut la, mut lb, mut shared_items) = (Vec::new(), Vec::new(), 0);
            for judged in &overlap {
                let (Some(ja), Some(jb)) = (judged.get(a), judged.get(b)) else { continue };
                shared_items += 1;
                for (pair, pa) in &ja.prefs {
                    if let Some(pb) = jb.prefs.get(pair) {
                        la.push(*pa);
                        lb.push(*pb);
                    }
                }
            }
            if la.is_empty() {
                continue;
            }
            let agree = la.iter().zip(&lb).filter(|(x, y)| x == y).count();
            pairs.push(PairAgreement {
                a: a.to_string(),
                b: b.to_string(),
                shared_items,
                comparisons: la.len(),
                kappa: cohen_kappa(&la, &lb),
                raw_agreement: agree as f64 / la.len() as f64,
            });
        }
    }

    // α units: (item, response); one column per annotator of that item, value = 1-based tier.
    let units: Vec<Vec<Option<f64>>> = overlap
        .iter()
        .flat_map(|judged| {
            let ids: BTreeSet<i64> = judged.values().flat_map(|j| j.ranks.keys().copied()).collect();
            ids.into_iter().map(move |id| judged.values().map(|j| j.ranks.get(&id).map(|&r| r as f64)).collect())
        })
        .collect();

    let per_annotator = names
        .iter()
        .map(|&me| {
            let (mut compared, mut matched) = (0usize, 0usize);
            for judged in &overlap {
                let Some(mine) = judged.get(me) else { continue };
                for (pair, p) in &mine.prefs {
                    let mut votes: BTreeMap<Preference, usize> = BTreeMap::new();
                    for q in judged.iter().filter(|&(&who, _)| who != me).filter_map(|(_, j)| j.prefs.get(pair)) {
                        *votes.entry(*q).or_default() += 1;
                    }
                    if let Some(majority) = strict_plurality(&votes) {
                        compared += 1;
                        matched += usize::from(majority == *p);
                    }
                }
            }
            AnnotatorAgreement {
                annotator: me.to_string(),
                compared,
                agreement_with_majority: (compared > 0).then(|| matched as f64 / compared as f64),
            }
        })
        .collect();

    AgreementReport {
        items_with_overlap: overlap.len(),
        pairs,
        alpha_ordinal: krippendorff_alpha(&units, Metric::Ordinal),
        per_annotator,
    }
}

#[cfg(test)]
mod tests {
    use super::Preference::{First, Second, Tie};
    use super::*;

    fn close(x: Option<f64>, want: f64, tol: f64) -> bool {
        x.is_some_and(|x| (x - want).abs() < tol)
    }

    /// Expands a contingency table `table[i][j]` (rater A said i, rater B said j) into label lists.
    fn from_table(table: &[&[usize]]) -> (Vec<usize>, Vec<usize>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (i, row) in table.iter().enumerate() {
            for (j, &count) in row.iter().enumerate() {
                a.extend(std::iter::repeat_n(i, count));
                b.extend(std::iter::repeat_n(j, count));
            }
        }
        (a, b)
    }

    #[test]
    fn kappa_textbook_2x2() {
        // yes/yes 20, yes/no 5, no/yes 10, no/no 15: p_o = 35/50 = 0.7, A says yes 25/50,
        // B 30/50, p_e = 0.5·0.6 + 0.5·0.4 = 0.5, κ = 0.2/0.5 = 0.4.
        let (a, b) = from_table(&[&[20, 5], &[10, 15]]);
        assert!(close(cohen_kappa(&a, &b), 0.4, 1e-12), "{:?}", cohen_kappa(&a, &b));
    }

    #[test]
    fn kappa_three_categories_by_hand() {
        // Rows (A) 15, 11, 9; columns (B) 13, 11, 11; n = 35; diagonal 24.
        // κ = (n·agree − Σ row·col)/(n² − Σ row·col) = (840 − (195+121+99))/(1225 − 415) = 85/162.
        let (a, b) = from_table(&[&[10, 2, 3], &[1, 8, 2], &[2, 1, 6]]);
        assert!(close(cohen_kappa(&a, &b), 85.0 / 162.0, 1e-12), "{:?}", cohen_kappa(&a, &b));
    }

    #[test]
    fn kappa_perfect_systematic_and_undefined() {
        let a = ["x", "y", "z", "x", "y"];
        assert_eq!(cohen_kappa(&a, &a), Some(1.0));
        // Always the other label: p_o = 0, p_e = 0.5, κ = −1.
        assert_eq!(cohen_kappa(&["x", "y", "x", "y"], &["y", "x", "y", "x"]), Some(-1.0));
        assert!(cohen_kappa(&[1, 2, 1], &[2, 1, 1]).unwrap() < 0.0);
        assert_eq!(cohen_kappa::<u8>(&[], &[]), None);
        assert_eq!(cohen_kappa(&["x", "x"], &["x", "x"]), None, "p_e = 1");
        // One rater constant, the other not: p_e = 0.5 < 1, defined (κ = 0).
        assert_eq!(cohen_kappa(&["x", "x"], &["x", "y"]), Some(0.0));
    }

    /// Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C:
    /// 4 observers × 12 units with missing values, as units[u][observer].
    fn worked_example() -> Vec<Vec<Option<f64>>> {
        const OBS: [[u8; 12]; 4] = [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, 0, 0, 0], // 0 = no value
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, 0, 3],
            [0, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, 0],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, 0],
        ];
        (0..12).map(|u| OBS.iter().map(|o| (o[u] > 0).then(|| f64::from(o[u]))).collect()).collect()
    }

    #[test]
    fn alpha_krippendorff_worked_example() {
        // Published: nominal 0.743, ordinal 0.815, interval 0.849 (to 3 decimals).
        let units = worked_example();
        for (metric, want) in [(Metric::Nominal, 0.743), (Metric::Ordinal, 0.815), (Metric::Interval, 0.849)] {
            let got = krippendorff_alpha(&units, metric);
            assert!(close(got, want, 1e-3), "{metric:?}: {got:?}");
        }
        // Nominal exactly: n = 40, n_c = 9, 13, 10, 5, 3, Σ_{c≠k} o_ck = 8, Σ_{c≠k} n_c n_k = 1600 − 384;
        // α = 1 − (n−1)·8/1216 = 113/152.
        assert!(close(krippendorff_alpha(&units, Metric::Nominal), 113.0 / 152.0, 1e-12));
    }

    #[test]
    fn alpha_krippendorff_two_observer_binary() {
        // Same paper, section A: o_00 = 10, o_01 = o_10 = 4, o_11 = 2; n_0 = 14, n_1 = 6, n = 20;
        // α = 1 − 19·4/(14·6) = 2/21 ≈ 0.095.
        let ben = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0];
        let hen = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0];
        let units: Vec<_> = ben.iter().zip(hen).map(|(&x, y)| vec![Some(f64::from(x)), Some(f64::from(y))]).collect();
        assert!(close(krippendorff_alpha(&units, Metric::Nominal), 2.0 / 21.0, 1e-12));
    }

    #[test]
    fn alpha_matches_reference_package() {
        // Written by scripts/agreement_reference.py with the PyPI `krippendorff` package.
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/agreement_reference.json")).unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 5);
        for case in cases {
            let units: Vec<Vec<Option<f64>>> = serde_json::from_value(case["units"].clone()).unwrap();
            for (metric, key) in
                [(Metric::Nominal, "nominal"), (Metric::Ordinal, "ordinal"), (Metric::Interval, "interval")]
            {
                let want = case[key].as_f64().unwrap();
                let got = krippendorff_alpha(&units, metric);
                assert!(close(got, want, 1e-9), "{} {key}: {got:?} vs {want}", case["name"]);
            }
        }
    }

    #[test]
    fn alpha_undefined_and_unpairable() {
        assert_eq!(krippendorff_alpha(&[], Metric::Nominal), None);
        // Lone values are unpairable; the only pairable unit holds one distinct value: D_e = 0.
        let units = vec![vec![Some(1.0), None], vec![None, Some(2.0)], vec![Some(3.0), Some(3.0)]];
        assert_eq!(krippendorff_alpha(&units, Metric::Interval), None);
        // Adding the lone values as pairable units changes the answer, so they were really dropped.
        let mut more = units.clone();
        more.push(vec![Some(1.0), Some(2.0)]);
        assert!(krippendorff_alpha(&more, Metric::Interval).is_some());
        let perfect =
            vec![vec![Some(1.0), Some(1.0), None], vec![Some(2.0), Some(2.0), Some(2.0)], vec![Some(1.0), None, None]];
        assert_eq!(krippendorff_alpha(&perfect, Metric::Ordinal), Some(1.0));
        let mut with_nan = perfect.clone();
        with_nan.push(vec![Some(f64::NAN), Some(1.0), None]); // NaN is missing: this unit is unpairable
        assert_eq!(krippendorff_alpha(&with_nan, Metric::Interval), Some(1.0));
    }

    #[test]
    fn pairwise_three_tiers_ties_and_single_tier() {
        let three = pairwise(&[vec![3], vec![1], vec![2]]);
        let want: BTreeMap<_, _> = [((1, 2), First), ((1, 3), Second), ((2, 3), Second)].into();
        assert_eq!(three, want);
        let tied = pairwise(&[vec![4, 2], vec![9]]);
        let want: BTreeMap<_, _> = [((2, 4), Tie), ((2, 9), First), ((4, 9), First)].into();
        assert_eq!(tied, want);
        let single = pairwise(&[vec![5, 1, 7]]);
        assert!(single.len() == 3 && single.values().all(|&p| p == Tie), "{single:?}");
        assert!(pairwise(&[vec![1]]).is_empty());
        // A repeated id keeps its first (best) tier.
        assert_eq!(pairwise(&[vec![1], vec![2], vec![1]]), [((1, 2), First)].into());
    }

    fn j(item: i64, who: &str, tiers: &[&[i64]]) -> Judgement {
        Judgement { item, annotator: who.into(), tiers: tiers.iter().map(|t| t.to_vec()).collect() }
    }

    #[test]
    fn report_three_annotators_by_hand() {
        let report = report(&[
            j(2, "alice", &[&[10], &[20]]),     // superseded by alice's later judgement of item 2
            j(1, "alice", &[&[1], &[2], &[3]]), // (1,2) F  (1,3) F  (2,3) F
            j(1, "bob", &[&[1], &[3], &[2]]),   // (1,2) F  (1,3) F  (2,3) S
            j(1, "carol", &[&[1, 2], &[3]]),    // (1,2) T  (1,3) F  (2,3) F
            j(2, "bob", &[&[20], &[10]]),       // (10,20) S
            j(2, "alice", &[&[20], &[10]]),     // (10,20) S
            j(3, "carol", &[&[5], &[6]]),       // nobody else: no overlap
        ]);
        assert_eq!(report.items_with_overlap, 2);
        // alice–bob: items 1, 2; labels FFFS vs FFSS: p_o = 3/4, p_e = (3·2 + 1·2)/16 = 1/2, κ = 1/2.
        // alice–carol: item 1; FFF vs TFF: p_o = 2/3, p_e = 3·2/9 = 2/3, κ = 0.
        // bob–carol: item 1; FFS vs TFF: p_o = 1/3, p_e = 2·2/9 = 4/9, κ = (3−4)/(9−4) = −1/5.
        let got: Vec<_> =
            report.pairs.iter().map(|p| (p.a.as_str(), p.b.as_str(), p.shared_items, p.comparisons)).collect();
        assert_eq!(got, [("alice", "bob", 2, 4), ("alice", "carol", 1, 3), ("bob", "carol", 1, 3)]);
        for (p, (kappa, raw)) in report.pairs.iter().zip([(0.5, 0.75), (0.0, 2.0 / 3.0), (-0.2, 1.0 / 3.0)]) {
            assert!(close(p.kappa, kappa, 1e-12) && (p.raw_agreement - raw).abs() < 1e-12, "{p:?}");
        }
        // α units (tiers alice, bob, carol): r1 {1,1,1}, r2 {2,3,1}, r3 {3,2,2}, r10 {2,2}, r20 {1,1}.
        // o_11 = 3+2 = 5, o_12 = o_13 = 1/2, o_22 = 1+2 = 3, o_23 = 1/2+1 = 3/2, o_33 = 0;
        // n_1 = 6, n_2 = 5, n_3 = 2, n = 13. δ²: (1,2) = 5.5² = 30.25, (2,3) = 3.5² = 12.25,
        // (1,3) = (13 − 4)² = 81. D_o = 2(15.125 + 40.5 + 18.375) = 148,
        // D_e = 2(907.5 + 972 + 122.5)/12 = 4004/12; α = 1 − 1776/4004 = 557/1001 (the PyPI package agrees).
        assert!(close(report.alpha_ordinal, 557.0 / 1001.0, 1e-12), "{:?}", report.alpha_ordinal);
        // Majority of the others (ties in the vote skipped):
        // alice: (1,2) F/T tie, (1,3) F ✓, (2,3) S/F tie, (10,20) S ✓ → 2/2.
        // bob: (1,2) tie, (1,3) F ✓, (2,3) F ✗, (10,20) S ✓ → 2/3.
        // carol: (1,2) F ✗, (1,3) F ✓, (2,3) F/S tie; item 3 has no others → 1/2.
        let got: Vec<_> = report.per_annotator.iter().map(|a| (a.annotator.as_str(), a.compared)).collect();
        assert_eq!(got, [("alice", 2), ("bob", 3), ("carol", 2)]);
        for (a, want) in report.per_annotator.iter().zip([1.0, 2.0 / 3.0, 0.5]) {
            assert!(close(a.agreement_with_majority, want, 1e-12), "{a:?}");
        }
    }

    #[test]
    fn report_edge_cases() {
        let none = report(&[j(1, "alice", &[&[1], &[2]]), j(2, "bob", &[&[1], &[2]])]);
        assert_eq!((none.items_with_overlap, none.pairs.len(), none.alpha_ordinal), (0, 0, None));
        assert_eq!(none.per_annotator.len(), 2);
        assert!(none.per_annotator.iter().all(|a| a.compared == 0 && a.agreement_with_majority.is_none()));
        // Bob never saw response 3: only (1,2) is compared, F vs S, so raw 0 and κ = 0 (p_e = 0).
        let partial = report(&[j(1, "alice", &[&[1], &[2], &[3]]), j(1, "bob", &[&[2], &[1]])]);
        let p = &partial.pairs[0];
        assert_eq!((p.comparisons, p.raw_agreement, p.kappa), (1, 0.0, Some(0.0)));
        assert_eq!(partial.per_annotator[0].compared, 1);
    }
}
