//! Conditioning features: frame picking and preprocessing, CLIP, Synchformer, text.

pub mod frames;
pub mod preprocess;
pub mod tokenizer;
