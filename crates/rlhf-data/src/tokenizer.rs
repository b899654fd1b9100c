//! The tokenizer of a model, from an HF folder (`tokenizer.json` + `tokenizer_config.json`) or
//! rebuilt from GGUF metadata (byte-level BPE: tokens, merges, special tokens, pre-tokenizer),
//! with its chat template, special ids, and a pad id that is never the EOS id.

use crate::chat::{ChatTemplate, Message};
use crate::error::{DataError, Result};
use rlhf_model::gguf::GgufFile;
use rlhf_model::ModelConfig;
use serde_json::{json, Value};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::byte_level::ByteLevel as ByteLevelProcessor;
use tokenizers::{AddedToken, SplitDelimiterBehavior};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<(String, u32)>,
    eos: Option<(String, u32)>,
    /// Extra ids that end a response (e.g. from config.json's list of EOS ids).
    extra_eos: Vec<u32>,
    pad: u32,
    add_bos: bool,
    chat_template: Option<String>,
}

/// Llama-3's split pattern; Qwen2's differs only in splitting digits one at a time.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn tok_err(e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// From the same path a model is loaded from: an HF folder or a `.gguf` file.
    pub fn load(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::from_hf_dir(path)
        } else {
            Self::from_gguf(&GgufFile::open(path)?)
        }
    }

    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tj = dir.join("tokenizer.json");
        if !tj.exists() {
            return Err(DataError::file(&tj, "missing (the model folder needs an HF tokenizer.json)"));
        }
        // The `tokenizers` crate panics on some malformed files (seen: a decoder section whose
        // string holds a control character); that is an error naming the file here.
        let inner = std::panic::catch_unwind(|| tokenizers::Tokenizer::from_file(&tj))
            .map_err(|_| DataError::file(&tj, "cannot load: malformed tokenizer (the parser gave up)"))?
            .map_err(|e| DataError::file(&tj, format!("cannot load: {e}")))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path)
                .map_err(|e| DataError::file(&cfg_path, format!("cannot read: {e}")))?;
            serde_json::from_str(&text).map_err(|e| DataError::file(&cfg_path, format!("not valid JSON: {e}")))?
        } else {
            json!({})
        };
        let token = |key: &str| -> Option<(String, u32)> {
            let v = cfg.get(key)?;
            let s = v.as_str().or_else(|| v.get("content").and_then(Value::as_str))?;
            inner.token_to_id(s).map(|id| (s.to_string(), id))
        };
        let (bos, eos, pad) = (token("bos_token"), token("eos_token"), token("pad_token"));
        let chat_template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Value::as_str))
                .map(str::to_string),
            _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        let add_bos = cfg.get("add_bos_token").and_then(Value::as_bool).unwrap_or(false);
        Ok(Self::assemble(inner, bos, eos, pad.map(|p| p.1), add_bos, chat_template))
    }

    /// Rebuilds the tokenizer llama.cpp stored in a GGUF file (byte-level BPE models).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let err = |m: String| DataError::file(&g.path, m);
        let model = g.str("tokenizer.ggml.model")?.unwrap_or("");
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer model `{model}` is not supported from GGUF (only byte-level BPE, `gpt2`); use an HF folder with tokenizer.json"
            )));
        }
        let tokens = g
            .strings("tokenizer.ggml.tokens")?
            .ok_or_else(|| err("missing metadata `tokenizer.ggml.tokens`".into()))?;
        let merges = g
            .strings("tokenizer.ggml.merges")?
            .ok_or_else(|| err("missing metadata `tokenizer.ggml.merges`".into()))?;
        let types = g.ints("tokenizer.ggml.token_type")?.unwrap_or_default();
        let vocab: tokenizers::models::bpe::Vocab =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| err(format!("merge {i} `{m}` is not two tokens separated by a space")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| err(format!("cannot build BPE: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let pre = g.str("tokenizer.ggml.pre")?.unwrap_or("default");
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            "default" | "gpt-2" | "gpt2" => byte_level.into(),
            // SmolLM/StarCoder: digits one at a time, then GPT-2's regex.
            "smollm" | "starcoder" | "refact" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "llama-bpe" | "llama3" | "qwen2" => {
                let pattern = if pre == "qwen2" { QWEN2_SPLIT } else { LLAMA3_SPLIT };
                let split = Split::new(SplitPattern::Regex(pattern.into()), SplitDelimiterBehavior::Isolated, false).map_err(tok_err)?;
                Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into()
            }
            other => {
                return Err(err(format!(
                    "pre-tokenizer `{other}` is not supported from GGUF (supported: gpt-2, smollm, starcoder, llama-bpe, qwen2); use an HF folder"
                )))
            }
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner.with_post_processor(Some(ByteLevelProcessor::new(false, true, true)));
        // Control (3) and user-defined (4) tokens are matched whole in text, as HF's added tokens.
        let special: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == 3 || t == 4)
            .filter_map(|(i, _)| tokens.get(i).map(|s| AddedToken::from(s.clone(), true)))
            .collect();
        inner.add_special_tokens(special).map_err(tok_err)?;
        let id_tok = |key: &str| -> Result<Option<(String, u32)>> {
            Ok(g.uint(key)?.and_then(|id| tokens.get(id as usize).map(|s| (s.clone(), id as u32))))
        };
        let bos = id_tok("tokenizer.ggml.bos_token_id")?;
        let eos = id_tok("tokenizer.ggml.eos_token_id")?;
        let pad = id_tok("tokenizer.ggml.padding_token_id")?.map(|p| p.1);
        let add_bos = g.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
        let chat_template = g.str("tokenizer.chat_template")?.map(str::to_string);
        Ok(Self::assemble(inner, bos, eos, pad, add_bos, chat_template))
    }

    pub(crate) fn assemble(
        inner: tokenizers::Tokenizer,
        bos: Option<(String, u32)>,
        eos: Option<(String, u32)>,
        declared_pad: Option<u32>,
        add_bos: bool,
        chat_template: Option<String>,
    ) -> Self {
        let mut t = Self { inner, bos, eos, extra_eos: vec![], pad: 0, add_bos, chat_template };
        t.pad = t.choose_pad(declared_pad);
        t
    }

    /// A pad id distinct from every EOS id (docs/ARCHITECTURE.md, detail 3): the declared one if it differs from
    /// EOS, else a special token that is not EOS (e.g. `<|endoftext|>` next to `<|im_end|>`),
    /// else id 0. Padding is always masked; this only keeps "pad" and "end" apart.
    fn choose_pad(&self, declared: Option<u32>) -> u32 {
        let eos = self.eos_ids();
        if let Some(p) = declared.filter(|p| !eos.contains(p)) {
            return p;
        }
        for name in ["<|endoftext|>", "<pad>", "<|pad|>", "[PAD]", "<unk>"] {
            if let Some(id) = self.inner.token_to_id(name).filter(|id| !eos.contains(id)) {
                return id;
            }
        }
        (0..self.vocab_size() as u32).find(|i| !eos.contains(i)).unwrap_or(0)
    }

    /// Adds the model config's EOS ids (config.json may list several, e.g. `<|eot_id|>`).
    pub fn with_model_config(mut self, cfg: &ModelConfig) -> Self {
        for &id in &cfg.eos_token_ids {
            if !self.eos_ids().contains(&id) {
                self.extra_eos.push(id);
            }
        }
        self.pad = self.choose_pad(Some(self.pad));
        self
    }

    /// The longest vocabulary entry in bytes: no token stands for more text than this (byte-level
    /// pieces take 1–2 bytes per text byte, SentencePiece's `▁` 3 for a space), so a text of more
    /// than `n ×` this many bytes cannot fit in `n` tokens.
    pub fn max_token_bytes(&self) -> usize {
        self.inner.get_vocab(true).keys().map(String::len).max().unwrap_or(1).max(1)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|b| b.1)
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos.iter().map(|e| e.1).chain(self.extra_eos.iter().copied()).collect()
    }

    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids of `text`; BOS is prepended when the tokenizer asks for it (`add_bos_token`) and
    /// `add_special` is true, unless the text already starts with it (no double BOS).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = enc.get_ids().to_vec();
        if add_special && self.add_bos {
            if let Some((_, bos)) = &self.bos {
                if ids.first() != Some(bos) {
                    ids.insert(0, *bos);
                }
            }
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    /// Renders `messages` with the model's chat template.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let src = self.chat_template.as_deref().ok_or_else(|| {
            DataError::Template("this model has no chat template (use a plain prompt, or a model with one)".into())
        })?;
        let bos = self.bos.as_ref().map_or("", |b| b.0.as_str());
        let eos = self.eos.as_ref().map_or("", |e| e.0.as_str());
        ChatTemplate::new(src)?.render(messages, add_generation_prompt, bos, eos)
    }

    /// Chat-formatted prompt ids, tokenised as token ids end to end (no string re-joins later).
    pub fn encode_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(messages, add_generation_prompt)?;
        self.encode(&text, true)
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` (with the chat template) into `dir`.
    pub fn save_hf(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| DataError::file(dir, format!("cannot create: {e}")))?;
        let tj = dir.join("tokenizer.json");
        self.inner.save(&tj, false).map_err(|e| DataError::file(&tj, format!("cannot write: {e}")))?;
        let name = |id: u32| self.inner.id_to_token(id);
        let cfg = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.bos.as_ref().map(|b| b.0.clone()),
            "eos_token": self.eos.as_ref().map(|e| e.0.clone()),
            "pad_token": name(self.pad),
            "add_bos_token": self.add_bos,
            "add_eos_token": false,
            "clean_up_tokenization_spaces": false,
            "chat_template": self.chat_template,
            "model_max_length": 1_000_000_000_000u64,
        });
        let path = dir.join("tokenizer_config.json");
        let text = serde_json::to_string_pretty(&cfg).expect("json serialises");
        rlhf_model::io::write_atomic(&path, text.as_bytes())?;
        Ok(())
    }
}

/// Stops a row once its decoded response contains any of the stop strings.
pub struct StopStrings<'a> {
    tokenizer: &'a Tokenizer,
    stops: Vec<String>,
    /// Tokens decoded from the end of the response: enough to contain the longest stop string.
    window: usize,
}

impl<'a> StopStrings<'a> {
    pub fn new(tokenizer: &'a Tokenizer, stops: Vec<String>) -> Self {
        let longest = stops.iter().map(|s| s.len()).max().unwrap_or(0);
        Self { tokenizer, stops, window: longest + 4 }
    }
}

impl rlhf_model::StopCondition for StopStrings<'_> {
    fn should_stop(&self, _row: usize, response: &[u32]) -> bool {
        if self.stops.is_empty() {
            return false;
        }
        let tail = &response[response.len().saturating_sub(self.window)..];
        match self.tokenizer.decode(tail, false) {
            Ok(text) => self.stops.iter().any(|s| text.contains(s.as_str())),
            Err(_) => false,
        }
    }
}
