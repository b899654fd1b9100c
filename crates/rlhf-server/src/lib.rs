//! HTTP services: the human-feedback labelling app (`label`) and the OpenAI-compatible
//! endpoint (`openai`).

pub mod http;
pub mod label;
pub mod openai;
