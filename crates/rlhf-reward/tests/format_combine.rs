//! Format rewards, the length penalty, and weighted / ensemble combinations.

use rlhf_reward::format::last_line;
use rlhf_reward::{
    overlong_penalty, Ensemble, EnsembleMode, LengthPenalty, MatchMode, RegexReward, Result, RewardSource, Sample,
    Score, Target, Weighted,
};

fn sample(response: &str) -> Sample<'_> {
    Sample { prompt: "", response, prompt_ids: &[], response_ids: &[], answer: None, tests: None, finished: true }
}

fn values(scores: &[Score]) -> Vec<Option<f64>> {
    scores.iter().map(|s| s.value).collect()
}

/// Returns fixed scores, one list per call.
struct Fixed(&'static str, Vec<Score>);

impl RewardSource for Fixed {
    fn name(&self) -> &str {
        self.0
    }
    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<Score>> {
        Ok(self.1.iter().take(samples.len()).cloned().collect())
    }
}

fn fixed(name: &'static str, v: &[Option<f64>]) -> Box<dyn RewardSource> {
    Box::new(Fixed(name, v.iter().map(|&value| Score { value, ..Score::default() }).collect()))
}

#[test]
fn regex_full_search_and_last_line() {
    let r = RegexReward::new(r"The answer is -?\d+\.", MatchMode::Full).unwrap().on(Target::LastLine);
    assert!(r.matches("12 + 30 = 42\nThe answer is 42.\n\n"));
    assert!(r.matches("The answer is -3."));
    assert!(!r.matches("The answer is 42.\nThanks"));
    assert!(!r.matches("So The answer is 42."));
    let anchored = RegexReward::new(r"^The answer is -?\d+\.$", MatchMode::Search).unwrap().on(Target::LastLine);
    assert!(anchored.matches("work\nThe answer is 7."));
    let search = RegexReward::new(r"<think>.*</think>", MatchMode::Search).unwrap().with_values(0.5, -0.5);
    let mut search = search.with_name("think");
    assert_eq!(search.name(), "think");
    let v = values(&search.score(&[sample("a <think>x</think> b"), sample("none")]).unwrap());
    assert_eq!(v, [Some(0.5), Some(-0.5)]);
    let err = RegexReward::new("(unclosed", MatchMode::Full).unwrap_err().to_string();
    assert!(err.contains("`(unclosed`"), "{err}");
    assert_eq!(last_line("a\nb  \n \n"), "b");
}

#[test]
fn length_penalty_is_soft_then_hard() {
    assert_eq!(overlong_penalty(700, 1000, 200), 0.0);
    assert_eq!(overlong_penalty(800, 1000, 200), 0.0);
    assert_eq!(overlong_penalty(900, 1000, 200), -0.5);
    assert_eq!(overlong_penalty(1000, 1000, 200), -1.0);
    assert_eq!(overlong_penalty(1001, 1000, 200), -1.0);
    let ids = [7u32; 9];
    let mut p = LengthPenalty::new(10, 2).unwrap();
    p.unfinished = -1.0;
    let long = Sample { response_ids: &ids, ..sample("") };
    let cut = Sample { finished: false, ..long };
    assert_eq!(values(&p.score(&[long, cut]).unwrap()), [Some(-0.5), Some(-1.5)]);
    assert!(LengthPenalty::new(10, 11).unwrap_err().to_string().contains("buffer_tokens (11)"));
}

#[test]
fn weighted_sums_treat_none_as_zero_unless_all_are_none() {
    let task = fixed("task", &[Some(1.0), None, None, Some(0.0)]);
    let fmt = fixed("format", &[Some(1.0), Some(1.0), None, None]);
    let mut w = Weighted::new(vec![(1.0, task), (0.5, fmt)]).unwrap();
    let s: Vec<Sample> = (0..4).map(|_| sample("")).collect();
    assert_eq!(values(&w.score(&s).unwrap()), [Some(1.5), Some(0.5), None, Some(0.0)]);
    assert_eq!(w.parts().map(|(w, n)| format!("{w}:{n}")).collect::<Vec<_>>(), ["1:task", "0.5:format"]);
    assert!(Weighted::new(vec![]).is_err());
}

#[test]
fn weighted_scales_and_merges_steps_and_joins_notes() {
    let a = Score { value: Some(1.0), steps: vec![(2, 1.0), (5, 2.0)], note: Some("ok".into()) };
    let b = Score { value: Some(0.0), steps: vec![(5, 1.0), (1, 4.0)], note: None };
    let mut w = Weighted::new(vec![
        (2.0, Box::new(Fixed("a", vec![a])) as Box<dyn RewardSource>),
        (-1.0, Box::new(Fixed("b", vec![b]))),
    ])
    .unwrap();
    let s = &w.score(&[sample("")]).unwrap()[0];
    assert_eq!(s.value, Some(2.0));
    assert_eq!(s.steps, [(1, -4.0), (2, 2.0), (5, 3.0)]);
    assert_eq!(s.note.as_deref(), Some("a: ok"));
}

#[test]
fn a_source_returning_the_wrong_count_is_named() {
    let mut w = Weighted::new(vec![(1.0, fixed("short", &[Some(1.0)]))]).unwrap();
    let err = w.score(&[sample(""), sample("")]).unwrap_err().to_string();
    assert!(err.contains("`short` returned 1 scores for 2 samples"), "{err}");
}

#[test]
fn ensembles_min_mean_and_mean_minus_std() {
    let members = || vec![fixed("rm1", &[Some(1.0), None, None]), fixed("rm2", &[Some(3.0), Some(2.0), None])];
    let s: Vec<Sample> = (0..3).map(|_| sample("")).collect();
    let run = |mode| values(&Ensemble::new(members(), mode).unwrap().score(&s).unwrap());
    assert_eq!(run(EnsembleMode::Min), [Some(1.0), Some(2.0), None]);
    assert_eq!(run(EnsembleMode::Mean), [Some(2.0), Some(2.0), None]);
    // Population std of {1, 3} is 1.
    assert_eq!(run(EnsembleMode::MeanMinusStd(0.5)), [Some(1.5), Some(2.0), None]);
    assert_eq!(Ensemble::reduce(EnsembleMode::MeanMinusStd(1.0), &[0.0, 0.0, 6.0]), Some(2.0 - 8f64.sqrt()));
    assert!(Ensemble::new(vec![], EnsembleMode::Mean).is_err());
}
