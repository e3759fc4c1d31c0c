//! Frame preprocessing for CLIP and Synchformer, bit-exact with the official transforms.
//!
//! The official `load_video` applies torchvision v2 transforms to **uint8** frames:
//!
//! * CLIP: `Resize((384, 384), BICUBIC)` (the whole frame is squashed, no crop), then
//!   `ToDtype(float32, scale=True)` = `x · float32(1/255)`. The CLIP mean/std normalisation
//!   ([`CLIP_MEAN`], [`CLIP_STD`]) happens later, inside the CLIP encoder.
//! * Synchformer: `Resize(224, BICUBIC)` (short side → 224, long side →
//!   `int(224·long/short)`), `CenterCrop(224)` at `(round((H−224)/2), round((W−224)/2))`
//!   (round half to even), then `(x · float32(1/255) − 0.5) / 0.5`.
//!
//! On a uint8 CPU tensor the antialiased bicubic resize is torch's native uint8 kernel (the
//! Pillow-SIMD derived AVX2 path): a separable filter with `a = −0.5`, support
//! `2·max(scale, 1)`, weights normalised in float64 and quantised to int16 with a per-axis
//! precision, the **width pass first** into a uint8 intermediate (rounded and clamped), then
//! the height pass. A float pipeline differs by up to ~16 levels at sharp edges, so this
//! module implements that integer filter exactly ([`AxisFilter`]). Only the pixels that
//! survive the centre crop are computed (each output column/row of a separable pass depends
//! on its own filter row only, so this is exact).

use crate::config::{CLIP_SIZE, SYNC_SIZE};
use crate::error::{Error, Result};
use crate::features::pixels::{RawFrame, RowReader};
use crate::request::{PreparedFrame, VideoFrame};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// OpenAI CLIP normalisation, applied by the CLIP encoder as `(x − mean) / std`.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP normalisation, applied by the CLIP encoder as `(x − mean) / std`.
#[allow(clippy::excessive_precision)] // the official digits (same f32 values)
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// `ToDtype(float32, scale=True)`: `x · float32(1/255)` (the Python float 1/255 cast to f32).
#[inline]
fn u8_scale() -> f32 {
    (1.0f64 / 255.0) as f32
}

/// Keys' cubic with `a = −0.5`, in the operation order of torch's `aa_filter`.
#[inline]
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

/// One axis of the separable antialiased bicubic filter with int16 weights (torch
/// `_compute_index_ranges_int16_weights` for bicubic, `align_corners=False`, no explicit
/// scale).
#[derive(Debug, Clone)]
pub struct AxisFilter {
    pub in_size: usize,
    pub out_size: usize,
    /// Taps stored per output (max over outputs).
    pub ksize: usize,
    /// First input index of each output.
    pub start: Vec<usize>,
    /// Number of taps of each output.
    pub len: Vec<usize>,
    /// `out_size · ksize` weights (zero padded), in units of `2^-precision`.
    pub weights: Vec<i32>,
    /// Fixed-point precision of the weights.
    pub precision: u32,
}

impl AxisFilter {
    pub fn bicubic_aa(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let (support, invscale) = if scale >= 1.0 {
            (2.0 * scale, 1.0 / scale)
        } else {
            (2.0, 1.0)
        };
        let ksize = support.ceil() as usize * 2 + 1;
        let mut wf = vec![0f64; out_size * ksize];
        let mut start = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut wt_max = 0f64;
        for i in 0..out_size {
            let center = scale * (i as f64 + 0.5);
            // C++ static_cast<int64_t> truncates toward zero
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let xsize = (xmax - xmin).clamp(0, ksize as i64) as usize;
            let w = &mut wf[i * ksize..i * ksize + xsize];
            let mut total = 0f64;
            for (j, wj) in w.iter_mut().enumerate() {
                let v = cubic(((j as i64 + xmin) as f64 - center + 0.5) * invscale);
                *wj = v;
                total += v;
            }
            if total != 0.0 {
                for wj in w.iter_mut() {
                    *wj /= total;
                    wt_max = wt_max.max(*wj);
                }
            }
            start.push(xmin as usize);
            len.push(xsize);
        }
        let mut precision = 0u32;
        while precision < 22 {
            let next = (0.5 + wt_max * (1u32 << (precision + 1)) as f64) as i32;
            if next >= 1 << 15 {
                break;
            }
            precision += 1;
        }
        let unit = (1u32 << precision) as f64;
        let weights = wf
            .iter()
            .map(|&w| {
                let v = w * unit;
                let q = if v < 0.0 {
                    (-0.5 + v) as i32
                } else {
                    (0.5 + v) as i32
                };
                q as i16 as i32
            })
            .collect();
        Self {
            in_size,
            out_size,
            ksize,
            start,
            len,
            weights,
            precision,
        }
    }

    #[inline]
    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let o = i * self.ksize;
        (self.start[i], &self.weights[o..o + self.len[i]])
    }
}

/// A rectangle of the resized image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// Resize (+ crop) of RGB24 frames of one size.
#[derive(Debug, Clone)]
pub struct ResizePlan {
    pub src_w: usize,
    pub src_h: usize,
    /// Size of the resized image (before the crop).
    pub dst_w: usize,
    pub dst_h: usize,
    /// The part of the resized image that is produced.
    pub crop: Crop,
    horiz: Option<AxisFilter>,
    vert: Option<AxisFilter>,
}

/// Which official transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// 384×384 squash, `[0, 1]`.
    Clip,
    /// short side 224, centre crop 224×224, `[−1, 1]`.
    Sync,
}

impl Transform {
    pub fn output_size(self) -> usize {
        match self {
            Transform::Clip => CLIP_SIZE,
            Transform::Sync => SYNC_SIZE,
        }
    }

    /// The resize plan of this transform for `src_w × src_h` frames.
    pub fn plan(self, src_w: usize, src_h: usize) -> Result<ResizePlan> {
        match self {
            Transform::Clip => ResizePlan::new(src_w, src_h, CLIP_SIZE, CLIP_SIZE, None),
            Transform::Sync => {
                let (w, h) = short_side_resize(src_w, src_h, SYNC_SIZE);
                let crop = center_crop(w, h, SYNC_SIZE, SYNC_SIZE)?;
                ResizePlan::new(src_w, src_h, w, h, Some(crop))
            }
        }
    }

    /// The plan for a `width × height` picture of which `rows` rows are read (`rows <
    /// height` for one field of an interlaced frame): the output geometry (resize, crop)
    /// follows the picture, the vertical filter reads the rows there are.
    pub fn plan_rows(self, width: usize, height: usize, rows: usize) -> Result<ResizePlan> {
        if rows == height {
            return self.plan(width, height);
        }
        let (dst_w, dst_h, crop) = match self {
            Transform::Clip => (CLIP_SIZE, CLIP_SIZE, None),
            Transform::Sync => {
                let (w, h) = short_side_resize(width, height, SYNC_SIZE);
                (w, h, Some(center_crop(w, h, SYNC_SIZE, SYNC_SIZE)?))
            }
        };
        ResizePlan::new(width, rows, dst_w, dst_h, crop)
    }

    /// u8 → f32 of this transform (`ToDtype(scale=True)` and, for Sync, `Normalize(0.5, 0.5)`).
    #[inline]
    pub fn to_f32(self, v: u8) -> f32 {
        let x = v as f32 * u8_scale();
        match self {
            Transform::Clip => x,
            Transform::Sync => (x - 0.5f32) / 0.5f32,
        }
    }
}

/// torchvision `Resize(size)` with one int: `(new_w, new_h)` with the short side `size` and
/// the long side `int(size · long / short)`.
pub fn short_side_resize(w: usize, h: usize, size: usize) -> (usize, usize) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((size * long) as f64 / short as f64) as usize;
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// torchvision `CenterCrop`: `top = int(round((H − h) / 2))`, `left = int(round((W − w) / 2))`
/// with Python's round-half-to-even.
pub fn center_crop(w: usize, h: usize, crop_w: usize, crop_h: usize) -> Result<Crop> {
    if crop_w > w || crop_h > h {
        return Err(Error::input(format!(
            "centre crop {crop_w}x{crop_h} is larger than the {w}x{h} image"
        )));
    }
    let top = ((h - crop_h) as f64 / 2.0).round_ties_even() as usize;
    let left = ((w - crop_w) as f64 / 2.0).round_ties_even() as usize;
    Ok(Crop {
        top,
        left,
        height: crop_h,
        width: crop_w,
    })
}

impl ResizePlan {
    /// Resize `src_w × src_h` to `dst_w × dst_h`, producing only `crop` (default: all).
    pub fn new(
        src_w: usize,
        src_h: usize,
        dst_w: usize,
        dst_h: usize,
        crop: Option<Crop>,
    ) -> Result<Self> {
        if src_w == 0 || src_h == 0 || dst_w == 0 || dst_h == 0 {
            return Err(Error::input(format!(
                "cannot resize a {src_w}x{src_h} frame to {dst_w}x{dst_h}"
            )));
        }
        let crop = crop.unwrap_or(Crop {
            top: 0,
            left: 0,
            height: dst_h,
            width: dst_w,
        });
        if crop.top + crop.height > dst_h || crop.left + crop.width > dst_w {
            return Err(Error::input(format!(
                "crop {crop:?} lies outside the {dst_w}x{dst_h} image"
            )));
        }
        Ok(Self {
            src_w,
            src_h,
            dst_w,
            dst_h,
            crop,
            horiz: (src_w != dst_w).then(|| AxisFilter::bicubic_aa(src_w, dst_w)),
            vert: (src_h != dst_h).then(|| AxisFilter::bicubic_aa(src_h, dst_h)),
        })
    }

    /// Elements of one output frame (`3 · crop.height · crop.width`).
    pub fn output_len(&self) -> usize {
        3 * self.crop.height * self.crop.width
    }

    /// Resize one packed RGB24 frame (`src_w · src_h · 3` bytes, rows without padding) and
    /// write the crop as planar uint8 `(3, crop.height, crop.width)` into `out`.
    pub fn run_u8(&self, src: &[u8], out: &mut [u8]) -> Result<()> {
        let need = self.src_w * self.src_h * 3;
        if src.len() != need {
            return Err(Error::input(format!(
                "frame of {}x{} RGB24 must have {need} bytes, got {}",
                self.src_w,
                self.src_h,
                src.len()
            )));
        }
        self.run(&RawFrame::rgb(self.src_w, self.src_h, src), out)
    }

    /// Resize one raw frame (any [`RawFrame`] format; `src_w × src_h` must be its width and
    /// the rows it reads) and write the crop as planar uint8 `(3, crop.height, crop.width)`
    /// into `out`. Rows are converted to RGB as the width pass reads them, a block of
    /// [`WIDTH_BLOCK_ROWS`] at a time: packed RGB24 is read in place (the bytes the
    /// official transform sees), other formats never exist as a full-size RGB image.
    pub fn run(&self, frame: &RawFrame, out: &mut [u8]) -> Result<()> {
        self.check(frame, out.len())?;
        let mut pass = WidthPass::new(self);
        let mut rows = RgbRows::new(frame);
        for y0 in (0..self.src_h).step_by(WIDTH_BLOCK_ROWS) {
            let n = WIDTH_BLOCK_ROWS.min(self.src_h - y0);
            let (block, stride) = rows.get(y0, n);
            pass.block(self, block, stride, y0, n);
        }
        self.height_pass(&pass.inter, out);
        Ok(())
    }

    /// The frame fits this plan and `out_len` is the output size.
    fn check(&self, frame: &RawFrame, out_len: usize) -> Result<()> {
        frame.validate()?;
        if (frame.width, frame.rows()) != (self.src_w, self.src_h) {
            return Err(Error::input(format!(
                "a plan for {}x{} frames cannot read a {}x{} frame ({} rows)",
                self.src_w,
                self.src_h,
                frame.width,
                frame.height,
                frame.rows()
            )));
        }
        if out_len != self.output_len() {
            return Err(Error::input(format!(
                "output buffer has {out_len} bytes, expected {}",
                self.output_len()
            )));
        }
        Ok(())
    }

    /// Height pass: the cropped rows of `inter` (`(src_h, crop.width, 3)`, from
    /// [`WidthPass`]), written planar into `out`.
    fn height_pass(&self, inter: &[u8], out: &mut [u8]) {
        let Crop {
            top,
            height: ch,
            width: cw,
            ..
        } = self.crop;
        let row_len = cw * 3;
        let plane = ch * cw;
        let mut acc = vec![0i32; row_len];
        let mut line = vec![0u8; row_len];
        for yo in 0..ch {
            let y = top + yo;
            match &self.vert {
                Some(f) => {
                    let (s, w) = f.taps(y);
                    let rows = &inter[s * row_len..(s + w.len()) * row_len];
                    filter_lines(&mut acc, rows, w, f.precision, &mut line);
                }
                None => line.copy_from_slice(&inter[y * row_len..(y + 1) * row_len]),
            }
            for (x, px) in line.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * plane + yo * cw + x] = px[c];
                }
            }
        }
    }
}

/// The width pass of one plan: every source row, only the cropped columns, into `inter`
/// `(src_h, crop.width, 3)`. Blocks of rows are transposed first so that each output column
/// is a weighted sum of whole source columns of the block (contiguous vectors).
struct WidthPass {
    inter: Vec<u8>,
    block_t: Vec<u8>,
    out_t: Vec<u8>,
    acc: Vec<i32>,
}

impl WidthPass {
    fn new(plan: &ResizePlan) -> Self {
        let cw = plan.crop.width;
        Self {
            inter: vec![0u8; plan.src_h * cw * 3],
            block_t: vec![0u8; plan.src_w * WIDTH_BLOCK_ROWS * 3],
            out_t: vec![0u8; cw * WIDTH_BLOCK_ROWS * 3],
            acc: vec![0i32; WIDTH_BLOCK_ROWS * 3],
        }
    }

    /// Source rows `y0..y0 + rows` (at most [`WIDTH_BLOCK_ROWS`]), RGB24, `stride` bytes
    /// apart in `block`.
    fn block(&mut self, plan: &ResizePlan, block: &[u8], stride: usize, y0: usize, rows: usize) {
        let (left, cw) = (plan.crop.left, plan.crop.width);
        let row_len = cw * 3;
        let Some(f) = &plan.horiz else {
            for r in 0..rows {
                let src = &block[r * stride + left * 3..r * stride + (left + cw) * 3];
                self.inter[(y0 + r) * row_len..(y0 + r + 1) * row_len].copy_from_slice(src);
            }
            return;
        };
        let lane = rows * 3;
        for (x, d) in self.block_t[..plan.src_w * lane]
            .chunks_exact_mut(lane)
            .enumerate()
        {
            for (r, px) in d.chunks_exact_mut(3).enumerate() {
                let o = r * stride + x * 3;
                px.copy_from_slice(&block[o..o + 3]);
            }
        }
        for (xo, dst) in self.out_t[..cw * lane].chunks_exact_mut(lane).enumerate() {
            let (s, w) = f.taps(left + xo);
            let cols = &self.block_t[s * lane..(s + w.len()) * lane];
            filter_lines(&mut self.acc, cols, w, f.precision, dst);
        }
        for r in 0..rows {
            let dst = &mut self.inter[(y0 + r) * row_len..(y0 + r + 1) * row_len];
            for (d, px) in dst.chunks_exact_mut(3).zip(self.out_t.chunks_exact(lane)) {
                d.copy_from_slice(&px[r * 3..r * 3 + 3]);
            }
        }
    }
}

/// Blocks of a frame's rows as RGB24: in place for packed RGB24, else converted into a
/// strip of [`WIDTH_BLOCK_ROWS`] rows (rows in parallel, one [`RowReader`] per worker).
struct RgbRows<'f> {
    frame: RawFrame<'f>,
    in_place: Option<(&'f [u8], usize)>,
    strip: Vec<u8>,
}

impl<'f> RgbRows<'f> {
    fn new(frame: &RawFrame<'f>) -> Self {
        Self {
            frame: *frame,
            in_place: frame.rgb_in_place(),
            strip: Vec::new(),
        }
    }

    /// Rows `y0..y0 + rows` and the distance between them.
    fn get(&mut self, y0: usize, rows: usize) -> (&[u8], usize) {
        if let Some((data, stride)) = self.in_place {
            return (&data[y0 * stride..], stride);
        }
        let row = self.frame.width * 3;
        self.strip.resize(rows * row, 0);
        let frame = &self.frame;
        self.strip
            .par_chunks_mut(row)
            .enumerate()
            .for_each_init(|| RowReader::new(frame), |r, (i, dst)| r.read(y0 + i, dst));
        (&self.strip, row)
    }
}

#[inline(always)]
fn filter_fixed<const N: usize>(lines: &[u8], w: &[i32], precision: u32, out: &mut [u8]) {
    let mut acc = [1i32 << (precision - 1); N];
    for (line, &wk) in lines.chunks_exact(N).zip(w) {
        for (a, &p) in acc.iter_mut().zip(line) {
            *a += p as i32 * wk;
        }
    }
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = (a >> precision).clamp(0, 255) as u8;
    }
}

/// Rows per block of the width pass.
const WIDTH_BLOCK_ROWS: usize = 16;

/// One output line of a separable pass: `out = clamp((2^(p−1) + Σ_k w_k · lines_k) >> p)`,
/// with `lines` holding `w.len()` consecutive input lines of `out.len()` bytes. Exact integer
/// arithmetic (as torch's uint8 kernel); vectorised over the line (AVX2 when available).
fn filter_lines(acc: &mut [i32], lines: &[u8], w: &[i32], precision: u32, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { filter_lines_avx2(acc, lines, w, precision, out) };
        return;
    }
    filter_lines_generic(acc, lines, w, precision, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn filter_lines_avx2(acc: &mut [i32], lines: &[u8], w: &[i32], precision: u32, out: &mut [u8]) {
    filter_lines_generic(acc, lines, w, precision, out)
}

#[inline(always)]
fn filter_lines_generic(acc: &mut [i32], lines: &[u8], w: &[i32], precision: u32, out: &mut [u8]) {
    // the width pass works on blocks of 16 rows × 3 channels: a fixed length lets the
    // compiler keep the accumulators in registers
    if out.len() == WIDTH_BLOCK_ROWS * 3 {
        return filter_fixed::<{ WIDTH_BLOCK_ROWS * 3 }>(lines, w, precision, out);
    }
    let n = out.len();
    let acc = &mut acc[..n];
    acc.fill(1i32 << (precision - 1));
    for (line, &wk) in lines.chunks_exact(n).zip(w) {
        for (a, &p) in acc.iter_mut().zip(line) {
            *a += p as i32 * wk;
        }
    }
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = (a >> precision).clamp(0, 255) as u8;
    }
}

/// The plane of a prepared frame that `t` produces.
fn prepared_plane(frame: &PreparedFrame, t: Transform) -> &[u8] {
    match t {
        Transform::Clip => &frame.clip,
        Transform::Sync => &frame.sync,
    }
}

/// Resize one raw frame for both models (the work [`transform_u8`] would do for it, done
/// once), converting it to RGB on the way (see [`crate::features::pixels`]). For packed
/// RGB24 the result is exactly [`transform_u8`]'s on the same bytes. An interlaced frame
/// read as one field ([`RawFrame::field`]) is planned from its full size (the Synchformer
/// crop keeps the picture's aspect) and its field's rows are stretched to it. Plans are
/// cached per frame size.
pub fn prepare_frame(frame: &RawFrame) -> Result<PreparedFrame> {
    prepare_frame_planes(frame, true, true)
}

/// [`prepare_frame`] for only the planes a frame is picked for (the window engine knows:
/// `crate::window::planner`); a plane not asked for is left empty and costs nothing.
pub fn prepare_frame_planes(
    frame: &RawFrame,
    clip_plane: bool,
    sync_plane: bool,
) -> Result<PreparedFrame> {
    use std::sync::Mutex;
    type Plans = Vec<((usize, usize, usize), Arc<(ResizePlan, ResizePlan)>)>;
    static PLANS: Mutex<Plans> = Mutex::new(Vec::new());
    frame.validate()?;
    let key = (frame.width, frame.height, frame.rows());
    let plans = {
        let mut cache = PLANS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cache.iter().find(|(k, _)| *k == key) {
            Some((_, p)) => p.clone(),
            None => {
                let p = Arc::new((
                    Transform::Clip.plan_rows(frame.width, frame.height, frame.rows())?,
                    Transform::Sync.plan_rows(frame.width, frame.height, frame.rows())?,
                ));
                if cache.len() >= 8 {
                    cache.remove(0);
                }
                cache.push((key, p.clone()));
                p
            }
        }
    };
    let (clip_plan, sync_plan) = (&plans.0, &plans.1);
    let mut clip = vec![
        0u8;
        if clip_plane {
            clip_plan.output_len()
        } else {
            0
        }
    ];
    let mut sync = vec![
        0u8;
        if sync_plane {
            sync_plan.output_len()
        } else {
            0
        }
    ];
    if clip_plane {
        clip_plan.check(frame, clip.len())?;
    }
    if sync_plane {
        sync_plan.check(frame, sync.len())?;
    }
    // each block of rows is converted once and read by both width passes
    let mut clip_pass = clip_plane.then(|| WidthPass::new(clip_plan));
    let mut sync_pass = sync_plane.then(|| WidthPass::new(sync_plan));
    let mut rows = RgbRows::new(frame);
    for y0 in (0..frame.rows()).step_by(WIDTH_BLOCK_ROWS) {
        let n = WIDTH_BLOCK_ROWS.min(frame.rows() - y0);
        let (block, stride) = rows.get(y0, n);
        rayon::join(
            || {
                if let Some(p) = clip_pass.as_mut() {
                    p.block(clip_plan, block, stride, y0, n)
                }
            },
            || {
                if let Some(p) = sync_pass.as_mut() {
                    p.block(sync_plan, block, stride, y0, n)
                }
            },
        );
    }
    rayon::join(
        || {
            if let Some(p) = &clip_pass {
                clip_plan.height_pass(&p.inter, &mut clip)
            }
        },
        || {
            if let Some(p) = &sync_pass {
                sync_plan.height_pass(&p.inter, &mut sync)
            }
        },
    );
    Ok(PreparedFrame { clip, sync })
}

fn check_frame(f: &VideoFrame, i: usize) -> Result<()> {
    if f.prepared.is_some() {
        return Ok(());
    }
    if f.width == 0 || f.height == 0 {
        return Err(Error::input(format!(
            "frame {i} has an empty size {}x{}",
            f.width, f.height
        )));
    }
    let need = f.width * f.height * 3;
    if f.data.len() != need {
        return Err(Error::input(format!(
            "frame {i} ({}x{} RGB24) must have {need} bytes, got {}",
            f.width,
            f.height,
            f.data.len()
        )));
    }
    Ok(())
}

/// Apply `transform` to `frames[indices[k]]` for each output slot `k` and return the planar
/// uint8 result `(T, 3, S, S)` as a flat vector (each distinct source frame is resized once;
/// frames are processed in parallel).
pub fn transform_u8(
    transform: Transform,
    frames: &[VideoFrame],
    indices: &[usize],
) -> Result<Vec<u8>> {
    let size = transform.output_size();
    let per = 3 * size * size;
    // distinct source frames, in first-use order
    let mut slot_of = vec![usize::MAX; frames.len()];
    let mut uniq = Vec::new();
    for &i in indices {
        let f = frames.get(i).ok_or_else(|| {
            Error::input(format!(
                "frame index {i} out of range ({} frames)",
                frames.len()
            ))
        })?;
        if slot_of[i] == usize::MAX {
            check_frame(f, i)?;
            slot_of[i] = uniq.len();
            uniq.push(i);
        }
    }
    // one plan per distinct frame size
    let mut plans: Vec<ResizePlan> = Vec::new();
    let mut plan_of = Vec::with_capacity(uniq.len());
    for &i in &uniq {
        let f = &frames[i];
        if f.prepared.is_some() {
            plan_of.push(usize::MAX);
            continue;
        }
        let p = match plans
            .iter()
            .position(|p| p.src_w == f.width && p.src_h == f.height)
        {
            Some(p) => p,
            None => {
                plans.push(transform.plan(f.width, f.height)?);
                plans.len() - 1
            }
        };
        plan_of.push(p);
    }
    let mut resized = vec![0u8; uniq.len() * per];
    resized
        .par_chunks_mut(per.max(1))
        .zip(uniq.par_iter().zip(plan_of.par_iter()))
        .try_for_each(|(out, (&i, &p))| match &frames[i].prepared {
            Some(pf) => {
                let plane = prepared_plane(pf, transform);
                if plane.len() != out.len() {
                    return Err(Error::input(format!(
                        "frame {i} was prepared without its {transform:?} plane"
                    )));
                }
                out.copy_from_slice(plane);
                Ok(())
            }
            None => plans[p].run_u8(&frames[i].data, out),
        })?;
    if indices.len() == uniq.len() && indices.iter().zip(&uniq).all(|(a, b)| a == b) {
        return Ok(resized);
    }
    let mut out = vec![0u8; indices.len() * per];
    for (dst, &i) in out.chunks_exact_mut(per.max(1)).zip(indices) {
        let s = slot_of[i];
        dst.copy_from_slice(&resized[s * per..(s + 1) * per]);
    }
    Ok(out)
}

/// The model input of `transform` for the picked frames: a float32 tensor
/// `(T, 3, S, S)` on `device` (S = 384 for CLIP, 224 for Synchformer), equal to the official
/// transform output (bit-exact on CPU). On other devices the uint8 frames are uploaded and
/// converted there (4× less transfer).
pub fn transform_frames(
    transform: Transform,
    frames: &[VideoFrame],
    indices: &[usize],
    device: &Device,
) -> Result<Tensor> {
    let size = transform.output_size();
    let shape = (indices.len(), 3, size, size);
    let u8s = transform_u8(transform, frames, indices)?;
    if device.is_cpu() {
        let mut f = vec![0f32; u8s.len()];
        f.par_chunks_mut(1 << 16)
            .zip(u8s.par_chunks(1 << 16))
            .for_each(|(d, s)| {
                for (d, &s) in d.iter_mut().zip(s) {
                    *d = transform.to_f32(s);
                }
            });
        Ok(Tensor::from_vec(f, shape, device)?)
    } else {
        u8_to_model_input(transform, &Tensor::from_vec(u8s, shape, device)?)
    }
}

/// Convert a uint8 tensor of transformed frames to the model input with tensor ops
/// (device-side): `x · f32(1/255)`, and for Sync `· 2 − 1`, which equals `(y − 0.5) / 0.5`
/// exactly in binary floating point.
pub fn u8_to_model_input(transform: Transform, x: &Tensor) -> Result<Tensor> {
    let y = x.to_dtype(DType::F32)?.affine(u8_scale() as f64, 0.0)?;
    Ok(match transform {
        Transform::Clip => y,
        Transform::Sync => y.affine(2.0, -1.0)?,
    })
}

/// CLIP input `(T, 3, 384, 384)` in `[0, 1]` (not yet mean/std normalised).
pub fn clip_frames(frames: &[VideoFrame], indices: &[usize], device: &Device) -> Result<Tensor> {
    transform_frames(Transform::Clip, frames, indices, device)
}

/// Synchformer input `(T, 3, 224, 224)` in `[−1, 1]`.
pub fn sync_frames(frames: &[VideoFrame], indices: &[usize], device: &Device) -> Result<Tensor> {
    transform_frames(Transform::Sync, frames, indices, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: usize, h: usize, seed: u32) -> VideoFrame {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        let data = (0..w * h * 3)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                // mix of noise and hard edges
                if (i / 3 / w / 4 + i / 3 % w / 4).is_multiple_of(2) {
                    (s >> 24) as u8
                } else {
                    255
                }
            })
            .collect();
        VideoFrame {
            prepared: None,
            pts: 0.0,
            width: w,
            height: h,
            data: Arc::new(data),
            id: None,
        }
    }

    fn smooth_frame(w: usize, h: usize) -> VideoFrame {
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f64 / w as f64, y as f64 / h as f64);
                data.push((40.0 + 170.0 * fx) as u8);
                data.push((200.0 - 150.0 * fy) as u8);
                data.push((128.0 + 60.0 * (6.0 * fx + 4.0 * fy).sin()) as u8);
            }
        }
        VideoFrame {
            prepared: None,
            pts: 0.0,
            width: w,
            height: h,
            data: Arc::new(data),
            id: None,
        }
    }

    /// Straightforward float64 restatement (no int16 weights, no intermediate rounding):
    /// the integer filter must stay within a few levels of it.
    fn float_resize(f: &VideoFrame, dw: usize, dh: usize) -> Vec<f64> {
        let axis = |n_in: usize, n_out: usize| -> Vec<Vec<(usize, f64)>> {
            let scale = n_in as f64 / n_out as f64;
            let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
            let inv = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
            (0..n_out)
                .map(|i| {
                    let c = scale * (i as f64 + 0.5);
                    let lo = ((c - support + 0.5) as i64).max(0) as usize;
                    let hi = ((c + support + 0.5) as i64).min(n_in as i64) as usize;
                    let w: Vec<(usize, f64)> = (lo..hi)
                        .map(|j| (j, cubic((j as f64 - c + 0.5) * inv)))
                        .collect();
                    let t: f64 = w.iter().map(|x| x.1).sum();
                    w.into_iter().map(|(j, x)| (j, x / t)).collect()
                })
                .collect()
        };
        let (ax, ay) = (axis(f.width, dw), axis(f.height, dh));
        let mut out = vec![0f64; 3 * dw * dh];
        for c in 0..3 {
            for y in 0..dh {
                for x in 0..dw {
                    let mut v = 0.0;
                    for &(yy, wy) in &ay[y] {
                        for &(xx, wx) in &ax[x] {
                            v += wy * wx * f.data[(yy * f.width + xx) * 3 + c] as f64;
                        }
                    }
                    out[c * dw * dh + y * dw + x] = v;
                }
            }
        }
        out
    }

    #[test]
    fn weights_are_normalised_int16() {
        for (i, o) in [
            (640, 384),
            (360, 384),
            (1920, 398),
            (1, 384),
            (5, 224),
            (1080, 224),
        ] {
            let f = AxisFilter::bicubic_aa(i, o);
            assert!(f.precision >= 1 && f.precision <= 22);
            for k in 0..o {
                let (s, w) = f.taps(k);
                assert!(s + w.len() <= i);
                let sum: i32 = w.iter().sum();
                let unit = 1i32 << f.precision;
                assert!(
                    (sum - unit).abs() <= w.len() as i32,
                    "{i}->{o} out {k}: {sum} vs {unit}"
                );
                assert!(w.iter().all(|&x| x.abs() < 1 << 15));
            }
        }
    }

    #[test]
    fn close_to_float_filter() {
        for (w, h, dw, dh) in [(64, 36, 38, 38), (20, 30, 45, 17), (7, 5, 384, 384)] {
            let f = smooth_frame(w, h);
            let plan = ResizePlan::new(w, h, dw, dh, None).unwrap();
            let mut out = vec![0u8; plan.output_len()];
            plan.run_u8(&f.data, &mut out).unwrap();
            let reff = float_resize(&f, dw, dh);
            // smooth image: no clamping, only int16 weights and two roundings differ
            for (a, b) in out.iter().zip(&reff) {
                let d = (*a as f64 - b).abs();
                assert!(d <= 1.5, "{w}x{h}->{dw}x{dh}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn identity_and_single_axis() {
        let f = frame(12, 9, 1);
        // identity: no filter at all
        let p = ResizePlan::new(12, 9, 12, 9, None).unwrap();
        let mut out = vec![0u8; p.output_len()];
        p.run_u8(&f.data, &mut out).unwrap();
        for y in 0..9 {
            for x in 0..12 {
                for c in 0..3 {
                    assert_eq!(out[c * 108 + y * 12 + x], f.data[(y * 12 + x) * 3 + c]);
                }
            }
        }
        // width only: each row independent; a constant image stays constant
        let flat = VideoFrame {
            prepared: None,
            pts: 0.0,
            width: 10,
            height: 4,
            data: Arc::new(vec![77; 120]),
            id: None,
        };
        for (dw, dh) in [(10, 7), (3, 4), (25, 1), (1, 1)] {
            let p = ResizePlan::new(10, 4, dw, dh, None).unwrap();
            let mut out = vec![0u8; p.output_len()];
            p.run_u8(&flat.data, &mut out).unwrap();
            assert!(out.iter().all(|&v| v == 77), "{dw}x{dh}");
        }
    }

    #[test]
    fn sizes_and_crops() {
        assert_eq!(short_side_resize(640, 360, 224), (398, 224));
        assert_eq!(short_side_resize(1920, 1080, 224), (398, 224));
        assert_eq!(short_side_resize(3, 5, 224), (224, 373));
        assert_eq!(short_side_resize(1, 1, 224), (224, 224));
        assert_eq!(short_side_resize(720, 1280, 224), (224, 398));
        let c = center_crop(398, 224, 224, 224).unwrap();
        assert_eq!((c.top, c.left), (0, 87));
        // (373 − 224)/2 = 74.5 → 74 (half to even); (375 − 224)/2 = 75.5 → 76
        assert_eq!(center_crop(224, 373, 224, 224).unwrap().top, 74);
        assert_eq!(center_crop(224, 375, 224, 224).unwrap().top, 76);
        assert!(center_crop(100, 300, 224, 224).is_err());
    }

    #[test]
    fn tiny_odd_and_upscaled_frames() {
        let frames: Vec<VideoFrame> = [(1, 1), (3, 5), (5, 3), (2, 1000), (384, 384), (224, 500)]
            .iter()
            .enumerate()
            .map(|(i, &(w, h))| frame(w, h, i as u32))
            .collect();
        let idx: Vec<usize> = (0..frames.len()).collect();
        let c = clip_frames(&frames, &idx, &Device::Cpu).unwrap();
        assert_eq!(c.dims(), &[6, 3, 384, 384]);
        let s = sync_frames(&frames, &idx, &Device::Cpu).unwrap();
        assert_eq!(s.dims(), &[6, 3, 224, 224]);
        let (lo, hi) = (
            s.min_all().unwrap().to_scalar::<f32>().unwrap(),
            s.max_all().unwrap().to_scalar::<f32>().unwrap(),
        );
        assert!((-1.0..=1.0).contains(&lo) && (-1.0..=1.0).contains(&hi));
        // a 1x1 frame becomes a constant image of its colour
        let one = c
            .get(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for ch in 0..3 {
            let v = frames[0].data[ch] as f32 * u8_scale();
            assert!(
                one[ch * 384 * 384..(ch + 1) * 384 * 384]
                    .iter()
                    .all(|&x| x == v)
            );
        }
        // 384x384 is passed through unchanged by the clip transform
        let same = c
            .get(4)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(same[1], frames[4].data[3] as f32 * u8_scale());
        // 224x500: the sync resize is the identity, then the crop takes rows 138..362
        let u = transform_u8(Transform::Sync, &frames, &[5]).unwrap();
        let top = 138;
        assert_eq!(u[0], frames[5].data[top * 224 * 3]);
        assert_eq!(u[224 * 224 + 5], frames[5].data[(top * 224 + 5) * 3 + 1]);
    }

    #[test]
    fn repeated_indices_and_errors() {
        let frames = vec![frame(40, 30, 1), frame(40, 30, 2), frame(64, 48, 3)];
        let a = transform_u8(Transform::Sync, &frames, &[0, 1, 2]).unwrap();
        let b = transform_u8(Transform::Sync, &frames, &[2, 0, 0, 1, 2]).unwrap();
        let per = 3 * 224 * 224;
        assert_eq!(&b[0..per], &a[2 * per..3 * per]);
        assert_eq!(&b[per..2 * per], &a[0..per]);
        assert_eq!(&b[2 * per..3 * per], &a[0..per]);
        assert_eq!(&b[3 * per..4 * per], &a[per..2 * per]);
        let e = transform_u8(Transform::Clip, &frames, &[3])
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
        let bad = vec![VideoFrame {
            prepared: None,
            pts: 0.0,
            width: 4,
            height: 4,
            data: Arc::new(vec![0; 47]),
            id: None,
        }];
        let e = transform_u8(Transform::Clip, &bad, &[0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("48 bytes, got 47"), "{e}");
        let empty = vec![VideoFrame {
            prepared: None,
            pts: 0.0,
            width: 0,
            height: 4,
            data: Arc::new(vec![]),
            id: None,
        }];
        assert!(transform_u8(Transform::Sync, &empty, &[0]).is_err());
        let t = clip_frames(&frames, &[], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[0, 3, 384, 384]);
    }

    #[test]
    fn device_path_equals_cpu_path() {
        let frames = vec![frame(50, 31, 7), frame(17, 90, 8)];
        for t in [Transform::Clip, Transform::Sync] {
            let cpu = transform_frames(t, &frames, &[0, 1], &Device::Cpu).unwrap();
            let s = t.output_size();
            let u8s = transform_u8(t, &frames, &[0, 1]).unwrap();
            let dev = u8_to_model_input(
                t,
                &Tensor::from_vec(u8s, (2, 3, s, s), &Device::Cpu).unwrap(),
            )
            .unwrap();
            let d = (cpu - dev).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        }
        // the sync formula agrees with (x/255 − 0.5)/0.5 written the official way
        for v in 0..=255u8 {
            let x = v as f32 * ((1.0f64 / 255.0) as f32);
            assert_eq!(Transform::Sync.to_f32(v), x * 2.0 - 1.0);
        }
    }
}
