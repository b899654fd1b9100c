//! A tiny byte-level tokenizer with a ChatML template, built in memory for tests and examples (no
//! files, no network). Its special ids match `rlhf_model::tiny::llama_config`: pad 0, BOS 1,
//! EOS 2 (`<|im_end|>`); every byte is one token, so the vocabulary has 260 entries.

use crate::tokenizer::Tokenizer;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

pub const SPECIAL_TOKENS: [&str; 4] = ["<|endoftext|>", "<s>", "<|im_end|>", "<|im_start|>"];

/// ChatML, as Qwen and SmolLM use it (without a default system prompt).
pub const CHATML_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The ChatML tokenizer without automatic BOS.
pub fn tokenizer() -> Tokenizer {
    tokenizer_with(Some(CHATML_TEMPLATE), false)
}

/// A tokenizer with the given chat template (`None`: no template) that prepends BOS to encoded
/// text when `add_bos` is set.
pub fn tokenizer_with(chat_template: Option<&str>, add_bos: bool) -> Tokenizer {
    let mut bytes: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    bytes.sort_unstable();
    let vocab: tokenizers::models::bpe::Vocab = SPECIAL_TOKENS
        .iter()
        .map(|s| s.to_string())
        .chain(bytes.iter().map(char::to_string))
        .enumerate()
        .map(|(id, token)| (token, id as u32))
        .collect();
    // Fixed vocabulary and no merges: building cannot fail.
    let bpe = BPE::builder().vocab_and_merges(vocab, vec![]).build().expect("a merge-free BPE always builds");
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    inner
        .add_special_tokens(SPECIAL_TOKENS.map(|s| AddedToken::from(s, true)))
        .expect("special tokens already in the vocabulary are always added");
    let token = |id: u32| Some((SPECIAL_TOKENS[id as usize].to_string(), id));
    Tokenizer::assemble(inner, token(1), token(2), None, add_bos, chat_template.map(str::to_string))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_and_round_trip() {
        let t = super::tokenizer();
        assert_eq!(t.vocab_size(), 260);
        assert_eq!((t.pad_id(), t.bos_id(), t.eos_ids()), (0, Some(1), vec![2]));
        let ids = t.encode("<|im_start|>hé 1<|im_end|>", false).unwrap();
        assert_eq!(ids.first(), Some(&3));
        assert_eq!(ids.last(), Some(&2));
        assert_eq!(ids.len(), 2 + 5); // h, é (2 bytes), space, 1
        assert_eq!(t.decode(&ids, false).unwrap(), "<|im_start|>hé 1<|im_end|>");
    }
}
