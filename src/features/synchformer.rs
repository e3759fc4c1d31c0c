//! Synchformer visual encoder (the part of Synchformer that MMAudio uses).
//!
//! MMAudio (`encode_video_with_sync` in `mmaudio/model/utils/features_utils.py` and
//! `mmaudio/ext/synchformer/*` of hkchengrex/MMAudio @ 974010a) cuts a 25 fps, 224×224 clip in
//! [−1, 1] into 16-frame segments with stride 8 (S = (T − 16) / 8 + 1; trailing frames are
//! dropped) and runs each through MotionFormer (`vfeat_extractor`):
//!
//! 1. Conv3d tubelet embedding, kernel = stride = (2, 16, 16): 8 × 14 × 14 tokens ordered
//!    (t, h, w); a CLS token is prepended; the CLS token gets `pos_embed[0]`, patch token
//!    (t, n) gets `pos_embed[1 + n] + temp_embed[t]`.
//! 2. Divided space–time blocks: `x += timeattn(norm3(x))` (each spatial position attends
//!    over its 8 time steps), `x += attn(norm1(x))` (each time step attends over its 196
//!    patches), `x += mlp(norm2(x))` (exact GELU). In both attentions the CLS query attends to
//!    every token and the CLS key/value is prepended to every group; q is pre-scaled.
//!    LayerNorm eps 1e-6.
//! 3. CLS dropped, final `norm`, tokens regrouped per time step `(S·8, 196, D)`, and
//!    `spatial_attn_agg` (a norm-first `nn.TransformerEncoderLayer` with GELU and its own CLS
//!    token) pools each time step to its CLS output: 8 tokens per segment.
//!
//! Output `(B, S·8, D)`. Paths mirror `Synchformer().state_dict()` (`vfeat_extractor.*`).

use super::vit::{
    Activation, LayerNorm, Linear, Mlp, MultiheadAttention, Trace, attention, fold_q_scale,
    host_ok, linear, linear_add_host, linear_host, merge_heads,
};
use crate::cpu;
use crate::cpu::attention::{OutRows, Problem, Rows};
use crate::cpu::rows::Act;
use crate::error::{Error, Result};
use crate::weights::WeightFile;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// LayerNorm epsilon of MotionFormer and its aggregation layer.
pub const SYNC_LN_EPS: f64 = 1e-6;

/// MotionFormer hyper-parameters (the `VIT` and `DATA` sections of `divided_224_16x4.yaml`)
/// and MMAudio's segmenting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynchformerConfig {
    pub embed_dim: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: f64,
    /// Spatial patch size (`VIT.PATCH_SIZE`).
    pub patch_size: usize,
    /// Frames per tubelet (`VIT.PATCH_SIZE_TEMP`).
    pub tubelet: usize,
    /// Input size (`DATA.TRAIN_CROP_SIZE`).
    pub image_size: usize,
    /// Tubelets per segment (`VIT.TEMPORAL_RESOLUTION`).
    pub temporal_resolution: usize,
    pub qkv_bias: bool,
    /// Frames between segment starts (MMAudio: 8).
    pub segment_step: usize,
}

impl SynchformerConfig {
    /// The official Synchformer visual encoder: ViT-B (768 wide, 12 layers, 12 heads), 224 px,
    /// patch 16, tubelets of 2 frames, 16-frame segments every 8 frames.
    pub fn base() -> Self {
        Self {
            embed_dim: 768,
            depth: 12,
            heads: 12,
            mlp_ratio: 4.0,
            patch_size: 16,
            tubelet: 2,
            image_size: 224,
            temporal_resolution: 8,
            qkv_bias: true,
            segment_step: crate::config::SYNC_STEP,
        }
    }

    /// From a MotionFormer config as JSON: either nested like the yaml (`{"VIT": {...},
    /// "DATA": {...}}`) or flat (`{"EMBED_DIM": .., "DEPTH": .., ...}`). Missing entries take
    /// the values of `divided_224_16x4.yaml`.
    pub fn from_motionformer_cfg(v: &Value) -> Result<Self> {
        let vit = v.get("VIT").unwrap_or(v);
        let data = v.get("DATA").unwrap_or(v);
        let base = Self::base();
        let bad = |m: String| Error::config(format!("MotionFormer config: {m}"));
        let uint = |o: &Value, k: &str, d: usize| -> Result<usize> {
            match o.get(k) {
                Some(x) => x
                    .as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| bad(format!("`{k}` is not a non-negative integer: {x}"))),
                None => Ok(d),
            }
        };
        for (k, want) in [("ATTN_LAYER", "divided"), ("POS_EMBED", "separate")] {
            if let Some(x) = vit.get(k)
                && x != want
            {
                return Err(bad(format!("`{k}` = {x} is not supported (only {want:?})")));
            }
        }
        let cfg = Self {
            embed_dim: uint(vit, "EMBED_DIM", base.embed_dim)?,
            depth: uint(vit, "DEPTH", base.depth)?,
            heads: uint(vit, "NUM_HEADS", base.heads)?,
            mlp_ratio: match vit.get("MLP_RATIO") {
                Some(x) => x
                    .as_f64()
                    .ok_or_else(|| bad(format!("`MLP_RATIO` is not a number: {x}")))?,
                None => base.mlp_ratio,
            },
            patch_size: uint(vit, "PATCH_SIZE", base.patch_size)?,
            tubelet: uint(vit, "PATCH_SIZE_TEMP", base.tubelet)?,
            image_size: uint(data, "TRAIN_CROP_SIZE", base.image_size)?,
            temporal_resolution: uint(vit, "TEMPORAL_RESOLUTION", base.temporal_resolution)?,
            qkv_bias: vit
                .get("QKV_BIAS")
                .and_then(|x| x.as_bool())
                .unwrap_or(base.qkv_bias),
            segment_step: base.segment_step,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.heads == 0 || !self.embed_dim.is_multiple_of(self.heads) {
            return Err(Error::config(format!(
                "Synchformer: embed_dim {} is not a multiple of {} heads",
                self.embed_dim, self.heads
            )));
        }
        if self.patch_size == 0 || self.grid() == 0 || self.tubelet == 0 {
            return Err(Error::config("Synchformer: empty patch grid"));
        }
        if self.temporal_resolution == 0 || self.segment_step == 0 {
            return Err(Error::config("Synchformer: empty segments"));
        }
        if !self.segment_step.is_multiple_of(self.tubelet) {
            return Err(Error::config(format!(
                "Synchformer: segment step {} is not a multiple of the tubelet size {}",
                self.segment_step, self.tubelet
            )));
        }
        Ok(())
    }

    /// Patches per side (14).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    /// Patches per time step (196).
    pub fn patches(&self) -> usize {
        self.grid() * self.grid()
    }
    /// Frames per segment (16).
    pub fn segment_frames(&self) -> usize {
        self.temporal_resolution * self.tubelet
    }
    /// Output tokens per segment (8).
    pub fn tokens_per_segment(&self) -> usize {
        self.temporal_resolution
    }
    /// Segments of a clip of `frames` frames (MMAudio: `(T − 16) // 8 + 1`); 0 if too short.
    pub fn num_segments(&self, frames: usize) -> usize {
        if frames < self.segment_frames() {
            0
        } else {
            (frames - self.segment_frames()) / self.segment_step + 1
        }
    }
    fn mlp_width(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }
}

/// Which axis a divided attention groups tokens by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Axis {
    /// Each spatial position attends over the time steps (`(b n) f d`).
    Time,
    /// Each time step attends over its patches (`(b f) n d`).
    Space,
}

/// MotionFormer `DividedAttention` (`qkv`, `proj`).
#[derive(Debug, Clone)]
struct DividedAttention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl DividedAttention {
    fn load(vb: VarBuilder, dim: usize, heads: usize, qkv_bias: bool) -> Result<Self> {
        let w = vb.get((3 * dim, dim), "qkv.weight")?;
        let b = if qkv_bias {
            Some(vb.get(3 * dim, "qkv.bias")?)
        } else {
            None
        };
        // q is scaled by head_dim^-0.5 before the dot products: folded into the projection
        let (w, b) = fold_q_scale(&w, b.as_ref(), 1.0 / ((dim / heads) as f64).sqrt())?;
        Ok(Self {
            qkv: Linear::new(w, b)?,
            proj: linear(vb.pp("proj"), dim, dim)?,
            heads,
        })
    }

    /// `x (B, 1 + F·N, C)` with CLS first and patch tokens ordered (f, n).
    fn forward(&self, x: &Tensor, frames: usize, patches: usize, axis: Axis) -> Result<Tensor> {
        let (b, t1, c) = x.dims3()?;
        let (h, dh) = (self.heads, c / self.heads);
        let (f, n) = (frames, patches);
        if t1 != 1 + f * n {
            return Err(Error::input(format!(
                "divided attention: {t1} tokens, expected 1 + {f}·{n}"
            )));
        }
        let qkv = self.qkv.forward(x)?.reshape((b, t1, 3, h, dh))?;
        // keys/values of all tokens, per head: (B·H, T1, Dh), for the CLS query
        let full = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * h, t1, dh))?)
        };
        // patch tokens grouped by the attention axis: (B·H·groups, len, Dh)
        let patch = qkv.narrow(1, 1, f * n)?.reshape((b, f, n, 3, h, dh))?;
        let grouped = |i: usize| -> Result<Tensor> {
            let p = patch.narrow(3, i, 1)?.squeeze(3)?; // (B, F, N, H, Dh)
            Ok(match axis {
                Axis::Time => {
                    p.permute((0, 3, 2, 1, 4))?
                        .contiguous()?
                        .reshape((b * h * n, f, dh))?
                }
                Axis::Space => {
                    p.permute((0, 3, 1, 2, 4))?
                        .contiguous()?
                        .reshape((b * h * f, n, dh))?
                }
            })
        };
        let groups = match axis {
            Axis::Time => n,
            Axis::Space => f,
        };
        let (k_all, v_all) = (full(1)?, full(2)?);
        // the CLS query attends to every token (itself included)
        let q_cls = qkv
            .narrow(1, 0, 1)?
            .narrow(2, 0, 1)?
            .reshape((b, h, dh))?
            .reshape((b * h, 1, dh))?;
        let cls_out = attention(&q_cls, &k_all, &v_all, None)?;
        // the CLS key/value is prepended to every group
        let with_cls = |all: &Tensor, g: Tensor| -> Result<Tensor> {
            let cls = all
                .narrow(1, 0, 1)?
                .unsqueeze(1)?
                .broadcast_as((b * h, groups, 1, dh))?
                .reshape((b * h * groups, 1, dh))?;
            Ok(Tensor::cat(&[&cls, &g], 1)?)
        };
        let q = grouped(0)?;
        let k = with_cls(&k_all, grouped(1)?)?;
        let v = with_cls(&v_all, grouped(2)?)?;
        let out = attention(&q, &k, &v, None)?; // (B·H·groups, len, Dh)
        let out = match axis {
            Axis::Time => out
                .reshape((b * h, n, f, dh))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * h, f * n, dh))?,
            Axis::Space => out.reshape((b * h, f * n, dh))?,
        };
        let out = Tensor::cat(&[&cls_out, &out], 1)?;
        self.proj.forward(&merge_heads(&out, h)?)
    }
}

impl DividedAttention {
    /// CPU fast path: `y += proj(attention(qkv(x)))` on host rows `(B, 1 + F·N, C)`, the
    /// groups read in place from the fused projection (strided rows), the CLS key/value
    /// given to every group as a one-row segment and the output written merged.
    fn add_host(
        &self,
        y: &mut [f32],
        x: &[f32],
        b: usize,
        frames: usize,
        patches: usize,
        axis: Axis,
    ) -> Result<()> {
        let c = self.proj.out_dim();
        let (h, d) = (self.heads, c / self.heads);
        let (f, n) = (frames, patches);
        let t1 = 1 + f * n;
        let qkv = linear_host(&self.qkv, x, b * t1, Act::None)?;
        let mut out = vec![0f32; b * t1 * c];
        let (r3, groups) = (3 * c, if axis == Axis::Time { n } else { f });
        let mut problems = Vec::with_capacity(b * h * (1 + groups));
        for bi in 0..b {
            let (base, obase) = (bi * t1 * r3, bi * t1 * c);
            for hh in 0..h {
                let (qc, kc, vc) = (base + hh * d, base + c + hh * d, base + 2 * c + hh * d);
                let oc = obase + hh * d;
                // the CLS query attends to every token, itself included
                problems.push(Problem {
                    q: Rows::new(&qkv, qc, 1, r3, d),
                    kv: vec![(
                        Rows::new(&qkv, kc, t1, r3, d),
                        Rows::new(&qkv, vc, t1, r3, d),
                    )],
                    out: OutRows::new(&mut out, oc, 1, c, d),
                    causal: None,
                });
                let cls = (Rows::new(&qkv, kc, 1, r3, d), Rows::new(&qkv, vc, 1, r3, d));
                for g in 0..groups {
                    // first token of the group and the row step between its tokens
                    let (first, len, step) = match axis {
                        Axis::Time => (1 + g, f, n),
                        Axis::Space => (1 + g * n, n, 1),
                    };
                    problems.push(Problem {
                        q: Rows::new(&qkv, qc + first * r3, len, step * r3, d),
                        kv: vec![
                            cls,
                            (
                                Rows::new(&qkv, kc + first * r3, len, step * r3, d),
                                Rows::new(&qkv, vc + first * r3, len, step * r3, d),
                            ),
                        ],
                        out: OutRows::new(&mut out, oc + first * c, len, step * c, d),
                        causal: None,
                    });
                }
            }
        }
        // SAFETY: all rows come from `qkv` and `out`, which outlive the call; every problem
        // writes its own tokens × head columns of `out` (CLS row, then disjoint groups)
        unsafe { cpu::attention::run(cpu::isa(), d, 1.0, &problems) };
        linear_add_host(&self.proj, y, &out, b * t1)
    }
}

/// MotionFormer `DividedSpaceTimeBlock`.
#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    attn: DividedAttention,
    timeattn: DividedAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    norm3: LayerNorm,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &SynchformerConfig) -> Result<Self> {
        let d = cfg.embed_dim;
        Ok(Self {
            norm1: LayerNorm::load(vb.pp("norm1"), d, SYNC_LN_EPS)?,
            attn: DividedAttention::load(vb.pp("attn"), d, cfg.heads, cfg.qkv_bias)?,
            timeattn: DividedAttention::load(vb.pp("timeattn"), d, cfg.heads, cfg.qkv_bias)?,
            norm2: LayerNorm::load(vb.pp("norm2"), d, SYNC_LN_EPS)?,
            mlp: Mlp::load(
                &vb.pp("mlp"),
                ("fc1", "fc2"),
                d,
                cfg.mlp_width(),
                Activation::GeluErf,
            )?,
            norm3: LayerNorm::load(vb.pp("norm3"), d, SYNC_LN_EPS)?,
        })
    }

    fn forward(&self, x: &Tensor, frames: usize, patches: usize) -> Result<Tensor> {
        let t = self
            .timeattn
            .forward(&self.norm3.forward(x)?, frames, patches, Axis::Time)?;
        let x = (x + t)?;
        let s = self
            .attn
            .forward(&self.norm1.forward(&x)?, frames, patches, Axis::Space)?;
        let x = (x + s)?;
        Ok((&x + self.mlp.forward(&self.norm2.forward(&x)?)?)?)
    }

    /// CPU fast path on host rows `(B, 1 + F·N, C)`, in place.
    fn forward_host(&self, x: &mut [f32], b: usize, frames: usize, patches: usize) -> Result<()> {
        let h = self.norm3.forward_host(x)?;
        self.timeattn
            .add_host(x, &h, b, frames, patches, Axis::Time)?;
        let h = self.norm1.forward_host(x)?;
        self.attn.add_host(x, &h, b, frames, patches, Axis::Space)?;
        let h = self.norm2.forward_host(x)?;
        self.mlp.add_host(x, &h, b * (1 + frames * patches))
    }
}

/// `SpatialTransformerEncoderLayer`: norm-first `nn.TransformerEncoderLayer` with its own CLS
/// token, returning the CLS output.
#[derive(Debug, Clone)]
struct SpatialAggregator {
    cls_token: Tensor,
    norm1: LayerNorm,
    self_attn: MultiheadAttention,
    norm2: LayerNorm,
    ff: Mlp,
}

impl SpatialAggregator {
    fn load(vb: VarBuilder, cfg: &SynchformerConfig) -> Result<Self> {
        let d = cfg.embed_dim;
        Ok(Self {
            cls_token: vb.get((1, 1, d), "cls_token")?,
            norm1: LayerNorm::load(vb.pp("norm1"), d, SYNC_LN_EPS)?,
            self_attn: MultiheadAttention::load(vb.pp("self_attn"), d, cfg.heads)?,
            norm2: LayerNorm::load(vb.pp("norm2"), d, SYNC_LN_EPS)?,
            ff: Mlp::load(
                &vb,
                ("linear1", "linear2"),
                d,
                cfg.mlp_width(),
                Activation::GeluErf,
            )?,
        })
    }

    /// `x (G, N, D)` → CLS output `(G, D)`. Only the CLS row of the layer's output is used, so
    /// only its query, residual and feed-forward are computed.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (g, _, d) = x.dims3()?;
        let cls = self.cls_token.broadcast_as((g, 1, d))?;
        let x = Tensor::cat(&[&cls, x], 1)?;
        let a = self.self_attn.forward_first(&self.norm1.forward(&x)?)?;
        let x0 = (cls + a)?;
        let y = (&x0 + self.ff.forward(&self.norm2.forward(&x0)?)?)?;
        Ok(y.squeeze(1)?)
    }
}

/// The Synchformer visual encoder (`vfeat_extractor`) with MMAudio's segmenting.
#[derive(Debug, Clone)]
pub struct Synchformer {
    cfg: SynchformerConfig,
    /// Conv3d weight as a transposed matrix `(3·kt·kh·kw, D)` (one GEMM for the tubelet
    /// embedding) and its bias.
    patch_w: Tensor,
    patch_b: Tensor,
    cls_token: Tensor,
    /// `(1, 1 + F·N, D)`: `pos_embed[0]` for CLS, `pos_embed[1+n] + temp_embed[t]` for (t, n).
    total_pos: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    agg: SpatialAggregator,
    dtype: DType,
    /// Weights are host f32: the blocks run on the CPU kernels of [`crate::cpu`].
    host: bool,
    /// Segments per forward pass (bounds memory; results do not depend on it).
    pub max_batch: usize,
}

impl Synchformer {
    /// Build from a `VarBuilder` at the root of a Synchformer state dict (`vfeat_extractor.*`).
    pub fn new(cfg: &SynchformerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let vb = vb.pp("vfeat_extractor");
        let (d, p, kt) = (cfg.embed_dim, cfg.patch_size, cfg.tubelet);
        let np = cfg.patches();
        let patch_w = vb
            .get((d, 3, kt, p, p), "patch_embed_3d.proj.weight")?
            .reshape((d, 3 * kt * p * p))?
            .t()?
            .contiguous()?;
        let patch_b = vb.get(d, "patch_embed_3d.proj.bias")?;
        let pos = vb.get((1, np + 1, d), "pos_embed")?;
        let temp = vb.get((1, cfg.temporal_resolution, d), "temp_embed")?;
        // tile as the official forward_features does: pos repeated per step + temp per step
        let tile_pos = pos
            .narrow(1, 1, np)?
            .repeat((1, cfg.temporal_resolution, 1))?;
        let tile_temp = temp
            .unsqueeze(2)?
            .broadcast_as((1, cfg.temporal_resolution, np, d))?
            .reshape((1, cfg.temporal_resolution * np, d))?;
        let total_pos = Tensor::cat(&[&pos.narrow(1, 0, 1)?, &(tile_pos + tile_temp)?], 1)?;
        let blocks = (0..cfg.depth)
            .map(|i| Block::load(vb.pp("blocks").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            patch_w,
            patch_b,
            cls_token: vb.get((1, 1, d), "cls_token")?,
            total_pos,
            blocks,
            norm: LayerNorm::load(vb.pp("norm"), d, SYNC_LN_EPS)?,
            agg: SpatialAggregator::load(vb.pp("spatial_attn_agg"), cfg)?,
            dtype: vb.dtype(),
            host: host_ok(&vb),
            max_batch: 4,
        })
    }

    /// Load from a Synchformer checkpoint (`synchformer_state_dict.pth` or a conversion).
    /// As the official `Synchformer.load_state_dict`, everything outside `vfeat_extractor.*`
    /// (audio extractor, transformer, projections) is ignored; inside it, unknown tensors are
    /// an error. The unused 2-D `patch_embed` may be present or not.
    pub fn load(
        wf: &Arc<WeightFile>,
        cfg: &SynchformerConfig,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let m = Self::new(cfg, wf.var_builder(dtype, dev))?;
        wf.check_all_used("the Synchformer visual encoder", |k| {
            !k.starts_with("vfeat_extractor.") || k.starts_with("vfeat_extractor.patch_embed.proj.")
        })?;
        Ok(m)
    }

    /// [`load`](Self::load) from a path.
    pub fn load_file(
        path: impl AsRef<Path>,
        cfg: &SynchformerConfig,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        Self::load(&Arc::new(WeightFile::open(path)?), cfg, dtype, dev)
    }

    pub fn config(&self) -> &SynchformerConfig {
        &self.cfg
    }

    /// `(B, T, 3, 224, 224)` frames in [−1, 1] → `(B, S·8, D)` (float32), S = (T − 16) // 8 + 1.
    pub fn encode_video(&self, x: &Tensor) -> Result<Tensor> {
        self.encode_video_traced(x, &mut Trace::off())
    }

    /// [`encode_video`](Self::encode_video), recording per segment `patch_embed_3d_out`,
    /// `tokens_in`, `block{i}_out`, `norm_out`, `spatial_agg_out` and `synchformer_out`.
    pub fn encode_video_traced(&self, x: &Tensor, trace: &mut Trace) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        let cfg = &self.cfg;
        if c != 3 || h != cfg.image_size || w != cfg.image_size {
            return Err(Error::input(format!(
                "Synchformer expects (B, T, 3, {0}, {0}) frames, got {1:?}",
                cfg.image_size,
                x.dims()
            )));
        }
        let s = cfg.num_segments(t);
        if s == 0 {
            return Err(Error::input(format!(
                "Synchformer needs at least {} frames per clip, got {t}",
                cfg.segment_frames()
            )));
        }
        let (d, per) = (cfg.embed_dim, cfg.tokens_per_segment());
        let mut outs = Vec::new();
        for bi in 0..b {
            let video = x.get(bi)?;
            let mut s0 = 0;
            while s0 < s {
                let n = self.max_batch.max(1).min(s - s0);
                let tokens = self.embed_segments(&video, s0, n)?;
                outs.push(self.forward_tokens(&tokens, trace)?);
                s0 += n;
            }
        }
        let y = Tensor::cat(&outs, 0)?; // (B·S, 8, D)
        trace.record("synchformer_out", || Ok(y.unsqueeze(1)?))?;
        Ok(y.reshape((b, s * per, d))?.to_dtype(DType::F32)?)
    }

    /// Tubelet embedding of segments `s0..s0+n` of one video `(T, 3, H, W)` →
    /// `(n, F·N, D)`. Consecutive segments overlap; each tubelet is embedded once.
    fn embed_segments(&self, video: &Tensor, s0: usize, n: usize) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (kt, p, g) = (cfg.tubelet, cfg.patch_size, cfg.grid());
        let (f, np, d) = (cfg.temporal_resolution, cfg.patches(), cfg.embed_dim);
        let first = s0 * cfg.segment_step;
        let frames = (n - 1) * cfg.segment_step + cfg.segment_frames();
        let u = frames / kt;
        let v = video
            .narrow(0, first, frames)?
            .narrow(2, 0, g * p)?
            .narrow(3, 0, g * p)?
            .to_dtype(self.dtype)?;
        // (U, kt, C, g, p, g, p) → (U, g, g, C, kt, p, p): one row per tubelet patch, in the
        // Conv3d weight's (c, kt, kh, kw) order
        let cols = v
            .reshape(vec![u, kt, 3, g, p, g, p])?
            .permute([0, 3, 5, 2, 1, 4, 6])?
            .contiguous()?
            .reshape((u * np, 3 * kt * p * p))?;
        let emb = cols
            .matmul(&self.patch_w)?
            .broadcast_add(&self.patch_b)?
            .reshape((u, np, d))?;
        let step = cfg.segment_step / kt;
        let segs = (0..n)
            .map(|i| emb.narrow(0, i * step, f)?.reshape((1, f * np, d)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&segs, 0)?)
    }

    /// MotionFormer on embedded segments `(BS, F·N, D)` → `(BS, 8, D)`.
    fn forward_tokens(&self, tokens: &Tensor, trace: &mut Trace) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (bs, fnp, d) = tokens.dims3()?;
        let (f, np) = (cfg.temporal_resolution, cfg.patches());
        trace.record("patch_embed_3d_out", || Ok(tokens.clone()))?;
        let cls = self.cls_token.broadcast_as((bs, 1, d))?;
        let mut x = Tensor::cat(&[&cls, tokens], 1)?.broadcast_add(&self.total_pos)?;
        trace.record("tokens_in", || Ok(x.clone()))?;
        if self.host && x.device().is_cpu() && x.dtype() == DType::F32 {
            let shape = x.shape().clone();
            let mut v = x.flatten_all()?.to_vec1::<f32>()?;
            for (i, blk) in self.blocks.iter().enumerate() {
                blk.forward_host(&mut v, bs, f, np)?;
                trace.record(&format!("block{i}_out"), || {
                    Ok(Tensor::from_slice(&v, &shape, &Device::Cpu)?)
                })?;
            }
            x = Tensor::from_vec(v, shape, &Device::Cpu)?;
        } else {
            for (i, blk) in self.blocks.iter().enumerate() {
                x = blk.forward(&x, f, np)?;
                trace.record(&format!("block{i}_out"), || Ok(x.clone()))?;
            }
        }
        let x = self.norm.forward(&x.narrow(1, 1, fnp)?)?;
        trace.record("norm_out", || Ok(x.clone()))?;
        let y = self
            .agg
            .forward(&x.reshape((bs * f, np, d))?)?
            .reshape((bs, f, d))?;
        trace.record("spatial_agg_out", || Ok(y.clone()))?;
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::vit::RandomWeights;
    use serde_json::json;
    use std::path::PathBuf;

    /// Tiny config: 32 px (2×2 patches of 16), 8 tubelets of 2 frames, width 16, 2 heads.
    fn tiny() -> SynchformerConfig {
        SynchformerConfig::from_motionformer_cfg(&json!({
            "VIT": {"EMBED_DIM": 16, "DEPTH": 2, "NUM_HEADS": 2, "PATCH_SIZE": 16,
                    "PATCH_SIZE_TEMP": 2, "TEMPORAL_RESOLUTION": 8, "MLP_RATIO": 4,
                    "QKV_BIAS": true, "ATTN_LAYER": "divided", "POS_EMBED": "separate"},
            "DATA": {"TRAIN_CROP_SIZE": 32}
        }))
        .unwrap()
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("mmaudio-sync-test-{}-{name}", std::process::id()))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn random_model() -> (Synchformer, Vec<(String, Tensor)>) {
        let rw = RandomWeights::recording(11);
        let m = Synchformer::new(&tiny(), rw.var_builder(DType::F32, &Device::Cpu)).unwrap();
        (m, rw.recorded())
    }

    /// The CPU fast path (divided attention read in place from the fused projection, CLS
    /// as a one-row key segment, fused kernels) gives what the generic candle ops give.
    #[test]
    fn cpu_fast_path_matches_generic_ops() {
        // width 64, 2 heads of 32 and 6×6 patches: the spatial groups (37 keys) take the
        // attention's GEMM path, the temporal ones (9 keys) its dot-product path
        let cfg = SynchformerConfig::from_motionformer_cfg(&json!({
            "VIT": {"EMBED_DIM": 64, "DEPTH": 2, "NUM_HEADS": 2, "PATCH_SIZE": 16,
                    "PATCH_SIZE_TEMP": 2, "TEMPORAL_RESOLUTION": 8, "MLP_RATIO": 4},
            "DATA": {"TRAIN_CROP_SIZE": 96}
        }))
        .unwrap();
        let rw = RandomWeights::recording(5);
        let mut m = Synchformer::new(&cfg, rw.var_builder(DType::F32, &Device::Cpu)).unwrap();
        let x = Tensor::rand(-1f32, 1.0, (1, 24, 3, 96, 96), &Device::Cpu).unwrap();
        assert!(m.host);
        let fast = m.encode_video(&x).unwrap();
        m.host = false;
        let generic = m.encode_video(&x).unwrap();
        assert_eq!(fast.dims(), &[1, 16, 64]);
        let d = max_diff(&fast, &generic);
        assert!(d < 1e-4, "{d}");
    }

    #[test]
    fn config_forms_and_real_preset() {
        let flat = json!({"EMBED_DIM": 768, "DEPTH": 12, "NUM_HEADS": 12, "MLP_RATIO": 4,
            "PATCH_SIZE": 16, "PATCH_SIZE_TEMP": 2, "TEMPORAL_RESOLUTION": 8,
            "TRAIN_CROP_SIZE": 224, "QKV_BIAS": true, "POS_EMBED": "separate", "ATTN_LAYER": "divided"});
        let base = SynchformerConfig::base();
        assert_eq!(
            SynchformerConfig::from_motionformer_cfg(&flat).unwrap(),
            base
        );
        assert_eq!(
            SynchformerConfig::from_motionformer_cfg(&json!({})).unwrap(),
            base
        );
        assert_eq!((base.patches(), base.segment_frames()), (196, 16));
        // 8 s at 25 fps: 200 frames → 24 segments; 10 s → 30; below 16 frames none
        assert_eq!(base.num_segments(200), 24);
        assert_eq!(base.num_segments(250), 30);
        assert_eq!(base.num_segments(15), 0);
        let e = SynchformerConfig::from_motionformer_cfg(&json!({"VIT": {"ATTN_LAYER": "joint"}}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ATTN_LAYER"), "{e}");
    }

    #[test]
    fn segments_batching_and_unfolding() {
        let (mut m, _) = random_model();
        let dev = Device::Cpu;
        // 31 frames: 2 segments (0..16, 8..24), frames 24..30 dropped
        let x = Tensor::rand(-1f32, 1.0, (2, 31, 3, 32, 32), &dev).unwrap();
        let y = m.encode_video(&x).unwrap();
        assert_eq!(y.dims(), &[2, 16, 16]);
        // segment 1 of video 1 alone
        let seg = m
            .encode_video(&x.narrow(0, 1, 1).unwrap().narrow(1, 8, 16).unwrap())
            .unwrap();
        assert!(max_diff(&y.narrow(0, 1, 1).unwrap().narrow(1, 8, 8).unwrap(), &seg) < 1e-5);
        // dropped tail frames do not matter
        let y24 = m.encode_video(&x.narrow(1, 0, 24).unwrap()).unwrap();
        assert!(max_diff(&y, &y24) < 1e-6);
        // segment batching does not change results
        m.max_batch = 1;
        assert!(max_diff(&m.encode_video(&x).unwrap(), &y) < 1e-5);

        let e = m
            .encode_video(&x.narrow(1, 0, 15).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 16 frames"), "{e}");
        let e = m
            .encode_video(&Tensor::zeros((1, 16, 3, 32, 31), DType::F32, &dev).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("(B, T, 3, 32, 32)"), "{e}");
    }

    #[test]
    fn checkpoint_loading_ignores_other_submodules_and_names_bad_tensors() {
        let (m, sd) = random_model();
        let dev = Device::Cpu;
        let x = Tensor::rand(-1f32, 1.0, (1, 16, 3, 32, 32), &dev).unwrap();
        let want = m.encode_video(&x).unwrap();
        // a full Synchformer checkpoint also holds the audio side and the unused 2-D patch_embed
        let mut full = sd.clone();
        full.push((
            "afeat_extractor.conv.weight".into(),
            Tensor::ones((4, 4), DType::F32, &dev).unwrap(),
        ));
        full.push((
            "transformer.blocks.0.weight".into(),
            Tensor::ones(4, DType::F32, &dev).unwrap(),
        ));
        full.push((
            "vfeat_extractor.patch_embed.proj.weight".into(),
            Tensor::ones((16, 3, 16, 16), DType::F32, &dev).unwrap(),
        ));
        full.push((
            "vfeat_extractor.patch_embed.proj.bias".into(),
            Tensor::ones(16, DType::F32, &dev).unwrap(),
        ));
        let p = tmp("full.pth");
        crate::weights::write_pth(&p, &full, None).unwrap();
        let got = Synchformer::load_file(&p, &tiny(), DType::F32, &dev)
            .unwrap()
            .encode_video(&x)
            .unwrap();
        assert_eq!(max_diff(&got, &want), 0.0);

        let key = "vfeat_extractor.blocks.1.timeattn.qkv.bias";
        let missing: Vec<_> = full.iter().filter(|(k, _)| k != key).cloned().collect();
        crate::weights::write_pth(&p, &missing, None).unwrap();
        let e = Synchformer::load_file(&p, &tiny(), DType::F32, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key) && e.contains(&*p.to_string_lossy()), "{e}");

        let mut foreign = full.clone();
        foreign.push((
            "vfeat_extractor.blocks.2.norm1.weight".into(),
            Tensor::ones(16, DType::F32, &dev).unwrap(),
        ));
        crate::weights::write_pth(&p, &foreign, None).unwrap();
        let e = Synchformer::load_file(&p, &tiny(), DType::F32, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("vfeat_extractor.blocks.2.norm1.weight"), "{e}");

        let shaped: Vec<_> = full
            .iter()
            .map(|(k, t)| {
                if k == "vfeat_extractor.temp_embed" {
                    (
                        k.clone(),
                        Tensor::zeros((1, 4, 16), DType::F32, &dev).unwrap(),
                    )
                } else {
                    (k.clone(), t.clone())
                }
            })
            .collect();
        crate::weights::write_pth(&p, &shaped, None).unwrap();
        let e = Synchformer::load_file(&p, &tiny(), DType::F32, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("temp_embed") && e.contains("[1, 4, 16]"), "{e}");
        let _ = std::fs::remove_file(&p);
    }
}
