//! Reward sources as configs name them (`[[rewards]]` tables, `eval.reward`): a tagged enum with
//! the settings each kind takes and no others, and the one builder every command uses.

use crate::format::{MatchMode, RegexReward, Target};
use crate::math::MathVerifier;
use crate::{Ensemble, EnsembleMode, EquationSteps, Result, RewardError, RewardModel, RewardSource};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::PathBuf;

/// The kinds, for messages that list them.
pub const KINDS: &str = "math | last_integer | format | regex | code | reward_model | ensemble | steps";

/// One source and its place in the weighted sum. In a config, `weight` and `name` sit beside
/// `kind` and the kind's own settings; a setting the kind does not take is an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>", into = "Map<String, Value>")]
pub struct RewardSpec {
    pub source: SourceSpec,
    pub weight: f64,
    /// Name in metrics (`reward/<name>`); empty = the kind's name.
    pub name: String,
}

/// Kinds without settings are empty struct variants: serde checks unknown fields only there.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    /// Final answer (`\boxed{}`, `####`, "The answer is", last number) equals `answer`.
    Math {},
    /// The last integer of the reply equals `answer`.
    LastInteger {},
    /// The last line is exactly `The answer is N.` (the arithmetic set's format).
    Format {},
    /// `pattern` matches the whole response (`target = "last_line"`: its last line).
    Regex {
        #[serde(default)]
        pattern: String,
        #[serde(default)]
        target: Target,
    },
    /// Python code in the response passes the prompt's `tests` in a sandbox.
    Code {},
    /// A trained reward model folder (`path`), normalised by its saved statistics.
    RewardModel {
        #[serde(default)]
        path: String,
        #[serde(default = "yes")]
        normalize: bool,
    },
    /// Several reward models (`paths`) reduced by `mode`: min, mean, or {mean_minus_std = k}.
    Ensemble {
        #[serde(default)]
        paths: Vec<String>,
        #[serde(default = "mean")]
        mode: EnsembleMode,
        #[serde(default = "yes")]
        normalize: bool,
    },
    /// Process supervision: each line's `a op b = c` is a step, rewarded 1 if it holds (with
    /// `grpo.process_supervision = true` the steps become per-token advantages).
    Steps {},
}

fn yes() -> bool {
    true
}

fn mean() -> EnsembleMode {
    EnsembleMode::Mean
}

/// What building needs from the caller: where a model name points (folders, `default`, hub
/// ids are the application's business), and where warnings go (this crate does not print).
pub trait BuildContext {
    fn resolve_model(&self, name: &str) -> Result<PathBuf>;
    fn warn(&self, message: &str);
}

impl Default for RewardSpec {
    fn default() -> Self {
        Self::of(SourceSpec::Math {})
    }
}

impl RewardSpec {
    /// `source` with weight 1 under its kind's name.
    pub fn of(source: SourceSpec) -> Self {
        Self { source, weight: 1.0, name: String::new() }
    }

    /// A reward model at `path`, normalised.
    pub fn reward_model(path: &str) -> Self {
        Self::of(SourceSpec::RewardModel { path: path.into(), normalize: true })
    }

    /// Builds the source; `pad_id` is the policy tokenizer's (reward models score its ids).
    pub fn build(&self, pad_id: u32, ctx: &dyn BuildContext) -> Result<Box<dyn RewardSource>> {
        let named = |default: &str| if self.name.is_empty() { default.to_string() } else { self.name.clone() };
        let needs = |what: &str| Err(RewardError::Config(format!("rewards: {what}")));
        Ok(match &self.source {
            SourceSpec::Math {} => Box::new(MathVerifier::new(Default::default()).with_name(named("math"))),
            SourceSpec::LastInteger {} => Box::new(MathVerifier::last_integer().with_name(named("last_integer"))),
            SourceSpec::Format {} => Box::new(
                RegexReward::new(r"The answer is -?\d+\.", MatchMode::Full)?
                    .on(Target::LastLine)
                    .with_name(named("format")),
            ),
            SourceSpec::Regex { pattern, target } => {
                if pattern.is_empty() {
                    return needs("kind = \"regex\" needs `pattern`");
                }
                Box::new(RegexReward::new(pattern, MatchMode::Full)?.on(*target).with_name(named("regex")))
            }
            SourceSpec::Code {} => code_source(named("code"), ctx)?,
            SourceSpec::RewardModel { path, normalize } => {
                if path.is_empty() {
                    return needs("kind = \"reward_model\" needs `path` (a folder written by `rlhf reward`)");
                }
                Box::new(load_reward_model(path, *normalize, pad_id, ctx)?.with_name(named("rm")))
            }
            SourceSpec::Ensemble { paths, mode, normalize } => {
                if paths.len() < 2 {
                    return needs("kind = \"ensemble\" needs `paths` with at least two reward-model folders");
                }
                let members = paths
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let rm = load_reward_model(p, *normalize, pad_id, ctx)?.with_name(format!("rm{i}"));
                        Ok(Box::new(rm) as Box<dyn RewardSource>)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Box::new(Ensemble::new(members, *mode)?.with_name(named("ensemble")))
            }
            SourceSpec::Steps {} => Box::new(EquationSteps::default().with_name(named("steps"))),
        })
    }
}

/// Builds every `(source, weight)`; an empty list is an error naming the kinds.
pub fn build_all(
    specs: &[RewardSpec],
    pad_id: u32,
    ctx: &dyn BuildContext,
) -> Result<Vec<(Box<dyn RewardSource>, f64)>> {
    if specs.is_empty() {
        return Err(RewardError::Config(format!("no reward: add a [[rewards]] table (kind = {KINDS})")));
    }
    specs.iter().map(|s| Ok((s.build(pad_id, ctx)?, s.weight))).collect()
}

fn load_reward_model(path: &str, normalize: bool, pad_id: u32, ctx: &dyn BuildContext) -> Result<RewardModel> {
    let dir = ctx.resolve_model(path)?;
    let rm = RewardModel::load(&dir, pad_id, DType::F32, &Device::Cpu)
        .map_err(|e| RewardError::Config(format!("loading reward model {path}: {e}")))?;
    rm.normalized(normalize)
}

#[cfg(target_os = "linux")]
fn code_source(name: String, ctx: &dyn BuildContext) -> Result<Box<dyn RewardSource>> {
    let verifier = crate::code::CodeVerifier::new(Default::default())
        .map_err(|e| RewardError::Sandbox(format!("starting the code sandbox: {e}")))?;
    let sandbox = verifier.sandbox();
    let missing = sandbox.protections().missing(sandbox.config());
    if !missing.is_empty() {
        ctx.warn(&format!("the code sandbox runs without: {} (see the README's threat model)", missing.join(", ")));
    }
    Ok(Box::new(verifier.with_name(name)))
}

#[cfg(not(target_os = "linux"))]
fn code_source(_: String, _: &dyn BuildContext) -> Result<Box<dyn RewardSource>> {
    Err(RewardError::Config("rewards: kind = \"code\" runs its sandbox on Linux only".into()))
}

impl TryFrom<Map<String, Value>> for RewardSpec {
    type Error = String;

    /// `weight` and `name` first, then the kind and its settings (a missing `kind` is `math`).
    fn try_from(mut table: Map<String, Value>) -> std::result::Result<Self, String> {
        let weight = match table.remove("weight") {
            None => 1.0,
            Some(v) => {
                v.as_f64().filter(|w| w.is_finite()).ok_or(format!("rewards: `weight` must be a number, got {v}"))?
            }
        };
        let name = match table.remove("name") {
            None => String::new(),
            Some(Value::String(s)) => s,
            Some(v) => return Err(format!("rewards: `name` must be a string, got {v}")),
        };
        table.entry("kind").or_insert_with(|| Value::String("math".into()));
        let source =
            serde_json::from_value(Value::Object(table)).map_err(|e| format!("rewards: {e} (kind = {KINDS})"))?;
        Ok(Self { source, weight, name })
    }
}

impl From<RewardSpec> for Map<String, Value> {
    fn from(spec: RewardSpec) -> Self {
        let mut table = match serde_json::to_value(&spec.source) {
            Ok(Value::Object(t)) => t,
            _ => Map::new(), // a tagged enum of plain fields always serialises to a table
        };
        table.insert("weight".into(), spec.weight.into());
        table.insert("name".into(), spec.name.into());
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> std::result::Result<RewardSpec, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn each_kind_takes_its_own_settings_and_no_others() {
        let spec = parse(r#"{"kind": "regex", "pattern": "a+", "target": "last_line", "weight": 0.5}"#).unwrap();
        assert_eq!(spec.source, SourceSpec::Regex { pattern: "a+".into(), target: Target::LastLine });
        assert_eq!((spec.weight, spec.name.as_str()), (0.5, ""));
        let err = parse(r#"{"kind": "math", "pattern": "a+"}"#).unwrap_err();
        assert!(err.contains("unknown field `pattern`"), "{err}");
        let err = parse(r#"{"kind": "regex", "patern": "a+"}"#).unwrap_err();
        assert!(err.contains("unknown field `patern`") && err.contains("`pattern`"), "{err}");
        let err = parse(r#"{"kind": "judge"}"#).unwrap_err();
        assert!(err.contains("unknown variant `judge`") && err.contains("reward_model"), "{err}");
        let err = parse(r#"{"kind": "math", "weight": "high"}"#).unwrap_err();
        assert!(err.contains("`weight` must be a number"), "{err}");
    }

    #[test]
    fn defaults_fill_what_a_table_leaves_out() {
        assert_eq!(parse("{}").unwrap(), RewardSpec::default(), "no kind: math, weight 1");
        let rm = parse(r#"{"kind": "reward_model", "path": "runs/rm/final"}"#).unwrap();
        assert_eq!(rm, RewardSpec::reward_model("runs/rm/final"));
        let ens = parse(r#"{"kind": "ensemble", "paths": ["a", "b"], "mode": {"mean_minus_std": 0.5}}"#).unwrap();
        let SourceSpec::Ensemble { mode, normalize, .. } = ens.source else { panic!("{ens:?}") };
        assert_eq!((mode, normalize), (EnsembleMode::MeanMinusStd(0.5), true));
    }

    #[test]
    fn a_written_spec_reads_back_equal() {
        for spec in [
            RewardSpec { weight: 0.25, name: "fmt".into(), ..RewardSpec::of(SourceSpec::Format {}) },
            RewardSpec::of(SourceSpec::Regex { pattern: "x".into(), target: Target::Response }),
            RewardSpec::of(SourceSpec::Ensemble { paths: vec!["a".into()], mode: EnsembleMode::Min, normalize: false }),
        ] {
            let text = serde_json::to_string(&spec).unwrap();
            assert_eq!(parse(&text).unwrap(), spec, "{text}");
        }
    }

    struct NoModels;

    impl BuildContext for NoModels {
        fn resolve_model(&self, name: &str) -> Result<PathBuf> {
            Err(RewardError::Config(format!("{name}: no such folder")))
        }
        fn warn(&self, _: &str) {}
    }

    #[test]
    fn building_names_what_is_missing() {
        let err = |spec: RewardSpec| spec.build(0, &NoModels).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(RewardSpec::of(SourceSpec::Regex { pattern: String::new(), target: Target::Response }))
            .contains("needs `pattern`"));
        assert!(err(RewardSpec::reward_model("")).contains("needs `path`"));
        assert!(err(RewardSpec::reward_model("nowhere")).contains("nowhere: no such folder"));
        let one = SourceSpec::Ensemble { paths: vec!["a".into()], mode: EnsembleMode::Mean, normalize: true };
        assert!(err(RewardSpec::of(one)).contains("at least two"));
        let built = RewardSpec { name: "answer".into(), ..RewardSpec::of(SourceSpec::LastInteger {}) };
        assert_eq!(built.build(0, &NoModels).unwrap().name(), "answer");
        assert!(build_all(&[], 0, &NoModels).err().unwrap().to_string().contains("kind = math | last_integer"));
    }
}
