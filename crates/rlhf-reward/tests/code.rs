//! Code extraction from responses and how the program is assembled from prompt and response.
#![cfg(target_os = "linux")]

use rlhf_reward::{extract_code, CodeAssembly, CodeConfig, CodeVerifier, RewardSource, Sample};

#[test]
fn code_comes_from_the_first_python_block() {
    assert_eq!(extract_code("Sure:\n```python\nx = 1\n```\nand\n```python\ny = 2\n```"), "x = 1\n");
    assert_eq!(extract_code("```text\nnot code\n```\n```py\nz = 3\n```"), "z = 3\n");
    assert_eq!(extract_code("```\nplain = 1\n```"), "plain = 1\n");
    assert_eq!(extract_code("```python\ntruncated = 1\n"), "truncated = 1\n");
    assert_eq!(extract_code("    return x + 1\n"), "    return x + 1\n");
}

#[test]
fn assembly_modes() {
    let prompt = "def inc(x):\n    \"\"\"Adds one.\"\"\"\n";
    let tests = "assert inc(1) == 2\n";
    let body = "    return x + 1\n";
    let full = "```python\ndef inc(x):\n    return x + 1\n```";
    let s = |response| Sample {
        prompt,
        response,
        prompt_ids: &[],
        response_ids: &[],
        answer: None,
        tests: Some(tests),
        finished: true,
    };
    let run = |assembly| {
        let mut v = CodeVerifier::new(CodeConfig { assembly, ..CodeConfig::default() }).unwrap();
        v.score(&[s(body), s(full)]).unwrap().into_iter().map(|s| s.value.unwrap()).collect::<Vec<_>>()
    };
    // A docstring-only def followed by the full one is valid Python: the second wins.
    assert_eq!(run(CodeAssembly::PromptPlusResponse), [1.0, 1.0]);
    assert_eq!(run(CodeAssembly::Response), [0.0, 1.0]);
    assert_eq!(run(CodeAssembly::Auto), [1.0, 1.0]);
}
