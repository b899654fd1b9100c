//! HTTP services: the human-feedback labelling app (`label`).

pub mod label;
