//! Verifier for code: the response's Python runs in the [`Sandbox`] and the sample's `tests` run
//! against it (in a process of their own); reward 1 if every test line ran without an exception,
//! else 0, with the outcome as note.

use crate::error::Result;
use crate::sandbox::{Outcome, Sandbox, SandboxConfig};
use crate::source::{RewardSource, Sample, Score};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// What program is run before the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeAssembly {
    /// The response's code alone (chat models that write the whole function).
    #[default]
    Response,
    /// `prompt + response`: HumanEval-style completion, where the prompt is the function's
    /// signature and docstring. Only meaningful for raw prompts (no chat template).
    PromptPlusResponse,
    /// `Response` when the code defines a top-level function or class, else `PromptPlusResponse`.
    Auto,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodeConfig {
    pub assembly: CodeAssembly,
    pub passed: f64,
    pub failed: f64,
    /// Programs run at once (each in its own process).
    pub threads: usize,
    pub sandbox: SandboxConfig,
}

impl Default for CodeConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            assembly: CodeAssembly::Response,
            passed: 1.0,
            failed: 0.0,
            threads: cores.min(4),
            sandbox: Default::default(),
        }
    }
}

/// The code of a response: its first ```python (or ```py) block, else its first fenced block,
/// else the text itself. An unclosed fence (a truncated response) runs to the end.
pub fn extract_code(response: &str) -> &str {
    let mut first_any = None;
    let mut rest = response;
    while let Some(i) = rest.find("```") {
        let after = &rest[i + 3..];
        let (tag, body) = after.split_once('\n').unwrap_or((after, ""));
        let code = body.find("```").map_or(body, |end| &body[..end]);
        let tag = tag.trim().to_ascii_lowercase();
        if tag == "python" || tag == "py" || tag == "python3" {
            return code;
        }
        first_any.get_or_insert(code);
        match body.find("```") {
            Some(end) => rest = &body[end + 3..],
            None => break,
        }
    }
    first_any.unwrap_or(response)
}

fn defines_something(code: &str) -> bool {
    code.lines().any(|l| l.starts_with("def ") || l.starts_with("class ") || l.starts_with("async def "))
}

/// Runs code samples' tests in the sandbox, a few at a time; `value: None` without tests.
pub struct CodeVerifier {
    name: String,
    cfg: CodeConfig,
    sandbox: Sandbox,
}

impl CodeVerifier {
    pub fn new(cfg: CodeConfig) -> Result<Self> {
        let sandbox = Sandbox::new(cfg.sandbox.clone())?;
        Ok(Self { name: "code".into(), cfg, sandbox })
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// The program that runs before the tests.
    pub fn program(&self, sample: &Sample<'_>) -> String {
        let code = extract_code(sample.response);
        let with_prompt = match self.cfg.assembly {
            CodeAssembly::Response => false,
            CodeAssembly::PromptPlusResponse => true,
            CodeAssembly::Auto => !defines_something(code),
        };
        if with_prompt {
            format!("{}{code}", sample.prompt)
        } else {
            code.to_string()
        }
    }

    /// The outcome of every sample with tests (`None` for the others), in order.
    pub fn outcomes(&self, samples: &[Sample<'_>]) -> Result<Vec<Option<Outcome>>> {
        let jobs: Vec<(usize, String, &str)> =
            samples.iter().enumerate().filter_map(|(i, s)| s.tests.map(|t| (i, self.program(s), t))).collect();
        let results: Mutex<Vec<Option<Result<Outcome>>>> = Mutex::new((0..samples.len()).map(|_| None).collect());
        let next = AtomicUsize::new(0);
        let threads = self.cfg.threads.clamp(1, jobs.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    while let Some((i, code, tests)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let outcome = self.sandbox.check(code, tests);
                        results.lock().unwrap_or_else(|p| p.into_inner())[*i] = Some(outcome);
                    }
                });
            }
        });
        results.into_inner().unwrap_or_else(|p| p.into_inner()).into_iter().map(Option::transpose).collect()
    }
}

impl RewardSource for CodeVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<Score>> {
        Ok(self
            .outcomes(samples)?
            .into_iter()
            .map(|o| match o {
                None => Score::default(),
                Some(o) => Score {
                    value: Some(if o.passed() { self.cfg.passed } else { self.cfg.failed }),
                    steps: Vec::new(),
                    note: Some(o.summary()),
                },
            })
            .collect())
    }
}
