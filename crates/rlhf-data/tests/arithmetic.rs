//! The arithmetic generator: deterministic per seed, right answers, wrong answers never right,
//! the verifiers agree with how each response was made, and every written file loads back.

mod common;

use common::scratch;
use rlhf_data::arithmetic::{Op, ARITHMETIC_FILES};
use rlhf_data::{
    extract_final_answer, generate_arithmetic, is_correct, is_well_formatted, load_preferences, load_prompts, load_sft,
    tiny, write_arithmetic, LoadOptions, TextOrMessages,
};
use std::collections::HashSet;

#[test]
fn same_seed_same_set_other_seed_other_set() {
    let a = generate_arithmetic(200, 7).unwrap();
    assert_eq!(a, generate_arithmetic(200, 7).unwrap());
    assert_ne!(a.problems, generate_arithmetic(200, 8).unwrap().problems);
    assert_eq!((a.train().len(), a.eval().len()), (180, 20));
}

#[test]
fn answers_verifiers_and_distinct_prompts() {
    let set = generate_arithmetic(2000, 1).unwrap();
    let questions: HashSet<&str> = set.problems.iter().map(|p| p.question.as_str()).collect();
    assert_eq!(questions.len(), 2000, "prompts are unique, so eval problems never appear in training");
    let words = set.problems.iter().filter(|p| !p.question.starts_with("What is")).count();
    assert!((400..800).contains(&words), "about 30% word problems, got {words}");
    for op in Op::ALL {
        assert!(set.problems.iter().any(|p| p.op == op));
    }
    let styles: HashSet<&str> = set.problems.iter().filter_map(|p| p.correct_unformatted.split(' ').next()).collect();
    assert_eq!(styles.len(), 6, "every badly formatted style is used: {styles:?}");
    let same = set.problems.iter().filter(|p| p.correct_unformatted[..8] == p.wrong_unformatted[..8]).count();
    assert!(same < 600, "styles of the two badly formatted responses are drawn independently ({same} equal)");
    for p in &set.problems {
        let truth = match p.op {
            Op::Add => p.a + p.b,
            Op::Sub => p.a - p.b,
            Op::Mul => p.a * p.b,
        };
        assert_eq!(p.answer, truth, "{p:?}");
        assert!(p.question.contains(&p.a.to_string()) && p.question.contains(&p.b.to_string()), "{p:?}");
        assert_ne!(p.wrong_answer, p.answer, "{p:?}");
        let answer = p.answer.to_string();
        assert_eq!(
            p.correct_formatted,
            format!("{} {} {} = {answer}.\nThe answer is {answer}.", p.a, p.op.symbol(), p.b)
        );
        assert!(is_well_formatted(&p.correct_formatted) && is_correct(&p.correct_formatted, &answer));
        assert!(is_well_formatted(&p.wrong_formatted) && !is_correct(&p.wrong_formatted, &answer), "{p:?}");
        assert_eq!(extract_final_answer(&p.wrong_formatted), Some(p.wrong_answer));
        for unformatted in [&p.correct_unformatted, &p.wrong_unformatted] {
            assert!(!is_well_formatted(unformatted), "{unformatted:?}");
        }
        // Badly formatted texts keep the number readable, unless it is spelled out.
        if p.correct_unformatted.bytes().any(|b| b.is_ascii_digit()) {
            assert!(is_correct(&p.correct_unformatted, &answer), "{:?}", p.correct_unformatted);
        }
        let mut order = p.ranking_order;
        order.sort_unstable();
        assert_eq!(order, [0, 1, 2, 3]);
    }
}

#[test]
fn too_many_problems_is_an_error() {
    assert!(generate_arithmetic(1_000_000, 0).is_err());
}

#[test]
fn every_written_file_loads_back() {
    let dir = scratch("arithmetic-files");
    let set = write_arithmetic(&dir, 50, 3).unwrap();
    let t = tiny::tokenizer();
    let o = LoadOptions::default();
    for (suffix, problems) in [("", set.train()), ("_eval", set.eval())] {
        let file = |name: &str| dir.join(format!("{name}{suffix}.jsonl"));
        for name in ARITHMETIC_FILES {
            assert!(file(name).exists());
        }
        let sft = load_sft(&file("sft"), &t, &o).unwrap();
        assert_eq!((sft.examples.len(), sft.skipped.len()), (problems.len(), 0));
        let e = &sft.examples[0];
        let learned: Vec<u32> =
            e.input_ids.iter().zip(&e.loss_mask).filter(|(_, &m)| m == 1).map(|(&i, _)| i).collect();
        assert_eq!(t.decode(&learned, false).unwrap(), format!("{}<|im_end|>", problems[0].correct_formatted));

        for name in ["prefs_format", "prefs_correctness"] {
            let groups = load_preferences(&file(name), &t, &o).unwrap().examples;
            assert_eq!(groups.len(), problems.len());
            let (chosen, rejected) = &groups[0].pairs[0];
            let chosen = t.decode(chosen, true).unwrap();
            assert!(is_well_formatted(&chosen) && is_correct(&chosen, &problems[0].answer.to_string()), "{chosen:?}");
            let rejected = t.decode(rejected, true).unwrap();
            let expected =
                if name == "prefs_format" { &problems[0].correct_unformatted } else { &problems[0].wrong_formatted };
            assert_eq!(rejected.trim_end(), expected);
        }

        let rankings = load_preferences(&file("rankings"), &t, &o).unwrap().examples;
        assert_eq!(rankings.len(), problems.len());
        let g = &rankings[0];
        assert_eq!(g.pairs.len(), 6);
        let best_first = problems[0].responses_best_first();
        let decoded = |ids: &[u32]| t.decode(ids, true).unwrap().trim_end().to_string();
        // Pairs run (0,1) (0,2) (0,3) (1,2) (1,3) (2,3) in rank order.
        assert_eq!(
            (decoded(&g.pairs[0].0), decoded(&g.pairs[0].1)),
            (best_first[0].to_string(), best_first[1].to_string())
        );
        assert_eq!(
            (decoded(&g.pairs[5].0), decoded(&g.pairs[5].1)),
            (best_first[2].to_string(), best_first[3].to_string())
        );

        let prompts = load_prompts(&file("prompts"), &t, &o).unwrap().examples;
        assert_eq!(prompts[0].answer, Some(problems[0].answer.to_string()));
        match &prompts[0].prompt {
            TextOrMessages::Messages(m) => assert_eq!(m[0].content, problems[0].question),
            other => panic!("expected messages, got {other:?}"),
        }
    }
}
