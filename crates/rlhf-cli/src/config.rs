//! Command configuration: `T::default()`, then `--config FILE.toml` over it, then each
//! `--set a.b.c=value` in order, then deserialised into `T`.
//!
//! Defaults live in one place, the config struct's `Default`; the file and `--set` only override.
//!
//! Unknown keys are found by serde itself, so the check is exact whatever the struct looks like
//! (`Option` fields that are `None` by default, maps, `deny_unknown_fields`): keys serde ignores are
//! reported through `serde_ignored`, and a `deny_unknown_fields` rejection is mapped back to its full
//! path with `serde_path_to_error`. The serialised default table is only used to suggest the nearest
//! existing key, so a field that is `None` by default is accepted but never suggested.
//!
//! Round trips through [`to_toml_string`] need `Option` fields to default to `None` (TOML cannot
//! write `None`, so an explicit `None` over a `Some` default would load back as the default).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;
use serde::Serialize;
use toml::{Table, Value};

/// Where a key's value came from, for error messages.
#[derive(Clone, Debug)]
enum Origin {
    File(String),
    Set,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(name) => f.write_str(name),
            Origin::Set => f.write_str("--set"),
        }
    }
}

/// A mistake in how the command was called or configured (a bad flag value, an unknown key, a
/// setting out of range): the process exits with status 2, as for an unknown flag, instead of
/// the 1 of a failure while running.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `message` as a [`UsageError`].
pub fn usage(message: impl fmt::Display) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.to_string()))
}

/// `--config FILE` and `--set KEY=VALUE`: how every command that has settings takes them. A
/// command's own flags are shortcuts for keys of the same name (`--limit 50` is `--set limit=50`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// TOML file of the command's settings (keys not given keep their defaults).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Override one key, e.g. `--set limit=50` (repeatable; wins over --config and the flags).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl ConfigArgs {
    /// The settings: defaults, then `--config`, then the flags that were given (`flags`
    /// serialises to the keys they set; a flag left out is `None` and serialises to nothing),
    /// then `--set`. Every error is a [`UsageError`].
    pub fn load<T: Serialize + DeserializeOwned + Default>(&self, flags: &impl Serialize) -> anyhow::Result<T> {
        let mut sets = flag_sets(flags).map_err(|e| usage(format!("{e:#}")))?;
        sets.extend(self.sets.iter().cloned());
        load_config(self.config.as_deref(), &sets)
    }
}

/// A command's arguments: `--config` / `--set` and its flags `F`, each flag a shortcut for the
/// key of the same name.
#[derive(clap::Args)]
pub struct CommandArgs<F: clap::Args> {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub flags: F,
}

impl<F: clap::Args + Serialize> CommandArgs<F> {
    /// The command's settings (see [`ConfigArgs::load`]).
    pub fn load<T: Serialize + DeserializeOwned + Default>(&self) -> anyhow::Result<T> {
        self.config.load(&self.flags)
    }
}

/// A usage error when a required setting is `missing`: it names the flag and the key.
pub fn require(missing: bool, flag: &str, key: &str) -> anyhow::Result<()> {
    if missing {
        return Err(usage(format!("give {flag} (or `{key}` in the config)")));
    }
    Ok(())
}

/// `flags` as `key=value` overrides, one per field that serialises (nested tables as dotted keys).
fn flag_sets(flags: &impl Serialize) -> anyhow::Result<Vec<String>> {
    fn walk(table: &Table, prefix: &str, out: &mut Vec<String>) {
        for (key, value) in table {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            match value {
                Value::Table(inner) => walk(inner, &path, out),
                value => out.push(format!("{path}={value}")),
            }
        }
    }
    let Value::Table(table) = Value::try_from(flags).context("reading the flags")? else {
        bail!("the flags must serialise to a table");
    };
    let mut out = Vec::new();
    walk(&table, "", &mut out);
    Ok(out)
}

/// Loads `T` from its defaults, an optional TOML file and `key=value` overrides (see the module
/// docs); every error is a [`UsageError`].
pub fn load_config<T: Serialize + DeserializeOwned + Default>(
    file: Option<&Path>,
    sets: &[String],
) -> anyhow::Result<T> {
    load_config_over(T::default(), file, sets)
}

/// As [`load_config`], over `base` instead of the defaults: a caller that fixes some settings
/// itself (as `iterate` does for its stages) applies the user's overrides after them.
pub fn load_config_over<T: Serialize + DeserializeOwned>(
    base: T,
    file: Option<&Path>,
    sets: &[String],
) -> anyhow::Result<T> {
    load_config_inner(base, file, sets).map_err(|e| usage(format!("{e:#}")))
}

fn load_config_inner<T: Serialize + DeserializeOwned>(
    base: T,
    file: Option<&Path>,
    sets: &[String],
) -> anyhow::Result<T> {
    let defaults = match Value::try_from(base).context("serialising the default configuration")? {
        Value::Table(table) => table,
        other => bail!("a configuration must serialise to a table, not a {}", other.type_str()),
    };
    let mut merged = defaults.clone();
    let mut origins = HashMap::new();

    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        let table: Table = text.parse().with_context(|| format!("parsing config file {}", path.display()))?;
        merge(&mut merged, table, "", &Origin::File(path.display().to_string()), &mut origins);
    }
    for set in sets {
        let (key, raw) = set.split_once('=').ok_or_else(|| anyhow!("--set expects key=value, got `{set}`"))?;
        let segments: Vec<&str> = key.trim().split('.').collect();
        if segments.iter().any(|s| s.is_empty()) {
            bail!("--set `{set}`: the key must be dotted names like `a.b.c`");
        }
        let overlay = segments.iter().rev().fold(parse_set_value(raw), |value, segment| {
            Value::Table(Table::from_iter([(segment.to_string(), value)]))
        });
        let Value::Table(overlay) = overlay else { unreachable!("at least one key segment") };
        merge(&mut merged, overlay, "", &Origin::Set, &mut origins);
    }

    let mut ignored = Vec::new();
    let result: Result<T, _> = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(
        Value::Table(merged),
        &mut |path: serde_ignored::Path| ignored.push(ignored_key(&path)),
    ));
    if let Some(key) = ignored.first() {
        return Err(unknown_key(key, &origins, &defaults));
    }
    result.map_err(|e| {
        let key = error_key(e.path());
        let message = e.inner().to_string();
        let message = message.trim();
        // A `deny_unknown_fields` rejection: the path already ends with the offending key, but only
        // because serde_path_to_error records map keys before they are checked; append it otherwise.
        if let Some(field) = message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next()) {
            let full = match key.rsplit('.').next() {
                Some(last) if last == field => key.clone(),
                _ if key.is_empty() => field.to_string(),
                _ => format!("{key}.{field}"),
            };
            return unknown_key(&full, &origins, &defaults);
        }
        match origin_of(&key, &origins) {
            Some(origin) => anyhow!("invalid value for `{key}` in {origin}: {message}"),
            None => anyhow!("invalid value for `{key}`: {message}"),
        }
    })
}

/// The configuration as TOML, e.g. the effective `config.toml` written into a run folder; it loads back
/// to the same value with [`load_config`].
pub fn to_toml_string<T: Serialize>(config: &T) -> anyhow::Result<String> {
    toml::to_string_pretty(config).context("writing the configuration as TOML")
}

/// Merges `overlay` into `base` key by key (tables recursively), recording each overridden path's origin.
fn merge(base: &mut Table, overlay: Table, prefix: &str, origin: &Origin, origins: &mut HashMap<String, Origin>) {
    for (key, value) in overlay {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        origins.insert(path.clone(), origin.clone());
        match value {
            Value::Table(overlay_table) => {
                if !matches!(base.get(&key), Some(Value::Table(_))) {
                    base.insert(key.clone(), Value::Table(Table::new()));
                }
                if let Some(Value::Table(base_table)) = base.get_mut(&key) {
                    merge(base_table, overlay_table, &path, origin, origins);
                }
            }
            value => {
                base.insert(key, value);
            }
        }
    }
}

/// A `--set` value is a TOML value (`3`, `2e-5`, `true`, `"x"`, `[1, 2]`); anything else, such as a bare
/// word like `cosine`, is taken as a string. Dates are kept as strings since no config field is a date.
fn parse_set_value(raw: &str) -> Value {
    let raw = raw.trim();
    match format!("value = {raw}").parse::<Table>() {
        Ok(mut table) => match table.remove("value") {
            Some(Value::Datetime(_)) | None => Value::String(raw.to_string()),
            Some(value) => value,
        },
        Err(_) => Value::String(raw.to_string()),
    }
}

fn ignored_key(path: &serde_ignored::Path) -> String {
    fn push(path: &serde_ignored::Path, out: &mut Vec<String>) {
        use serde_ignored::Path as P;
        match path {
            P::Root => {}
            P::Seq { parent, index } => {
                push(parent, out);
                out.push(index.to_string());
            }
            P::Map { parent, key } => {
                push(parent, out);
                out.push(key.clone());
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => push(parent, out),
        }
    }
    let mut segments = Vec::new();
    push(path, &mut segments);
    segments.join(".")
}

fn error_key(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let segments: Vec<String> = path
        .iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } | Segment::Enum { variant: key } => Some(key.clone()),
            Segment::Unknown => None,
        })
        .collect();
    segments.join(".")
}

/// The origin of `key`, or of its nearest parent that has one (array elements have none of their own).
fn origin_of<'a>(key: &str, origins: &'a HashMap<String, Origin>) -> Option<&'a Origin> {
    let mut key = key;
    loop {
        if let Some(origin) = origins.get(key) {
            return Some(origin);
        }
        key = &key[..key.rfind('.')?];
    }
}

fn unknown_key(key: &str, origins: &HashMap<String, Origin>, defaults: &Table) -> anyhow::Error {
    let place = origin_of(key, origins).map(|o| format!(" in {o}")).unwrap_or_default();
    let mut known = Vec::new();
    collect_keys(defaults, "", &mut known);
    match suggest(key, &known) {
        Some(best) => anyhow!("unknown key `{key}`{place}; did you mean `{best}`?"),
        None => anyhow!("unknown key `{key}`{place}"),
    }
}

fn collect_keys(table: &Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        if let Value::Table(inner) = value {
            collect_keys(inner, &path, out);
        }
        out.push(path);
    }
}

/// The nearest known key: the same last name under another table (`lr` → `optim.lr`), else the closest
/// full path by edit distance, if within a third of the key's length (so unrelated keys get no suggestion).
fn suggest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    let last = key.rsplit('.').next().unwrap_or(key);
    if let Some(same_name) = known.iter().find(|k| k.rsplit('.').next() == Some(last)) {
        return Some(same_name);
    }
    let max_distance = (key.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, _)| *d <= max_distance)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

/// Damerau–Levenshtein distance (optimal string alignment: insertions, deletions, substitutions and
/// transpositions of neighbours, each costing 1).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::path::PathBuf;

    #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum Schedule {
        Constant,
        Cosine,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(default)]
    struct Optim {
        lr: f64,
        betas: Vec<f64>,
    }

    impl Default for Optim {
        fn default() -> Self {
            Self { lr: 1e-5, betas: vec![0.9, 0.999] }
        }
    }

    /// Strict like the library configs (e.g. `DpoLossConfig`).
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Dpo {
        beta: f64,
    }

    impl Default for Dpo {
        fn default() -> Self {
            Self { beta: 0.1 }
        }
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(default)]
    struct TrainConfig {
        learning_rate: f64,
        epochs: u32,
        schedule: Schedule,
        output_dir: String,
        bf16: bool,
        /// `None` by default, so absent from the default table.
        max_steps: Option<u64>,
        optim: Optim,
        dpo: Dpo,
    }

    impl Default for TrainConfig {
        fn default() -> Self {
            Self {
                learning_rate: 2e-5,
                epochs: 1,
                schedule: Schedule::Constant,
                output_dir: "runs/sft".into(),
                bf16: false,
                max_steps: None,
                optim: Optim::default(),
                dpo: Dpo::default(),
            }
        }
    }

    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("rlhf-config-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("train.toml");
            std::fs::write(&path, text).unwrap();
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    fn sets(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn load(file: Option<&TempFile>, set: &[&str]) -> anyhow::Result<TrainConfig> {
        load_config(file.map(|f| f.0.as_path()), &sets(set))
    }

    #[test]
    fn no_file_no_sets_gives_defaults() {
        assert_eq!(load(None, &[]).unwrap(), TrainConfig::default());
    }

    #[test]
    fn file_overrides_only_its_keys_and_merges_nested_tables() {
        let file = TempFile::new(
            "override",
            "learning_rate = 1e-4\nschedule = \"cosine\"\nmax_steps = 50\n[optim]\nbetas = [0.9, 0.95]\n",
        );
        let config = load(Some(&file), &[]).unwrap();
        let want = TrainConfig {
            learning_rate: 1e-4,
            schedule: Schedule::Cosine,
            max_steps: Some(50),
            optim: Optim { lr: 1e-5, betas: vec![0.9, 0.95] },
            ..TrainConfig::default()
        };
        assert_eq!(config, want);
    }

    #[test]
    fn sets_take_precedence_over_the_file_and_parse_as_toml() {
        let file = TempFile::new("precedence", "epochs = 3\n[optim]\nlr = 0.5\n");
        let config = load(
            Some(&file),
            &["optim.lr=3e-4", "bf16=true", "output_dir=runs/dpo-1", "optim.betas=[0.8, 0.9]", "schedule=cosine"],
        )
        .unwrap();
        assert_eq!(config.epochs, 3, "file value kept where no --set");
        assert_eq!(config.optim, Optim { lr: 3e-4, betas: vec![0.8, 0.9] });
        assert!(config.bf16);
        assert_eq!(config.output_dir, "runs/dpo-1", "bare words are strings");
        assert_eq!(config.schedule, Schedule::Cosine);
        // Later --set wins over earlier.
        assert_eq!(load(None, &["epochs=2", "epochs=5"]).unwrap().epochs, 5);
        // Integers are accepted for floats.
        assert_eq!(load(None, &["learning_rate=1"]).unwrap().learning_rate, 1.0);
    }

    #[test]
    fn unknown_key_in_file_names_file_and_suggests() {
        let file = TempFile::new("unknown", "lerning_rate = 1e-4\n");
        let err = load(Some(&file), &[]).unwrap_err().to_string();
        assert!(err.starts_with("unknown key `lerning_rate` in "), "{err}");
        assert!(err.contains("train.toml; did you mean `learning_rate`?"), "{err}");

        let file = TempFile::new("unknown-table", "[optimm]\nlr = 1.0\n");
        let err = load(Some(&file), &[]).unwrap_err().to_string();
        assert!(err.contains("unknown key `optimm`") && err.ends_with("did you mean `optim`?"), "{err}");
    }

    #[test]
    fn unknown_key_in_set_names_set_and_suggests() {
        let err = load(None, &["optim.lrr=1e-3"]).unwrap_err().to_string();
        assert_eq!(err, "unknown key `optim.lrr` in --set; did you mean `optim.lr`?");
        // The same name under another table.
        let err = load(None, &["lr=1e-3"]).unwrap_err().to_string();
        assert_eq!(err, "unknown key `lr` in --set; did you mean `optim.lr`?");
        // Nothing close: no suggestion.
        let err = load(None, &["gradient_checkpointing=true"]).unwrap_err().to_string();
        assert_eq!(err, "unknown key `gradient_checkpointing` in --set");
    }

    #[test]
    fn unknown_key_in_strict_table_is_named_in_full() {
        let err = load(None, &["dpo.bta=0.5"]).unwrap_err().to_string();
        assert_eq!(err, "unknown key `dpo.bta` in --set; did you mean `dpo.beta`?");
        let file = TempFile::new("strict", "[dpo]\nbeat = 0.5\n");
        let err = load(Some(&file), &[]).unwrap_err().to_string();
        assert!(err.contains("unknown key `dpo.beat` in ") && err.ends_with("did you mean `dpo.beta`?"), "{err}");
    }

    #[test]
    fn type_errors_name_key_and_expected_type() {
        let err = load(None, &["learning_rate=abc"]).unwrap_err().to_string();
        assert!(err.starts_with("invalid value for `learning_rate` in --set: "), "{err}");
        assert!(err.contains("expected f64"), "{err}");

        let file = TempFile::new("type", "[optim]\nbetas = 0.9\n");
        let err = load(Some(&file), &[]).unwrap_err().to_string();
        assert!(err.starts_with("invalid value for `optim.betas` in ") && err.contains("train.toml"), "{err}");

        let err = load(None, &["schedule=cosin"]).unwrap_err().to_string();
        assert!(err.contains("`schedule`") && err.contains("unknown variant `cosin`"), "{err}");
    }

    #[test]
    fn malformed_set_is_an_error() {
        assert!(load(None, &["epochs"]).unwrap_err().to_string().contains("key=value"));
        assert!(load(None, &["optim..lr=1"]).is_err());
    }

    #[test]
    fn written_config_loads_back_to_the_same_value() {
        let config = TrainConfig {
            learning_rate: 3e-4,
            schedule: Schedule::Cosine,
            max_steps: Some(7),
            output_dir: "runs/x \"quoted\"".into(),
            optim: Optim { lr: 0.1, betas: vec![0.5] },
            ..TrainConfig::default()
        };
        let file = TempFile::new("roundtrip", &to_toml_string(&config).unwrap());
        assert_eq!(load(Some(&file), &[]).unwrap(), config);
    }

    /// Flags a command might have: `None` leaves the key alone.
    #[derive(Serialize, Default)]
    struct Flags {
        epochs: Option<u32>,
        learning_rate: Option<f64>,
        optim: OptimFlags,
    }

    #[derive(Serialize, Default)]
    struct OptimFlags {
        lr: Option<f64>,
    }

    #[test]
    fn flags_override_the_file_and_set_overrides_the_flags() {
        let file = TempFile::new("flags", "epochs = 3\nlearning_rate = 0.5\n[optim]\nlr = 0.25\n");
        let args = |sets: &[&str]| ConfigArgs {
            config: Some(file.0.clone()),
            sets: sets.iter().map(|s| s.to_string()).collect(),
        };
        let flags = Flags { epochs: Some(7), optim: OptimFlags { lr: Some(0.125) }, ..Flags::default() };
        let c: TrainConfig = args(&[]).load(&flags).unwrap();
        assert_eq!(
            (c.epochs, c.learning_rate, c.optim.lr),
            (7, 0.5, 0.125),
            "flags given win, the others keep the file's"
        );
        let c: TrainConfig = args(&["epochs=9", "optim.lr=1"]).load(&flags).unwrap();
        assert_eq!((c.epochs, c.optim.lr), (9, 1.0), "--set wins over the flags");
        let c: TrainConfig = ConfigArgs::default().load(&Flags::default()).unwrap();
        assert_eq!(c, TrainConfig::default(), "no file, no flags: the defaults");
    }

    #[test]
    fn edit_distance_counts_transpositions_once() {
        assert_eq!(edit_distance("lerning_rate", "learning_rate"), 1);
        assert_eq!(edit_distance("lraening", "learning"), 2);
        assert_eq!(edit_distance("beta", "btea"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    /// Mutated example configs (and `--set` values) parse into their command's settings or fail
    /// with an error, never a panic.
    #[test]
    fn fuzzed_configs_never_panic() {
        use crate::commands::train::{dpo, grpo, iterate, ppo, raft, reward, sft};
        use rlhf_model::fuzz::{cases, Mutator};
        fn check<T: Serialize + DeserializeOwned + Default>(example: &str, seed: u64, text: &[u8]) {
            let path = std::env::temp_dir().join(format!("rlhf-config-fuzz-{}-{example}", std::process::id()));
            std::fs::write(&path, text).unwrap();
            let set = format!("train.{}", String::from_utf8_lossy(&text[..text.len().min(40)]));
            let outcome = std::panic::catch_unwind(|| {
                let _ = load_config::<T>(Some(&path), &[]);
                let _ = load_config::<T>(None, std::slice::from_ref(&set));
            });
            assert!(outcome.is_ok(), "{example} seed {seed}: panicked");
        }
        let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"));
        for seed in 0..cases(200) as u64 {
            for name in ["sft", "reward", "dpo", "grpo", "ppo", "raft", "iterate"] {
                let valid = std::fs::read(root.join(format!("{name}.toml"))).unwrap();
                let text = Mutator::new(seed).mutate(&valid);
                match name {
                    "sft" => check::<sft::SftConfig>(name, seed, &text),
                    "reward" => check::<reward::RewardConfig>(name, seed, &text),
                    "dpo" => check::<dpo::DpoConfig>(name, seed, &text),
                    "grpo" => check::<grpo::GrpoCommandConfig>(name, seed, &text),
                    "ppo" => check::<ppo::PpoCommandConfig>(name, seed, &text),
                    "raft" => check::<raft::RaftCommandConfig>(name, seed, &text),
                    _ => check::<iterate::IterateConfig>(name, seed, &text),
                }
            }
        }
    }
}
