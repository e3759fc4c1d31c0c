//! Conditioning features: frame picking and preprocessing ([`frames`], [`preprocess`]),
//! the CLIP image and text towers ([`clip`]) with the CLIP tokenizer ([`tokenizer`]), and
//! the Synchformer visual encoder ([`synchformer`]).

pub mod clip;
pub mod frames;
pub mod preprocess;
pub mod synchformer;
pub mod tokenizer;
pub mod vit;
