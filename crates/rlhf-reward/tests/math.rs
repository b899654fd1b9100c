//! Final-answer extraction, numeric equivalence and the math verifier's scores.

use rlhf_reward::math::{
    extract_final_answer, last_integer, number_tokens, numbers_equal, parse_number, reference_answer, Marker, Number,
};
use rlhf_reward::{MathConfig, MathMode, MathVerifier, RewardSource, Sample, Verdict};

fn sample<'a>(response: &'a str, answer: Option<&'a str>) -> Sample<'a> {
    Sample { prompt: "", response, prompt_ids: &[], response_ids: &[], answer, tests: None, finished: true }
}

fn value(s: &str) -> f64 {
    parse_number(s).unwrap_or_else(|| panic!("`{s}` does not parse")).value.to_f64()
}

#[test]
fn numbers_parse_in_their_written_forms() {
    assert_eq!(value("1,234,567"), 1234567.0);
    assert_eq!(value("-3.25"), -3.25);
    assert_eq!(value("+7"), 7.0);
    assert_eq!(value("−2"), -2.0);
    assert_eq!(value(".5"), 0.5);
    assert_eq!(value("3/4"), 0.75);
    assert_eq!(value("\\frac{1}{2}"), 0.5);
    assert_eq!(value("\\dfrac{-3}{6}"), -0.5);
    assert_eq!(value("-\\frac12"), -0.5);
    assert_eq!(value("$1{,}000$"), 1000.0);
    assert_eq!(value("2e-3"), 0.002);
    assert_eq!(value("12."), 12.0);
    let pct = parse_number("50\\%").unwrap();
    assert!(pct.percent && pct.value.to_f64() == 50.0);
    for bad in ["1,23", "abc", "1/0", "\\frac{1}{}", "1.2.3", "", "12,34,567"] {
        assert!(parse_number(bad).is_none(), "`{bad}` parsed");
    }
    assert_eq!(parse_number("0.5").unwrap().value, Number::Exact { num: 1, den: 2 });
}

#[test]
fn equivalence_is_exact_for_integers_and_tolerant_for_decimals() {
    let n = |s: &str| parse_number(s).unwrap().value;
    assert!(numbers_equal(n("0.5"), n("1/2"), 1e-9));
    assert!(numbers_equal(n("\\frac{1}{2}"), n("0.50"), 1e-9));
    assert!(numbers_equal(n("0.333333333333"), n("1/3"), 1e-9));
    assert!(!numbers_equal(n("0.3333"), n("1/3"), 1e-9));
    assert!(numbers_equal(n("-0"), n("0"), 1e-9));
    // Integers beyond f64's 53 bits are still told apart.
    assert!(!numbers_equal(n("12345678901234567"), n("12345678901234568"), 1e-9));
    assert!(numbers_equal(n("1,000"), n("1000"), 1e-9));
}

#[test]
fn final_answer_markers_in_priority_order() {
    let a = extract_final_answer("so x = 3, hence \\boxed{\\frac{3}{4}} and 7").unwrap();
    assert_eq!((a.marker, a.text.as_str()), (Marker::Boxed, "\\frac{3}{4}"));
    let a = extract_final_answer("\\boxed{\\text{a}^{2}} then \\boxed{x = \\frac{1}{2}}").unwrap();
    assert_eq!(a.text, "\\frac{1}{2}");
    let a = extract_final_answer("She pays 3 * 4 = 12 dollars.\n#### 1,234\n").unwrap();
    assert_eq!((a.marker, a.number.unwrap().value.to_f64()), (Marker::Hashes, 1234.0));
    let a = extract_final_answer("2 + 3 = 5. The answer is 5 apples.").unwrap();
    assert_eq!((a.marker, a.text.as_str()), (Marker::AnswerIs, "5"));
    let a = extract_final_answer("The final answer is: $-\\frac{2}{3}$.").unwrap();
    assert!((a.number.unwrap().value.to_f64() + 2.0 / 3.0).abs() < 1e-12);
    let a = extract_final_answer("first 3, then x-5 or = -7; done").unwrap();
    assert_eq!((a.marker, a.text.as_str()), (Marker::LastNumber, "-7"));
    assert_eq!(extract_final_answer("no numbers here"), None);
    let tokens: Vec<String> = number_tokens("a-5, (-6), 2.5%").into_iter().map(|(_, t)| t).collect();
    assert_eq!(tokens, ["5", "-6", "2.5%"]);
}

#[test]
fn references_may_be_full_solutions() {
    assert_eq!(reference_answer("Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18"), "18");
    assert_eq!(reference_answer("so the sum is $\\boxed{\\frac{1}{2}}$"), "\\frac{1}{2}");
    assert_eq!(reference_answer(" 42 "), "42");
}

#[test]
fn verifier_scores_and_notes() {
    let mut v = MathVerifier::new(MathConfig::default());
    let samples = [
        sample("... so \\boxed{0.5}", Some("\\frac{1}{2}")),
        sample("The answer is 1/2.", Some("0.5")),
        sample("#### 7", Some("8")),
        sample("I don't know", Some("8")),
        sample("#### 7", None),
        sample("\\boxed{\\pi}", Some("\\pi")),
        sample("#### 72", Some("Natalia sold 48/2 = 24 clips in May.\n#### 72")),
    ];
    let scores = v.score(&samples).unwrap();
    let values: Vec<Option<f64>> = scores.iter().map(|s| s.value).collect();
    assert_eq!(values, [Some(1.0), Some(1.0), Some(0.0), Some(0.0), None, Some(1.0), Some(1.0)]);
    assert_eq!(scores[2].note.as_deref(), Some("answer `7`, expected `8`"));
    assert_eq!(scores[3].note.as_deref(), Some("no final answer found"));

    let cfg = MathConfig { correct: 2.0, incorrect: -1.0, unparseable: -2.0, ..MathConfig::default() };
    let values: Vec<Option<f64>> =
        MathVerifier::new(cfg).score(&samples[..4]).unwrap().into_iter().map(|s| s.value).collect();
    assert_eq!(values, [Some(2.0), Some(2.0), Some(-1.0), Some(-2.0)]);
}

#[test]
fn percentages_match_their_fraction_only_when_asked() {
    let plain = MathVerifier::new(MathConfig::default());
    assert_eq!(plain.judge("#### 50%", "50").unwrap(), Verdict::Correct);
    assert!(matches!(plain.judge("#### 50%", "0.5").unwrap(), Verdict::Incorrect { .. }));
    let pct = MathVerifier::new(MathConfig { percent_as_fraction: true, ..MathConfig::default() });
    assert_eq!(pct.judge("#### 50%", "0.5").unwrap(), Verdict::Correct);
    assert_eq!(pct.judge("#### 0.25", "25%").unwrap(), Verdict::Correct);
}

#[test]
fn last_integer_mode_is_exactly_the_acceptance_rule() {
    assert_eq!(last_integer("12 + 30 = 42"), Some(42));
    assert_eq!(last_integer("it is -5"), Some(-5));
    assert_eq!(last_integer("3.75"), Some(75));
    assert_eq!(last_integer("none"), None);
    let mut v = MathVerifier::last_integer();
    assert_eq!(v.config().mode, MathMode::LastInteger);
    let samples = [
        sample("12 + 30 = 42", Some("42")),
        sample("\\boxed{42} is wrong, 41", Some("42")),
        sample("42.0", Some("42")),
        sample("forty-two", Some("42")),
        sample("1,042", Some("1042")),
    ];
    let values: Vec<Option<f64>> = v.score(&samples).unwrap().into_iter().map(|s| s.value).collect();
    assert_eq!(values, [Some(1.0), Some(0.0), Some(0.0), Some(0.0), Some(0.0)]);
    let err = v.score(&[sample("1", Some("1.5"))]).unwrap_err().to_string();
    assert!(err.contains("`1.5` is not an integer"), "{err}");
}
