//! Which files of a repository a command needs: a model's config, weights and tokenizer; a
//! dataset split's Parquet shards. Pure functions over the repository's file list.

use crate::error::{HubError, Kind, Result};
use std::collections::BTreeSet;

/// Read when present: the tokenizer and chat template, generation defaults, and the reward
/// model's normalisation statistics (`rlhf reward` writes them).
const MODEL_EXTRAS: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
    "special_tokens_map.json",
    "reward_stats.json",
];

pub const SINGLE_WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// The files of a model repository to fetch before its shards (which the index names).
pub fn model_files(id: &str, files: &[String]) -> Result<Vec<String>> {
    let has = |name: &str| files.iter().any(|f| f == name);
    if !has("config.json") {
        return Err(HubError::FileNotFound { kind: Kind::Model, id: id.to_string(), file: "config.json".into() });
    }
    let weights = if has(SINGLE_WEIGHTS) {
        SINGLE_WEIGHTS
    } else if has(WEIGHTS_INDEX) {
        WEIGHTS_INDEX
    } else {
        let weight_like = [".bin", ".pt", ".pth", ".gguf", ".safetensors", ".h5", ".msgpack", ".ckpt", ".onnx"];
        let found = files.iter().filter(|f| weight_like.iter().any(|e| f.ends_with(e))).take(12).cloned().collect();
        return Err(HubError::NoWeights { id: id.to_string(), found, adapter: has("adapter_config.json") });
    };
    let mut out = vec!["config.json".to_string(), weights.to_string()];
    out.extend(MODEL_EXTRAS.iter().filter(|f| has(f)).map(|f| f.to_string()));
    Ok(out)
}

/// The shard files a `model.safetensors.index.json` names, in first-seen order.
pub fn shard_names(index_text: &str) -> std::result::Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_str(index_text).map_err(|e| format!("not valid JSON: {e}"))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or("missing `weight_map` object")?;
    let mut out: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| format!("weight_map entry for `{tensor}` is not a file name"))?;
        if file.contains("..") || file.starts_with('/') {
            return Err(format!("weight_map entry for `{tensor}` leaves the repository: `{file}`"));
        }
        if !out.iter().any(|f| f == file) {
            out.push(file.to_string());
        }
    }
    Ok(out)
}

/// The split's shards in the layout `datasets` pushes: `data/SPLIT-00000-of-00002.parquet` (or
/// `data/SPLIT.parquet`, or the same at the repository root), sorted by name.
pub fn split_files(files: &[String], split: &str) -> Vec<String> {
    let mut out: Vec<String> = files
        .iter()
        .filter(|f| {
            let (dir, name) = f.rsplit_once('/').unwrap_or(("", f.as_str()));
            (dir.is_empty() || dir == "data") && split_of_name(name) == Some(split)
        })
        .cloned()
        .collect();
    out.sort();
    out
}

/// The split's shards on the Hub's `refs/convert/parquet` branch, `CONFIG/SPLIT/0000.parquet`
/// (`CONFIG/partial-SPLIT/…` for a partly converted dataset): the `default` config, or the only
/// one there is.
pub fn converted_split_files(files: &[String], split: &str) -> Vec<String> {
    let configs: BTreeSet<&str> = files.iter().filter_map(|f| converted_parts(f).map(|(c, _)| c)).collect();
    let config = match configs.iter().find(|c| **c == "default") {
        Some(c) => *c,
        None if configs.len() == 1 => configs.iter().next().copied().unwrap_or_default(),
        None => return Vec::new(),
    };
    let partial = format!("partial-{split}");
    let mut out: Vec<String> = files
        .iter()
        .filter(|f| converted_parts(f).is_some_and(|(c, s)| c == config && (s == split || s == partial)))
        .cloned()
        .collect();
    out.sort();
    out
}

/// Every split name either layout shows, for error messages.
pub fn split_names(files: &[String]) -> Vec<String> {
    let mut names = BTreeSet::new();
    for f in files {
        let (dir, name) = f.rsplit_once('/').unwrap_or(("", f.as_str()));
        if dir.is_empty() || dir == "data" {
            if let Some(split) = split_of_name(name) {
                names.insert(split.to_string());
            }
        }
        if let Some((config, split)) = converted_parts(f) {
            names.insert(format!("{config}/{split}"));
        }
    }
    names.into_iter().collect()
}

/// `train-00000-of-00001.parquet` → `train`, `test.parquet` → `test`.
fn split_of_name(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".parquet")?;
    let split = stem.split_once('-').map_or(stem, |(s, _)| s);
    (!split.is_empty()).then_some(split)
}

/// `CONFIG/SPLIT/NNNN.parquet` → (CONFIG, SPLIT).
fn converted_parts(path: &str) -> Option<(&str, &str)> {
    let mut parts = path.split('/');
    let (config, split, file) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none() && file.ends_with(".parquet")).then_some((config, split))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn single_file_model_with_tokenizer() {
        let files = list(&["config.json", "model.safetensors", "tokenizer.json", "README.md", "tokenizer_config.json"]);
        assert_eq!(
            model_files("o/m", &files).unwrap(),
            list(&["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"])
        );
    }

    #[test]
    fn sharded_model_reads_the_index() {
        let files = list(&["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors"]);
        assert_eq!(model_files("o/m", &files).unwrap(), list(&["config.json", "model.safetensors.index.json"]));
        let index = r#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#;
        assert_eq!(
            shard_names(index).unwrap(),
            list(&["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"])
        );
        assert!(shard_names(r#"{"weight_map": {"a": "../../etc/passwd"}}"#).unwrap_err().contains("leaves"));
        assert!(shard_names("{}").unwrap_err().contains("weight_map"));
    }

    #[test]
    fn models_without_usable_weights_say_what_is_there() {
        let err = model_files("o/m", &list(&["config.json", "pytorch_model.bin"])).unwrap_err().to_string();
        assert!(
            err.contains("`o/m`") && err.contains("pytorch_model.bin") && err.contains("model.safetensors"),
            "{err}"
        );
        let err = model_files("o/m", &list(&["config.json", "m.Q4_0.gguf"])).unwrap_err().to_string();
        assert!(err.contains(".gguf file can be downloaded"), "{err}");
        let err = model_files("o/a", &list(&["config.json", "adapter_config.json", "adapter_model.safetensors"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("LoRA adapter") && err.contains("rlhf merge"), "{err}");
        let err = model_files("o/m", &list(&["model.safetensors"])).unwrap_err().to_string();
        assert_eq!(err, "model `o/m` has no file `config.json`");
    }

    #[test]
    fn dataset_split_layouts() {
        let files = list(&[
            "README.md",
            "data/train-00001-of-00002.parquet",
            "data/train-00000-of-00002.parquet",
            "data/train_sft-00000-of-00001.parquet",
            "data/test-00000-of-00001.parquet",
            "other/train-00000-of-00001.parquet",
        ]);
        assert_eq!(
            split_files(&files, "train"),
            list(&["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"])
        );
        assert_eq!(split_files(&files, "test"), list(&["data/test-00000-of-00001.parquet"]));
        assert!(split_files(&files, "validation").is_empty());
        assert_eq!(split_names(&files), list(&["test", "train", "train_sft"]));
        assert_eq!(split_files(&list(&["valid.parquet"]), "valid"), list(&["valid.parquet"]));
    }

    #[test]
    fn converted_branch_layout() {
        let files = list(&["default/train/0001.parquet", "default/train/0000.parquet", "default/test/0000.parquet"]);
        assert_eq!(
            converted_split_files(&files, "train"),
            list(&["default/train/0000.parquet", "default/train/0001.parquet"])
        );
        let one_config = list(&["plain_text/partial-train/0000.parquet"]);
        assert_eq!(converted_split_files(&one_config, "train"), one_config);
        let two = list(&["a/train/0000.parquet", "b/train/0000.parquet"]);
        assert!(converted_split_files(&two, "train").is_empty());
        assert_eq!(split_names(&two), list(&["a/train", "b/train"]));
    }
}
