//! Models and datasets by Hugging Face Hub id (`ORG/NAME[@REVISION]`, `ORG/NAME[:SPLIT]`),
//! resolved to files in the cache Python's `huggingface_hub` shares, through the Hub's file API
//! (the `hf-hub` crate): `HF_ENDPOINT` for mirrors, `HF_TOKEN` for gated and private
//! repositories, `HF_HUB_OFFLINE` for the cache alone. The callers then read the files as they
//! read local ones.

mod error;
mod files;
mod hub;
mod id;
mod integrity;
mod settings;

pub use error::{HubError, Kind, Result};
pub use hub::{Hub, Resolved};
pub use id::{DatasetRef, RepoRef};
pub use integrity::sha256_file;
pub use settings::{HubSettings, DEFAULT_ENDPOINT};
