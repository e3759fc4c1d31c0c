//! Raw video frames as decoders produce them, read one row at a time as packed RGB24.
//!
//! [`RawFrame`] is a plain description of a decoded frame: its [`PixelFormat`], size, the
//! planes (bytes + stride) and, for YUV, its [`Colorimetry`] (matrix, range, chroma
//! siting). It borrows the decoder's memory: nothing is copied until
//! [`crate::features::preprocess::prepare_frame`] reads it, row by row, into the resize
//! (so a 4K frame is never held as full-size RGB). The GStreamer element maps its
//! `GstVideoInfo` onto it; the library itself knows nothing of GStreamer.
//!
//! Conversion to RGB, per row ([`RowReader`]):
//!
//! * packed RGB/BGR with or without alpha or padding: the three colour bytes are taken as
//!   they are (alpha is dropped, as `videoconvert` does to RGB); packed RGB24 with its rows
//!   read in place, so an RGB frame gives exactly the bytes it gave before;
//! * GRAY8: R = G = B = Y (expanded from 16–235 when the range says limited);
//! * 10-bit YUV (I420_10LE, I422_10LE, Y444_10LE, P010_10LE): each sample truncated to its
//!   top 8 bits (as `videoconvert` does to 8-bit formats), then as below;
//! * YUV (I420, YV12, NV12, NV21, Y42B, Y444): chroma upsampled bilinearly to the luma grid
//!   at its siting (MPEG-2 style cosited or JPEG style centred, horizontally and
//!   vertically), then `R = Y + 2(1−Kr)·Cr`, `B = Y + 2(1−Kb)·Cb`,
//!   `G = (Y − Kr·R − Kb·B)/Kg` with the matrix's `Kr`, `Kb` (BT.601, BT.709, BT.2020,
//!   SMPTE 240M, FCC) and the range's offsets and scales (full: Y 0–255, limited: Y 16–235,
//!   C 16–240), in fixed point (chroma kept at 1/16 level through the interpolation,
//!   coefficients at 2⁻¹⁶), rounded and clamped once.
//!
//! Interlaced frames: [`RawFrame::field`] selects one field (every other row of every
//! plane), which the resize then stretches back to the frame's height. The models see one
//! picture per frame; taking one field keeps it free of the combing that weaving two
//! moments 1/50 s apart would put into it.

use crate::error::{Error, Result};

/// The raw 8-bit layouts a frame can arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    Rgb,
    Bgr,
    Rgba,
    Bgra,
    Argb,
    Abgr,
    Rgbx,
    Bgrx,
    Xrgb,
    Xbgr,
    Gray8,
    /// Planar 4:2:0, planes Y, U, V.
    I420,
    /// Planar 4:2:0, planes Y, V, U.
    Yv12,
    /// 4:2:0, plane Y and one plane of interleaved U, V.
    Nv12,
    /// 4:2:0, plane Y and one plane of interleaved V, U.
    Nv21,
    /// Planar 4:2:2, planes Y, U, V.
    Y42b,
    /// Planar 4:4:4, planes Y, U, V.
    Y444,
    /// I420 with 10-bit samples in 16-bit little-endian words (low bits).
    I42010le,
    /// Y42B with 10-bit samples in 16-bit little-endian words (low bits).
    I42210le,
    /// Y444 with 10-bit samples in 16-bit little-endian words (low bits).
    Y44410le,
    /// NV12 with 10-bit samples in the high bits of 16-bit little-endian words.
    P01010le,
}

/// How a format stores a pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One plane, `bpp` bytes per pixel, R/G/B at these byte offsets.
    Packed {
        bpp: usize,
        r: usize,
        g: usize,
        b: usize,
    },
    Gray,
    /// Three planes in memory order; `u`, `v`: which plane holds each chroma component.
    Planar {
        hsub: u32,
        vsub: u32,
        u: usize,
        v: usize,
    },
    /// Y plane + one interleaved chroma plane; `u`, `v`: byte offsets inside a pair.
    SemiPlanar {
        u: usize,
        v: usize,
    },
}

impl PixelFormat {
    /// Every format, in the order the element's sink caps list them (preferred first).
    pub const ALL: [PixelFormat; 21] = [
        PixelFormat::I420,
        PixelFormat::Yv12,
        PixelFormat::Nv12,
        PixelFormat::Nv21,
        PixelFormat::Y42b,
        PixelFormat::Y444,
        PixelFormat::Rgb,
        PixelFormat::Bgr,
        PixelFormat::Rgbx,
        PixelFormat::Bgrx,
        PixelFormat::Xrgb,
        PixelFormat::Xbgr,
        PixelFormat::Rgba,
        PixelFormat::Bgra,
        PixelFormat::Argb,
        PixelFormat::Abgr,
        PixelFormat::Gray8,
        PixelFormat::I42010le,
        PixelFormat::I42210le,
        PixelFormat::Y44410le,
        PixelFormat::P01010le,
    ];

    fn layout(self) -> Layout {
        use PixelFormat::*;
        let packed = |bpp, r, g, b| Layout::Packed { bpp, r, g, b };
        match self {
            Rgb => packed(3, 0, 1, 2),
            Bgr => packed(3, 2, 1, 0),
            Rgba | Rgbx => packed(4, 0, 1, 2),
            Bgra | Bgrx => packed(4, 2, 1, 0),
            Argb | Xrgb => packed(4, 1, 2, 3),
            Abgr | Xbgr => packed(4, 3, 2, 1),
            Gray8 => Layout::Gray,
            I420 | I42010le => Layout::Planar {
                hsub: 1,
                vsub: 1,
                u: 1,
                v: 2,
            },
            Yv12 => Layout::Planar {
                hsub: 1,
                vsub: 1,
                u: 2,
                v: 1,
            },
            Y42b | I42210le => Layout::Planar {
                hsub: 1,
                vsub: 0,
                u: 1,
                v: 2,
            },
            Y444 | Y44410le => Layout::Planar {
                hsub: 0,
                vsub: 0,
                u: 1,
                v: 2,
            },
            Nv12 | P01010le => Layout::SemiPlanar { u: 0, v: 1 },
            Nv21 => Layout::SemiPlanar { u: 1, v: 0 },
        }
    }

    /// How a sample is stored: `(bytes, right shift to 8 bits)`.
    fn sample(self) -> (usize, u32) {
        match self {
            PixelFormat::I42010le | PixelFormat::I42210le | PixelFormat::Y44410le => (2, 2),
            PixelFormat::P01010le => (2, 8),
            _ => (1, 0),
        }
    }

    /// Whether the format is YUV (uses the matrix and chroma siting of the colorimetry).
    pub fn is_yuv(self) -> bool {
        matches!(
            self.layout(),
            Layout::Planar { .. } | Layout::SemiPlanar { .. }
        )
    }

    /// Number of planes.
    pub fn n_planes(self) -> usize {
        match self.layout() {
            Layout::Packed { .. } | Layout::Gray => 1,
            Layout::SemiPlanar { .. } => 2,
            Layout::Planar { .. } => 3,
        }
    }

    /// Bytes of one row of plane `p` and its number of rows, for a `width × height` image.
    pub fn plane_size(self, p: usize, width: usize, height: usize) -> (usize, usize) {
        let (samples, rows) = self.plane_samples(p, width, height);
        (samples * self.sample().0, rows)
    }

    /// Samples in one row of plane `p` and its number of rows.
    fn plane_samples(self, p: usize, width: usize, height: usize) -> (usize, usize) {
        let sub = |n: usize, s: u32| (n + (1 << s) - 1) >> s;
        match (self.layout(), p) {
            (Layout::Packed { bpp, .. }, _) => (width * bpp, height),
            (Layout::Gray, _) | (_, 0) => (width, height),
            (Layout::Planar { hsub, vsub, .. }, _) => (sub(width, hsub), sub(height, vsub)),
            (Layout::SemiPlanar { .. }, _) => (2 * sub(width, 1), sub(height, 1)),
        }
    }
}

/// The YUV → RGB matrix (the luma coefficients `Kr`, `Kb` of the standard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Matrix {
    /// ITU-R BT.601 (SD video, JPEG).
    #[default]
    Bt601,
    /// ITU-R BT.709 (HD video).
    Bt709,
    /// ITU-R BT.2020 (non-constant luminance; UHD video).
    Bt2020,
    /// SMPTE 240M.
    Smpte240m,
    /// FCC (NTSC 1953).
    Fcc,
}

impl Matrix {
    /// `(Kr, Kb)`.
    pub fn kr_kb(self) -> (f64, f64) {
        match self {
            Matrix::Bt601 => (0.299, 0.114),
            Matrix::Bt709 => (0.2126, 0.0722),
            Matrix::Bt2020 => (0.2627, 0.0593),
            Matrix::Smpte240m => (0.212, 0.087),
            Matrix::Fcc => (0.30, 0.11),
        }
    }
}

/// Quantisation range of the 8-bit values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Range {
    /// Y 0–255, chroma 0–255 around 128.
    Full,
    /// Y 16–235, chroma 16–240 ("TV" or "MPEG" range; what video codecs carry).
    #[default]
    Limited,
}

/// How a YUV frame is to be read: matrix, range and where the chroma samples sit relative
/// to the luma samples (cosited = on the first luma sample of their group, else centred
/// between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Colorimetry {
    pub matrix: Matrix,
    pub range: Range,
    pub chroma_h_cosited: bool,
    pub chroma_v_cosited: bool,
}

/// One field of an interlaced frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// Rows 0, 2, 4, ... of every plane.
    Top,
    /// Rows 1, 3, 5, ...
    Bottom,
}

/// One plane: its bytes from its first row on, and the distance between rows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plane<'a> {
    pub data: &'a [u8],
    pub stride: usize,
}

/// A decoded frame as it arrived (borrowed, any stride).
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    pub format: PixelFormat,
    /// Size of the picture (both fields of an interlaced frame).
    pub width: usize,
    pub height: usize,
    /// The first `format.n_planes()` are used.
    pub planes: [Plane<'a>; 3],
    /// Ignored for RGB formats.
    pub colorimetry: Colorimetry,
    /// Read only this field (interlaced frames); `None` reads every row.
    pub field: Option<Field>,
}

impl<'a> RawFrame<'a> {
    /// Packed RGB24 rows without padding (`width · height · 3` bytes).
    pub fn rgb(width: usize, height: usize, data: &'a [u8]) -> Self {
        Self::packed(PixelFormat::Rgb, width, height, data, width * 3)
    }

    /// A single-plane frame (packed RGB family, GRAY8) with rows `stride` bytes apart.
    pub fn packed(
        format: PixelFormat,
        width: usize,
        height: usize,
        data: &'a [u8],
        stride: usize,
    ) -> Self {
        Self {
            format,
            width,
            height,
            planes: [Plane { data, stride }, Plane::default(), Plane::default()],
            colorimetry: Colorimetry::default(),
            field: None,
        }
    }

    /// Rows read (the field's rows for an interlaced frame).
    pub fn rows(&self) -> usize {
        match self.field {
            None => self.height,
            Some(Field::Top) => self.height.div_ceil(2),
            Some(Field::Bottom) => self.height / 2,
        }
    }

    /// Check the size and that every plane holds its rows (else an error saying what is
    /// short).
    pub fn validate(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 || self.rows() == 0 {
            return Err(Error::input(format!(
                "{:?} frame has an empty size {}x{} ({} rows read)",
                self.format,
                self.width,
                self.height,
                self.rows()
            )));
        }
        for p in 0..self.format.n_planes() {
            let (row, rows) = self.format.plane_size(p, self.width, self.height);
            let plane = &self.planes[p];
            if plane.stride < row {
                return Err(Error::input(format!(
                    "{}x{} {:?} frame: plane {p} has stride {} < {row} bytes per row",
                    self.width, self.height, self.format, plane.stride
                )));
            }
            let need = (rows - 1) * plane.stride + row;
            if plane.data.len() < need {
                return Err(Error::input(format!(
                    "{}x{} {:?} frame: plane {p} must have {need} bytes, got {}",
                    self.width,
                    self.height,
                    self.format,
                    plane.data.len()
                )));
            }
        }
        Ok(())
    }

    /// Whether rows can be used in place (packed RGB24: no conversion at all).
    pub(crate) fn rgb_in_place(&self) -> Option<(&'a [u8], usize)> {
        if self.format != PixelFormat::Rgb {
            return None;
        }
        let p = self.planes[0];
        Some(match self.field {
            None => (p.data, p.stride),
            Some(Field::Top) => (p.data, 2 * p.stride),
            Some(Field::Bottom) => (p.data.get(p.stride..).unwrap_or(&[]), 2 * p.stride),
        })
    }

    /// The whole frame (every row, fields woven) as packed RGB24 without padding.
    pub fn to_rgb24(&self) -> Result<Vec<u8>> {
        let whole = RawFrame {
            field: None,
            ..*self
        };
        whole.validate()?;
        let mut reader = RowReader::new(&whole);
        let row = self.width * 3;
        let mut out = vec![0u8; row * self.height];
        for (y, dst) in out.chunks_exact_mut(row).enumerate() {
            reader.read(y, dst);
        }
        Ok(out)
    }
}

/// Fixed-point YUV → RGB coefficients; chroma in 1/16 levels.
#[derive(Debug, Clone, Copy)]
struct Coefficients {
    y_off: i32,
    /// 2¹⁶ · Y scale.
    y: i32,
    /// 2¹² · the chroma terms (chroma in 1/16 levels: 2¹⁶ / 16).
    rv: i32,
    gu: i32,
    gv: i32,
    bu: i32,
}

impl Coefficients {
    fn new(c: &Colorimetry) -> Self {
        let (kr, kb) = c.matrix.kr_kb();
        let kg = 1.0 - kr - kb;
        let (y_off, ys, cs) = match c.range {
            Range::Full => (0, 1.0, 1.0),
            Range::Limited => (16, 255.0 / 219.0, 255.0 / 224.0),
        };
        let q16 = |x: f64| (x * 65536.0).round() as i32;
        let q12 = |x: f64| (x * 4096.0).round() as i32;
        Self {
            y_off,
            y: q16(ys),
            rv: q12(cs * 2.0 * (1.0 - kr)),
            gu: q12(cs * 2.0 * (1.0 - kb) * kb / kg),
            gv: q12(cs * 2.0 * (1.0 - kr) * kr / kg),
            bu: q12(cs * 2.0 * (1.0 - kb)),
        }
    }

    /// `cb16`, `cr16`: chroma in 1/16 levels (0..=4080).
    #[inline(always)]
    fn rgb(&self, y: u8, cb16: i32, cr16: i32) -> [u8; 3] {
        let yy = self.y * (y as i32 - self.y_off) + (1 << 15);
        let (u, v) = (cb16 - 128 * 16, cr16 - 128 * 16);
        let c = |x: i32| (x >> 16).clamp(0, 255) as u8;
        [
            c(yy + self.rv * v),
            c(yy - self.gu * u - self.gv * v),
            c(yy + self.bu * u),
        ]
    }

    #[inline(always)]
    fn gray(&self, y: u8) -> u8 {
        ((self.y * (y as i32 - self.y_off) + (1 << 15)) >> 16).clamp(0, 255) as u8
    }
}

/// Reads the rows of a validated [`RawFrame`] as packed RGB24 (with scratch space for the
/// chroma of one row).
pub struct RowReader<'a> {
    frame: RawFrame<'a>,
    coef: Coefficients,
    /// Bytes per sample and the right shift to 8 bits (high bit depth formats).
    bytes: usize,
    shift: u32,
    cu: Vec<u16>,
    cv: Vec<u16>,
    /// One luma row narrowed to 8 bits (high bit depth formats).
    luma: Vec<u8>,
}

impl<'a> RowReader<'a> {
    /// `frame` must have passed [`RawFrame::validate`].
    pub fn new(frame: &RawFrame<'a>) -> Self {
        let cw = match frame.format.layout() {
            Layout::Planar { .. } => frame.format.plane_samples(1, frame.width, frame.height).0,
            Layout::SemiPlanar { .. } => {
                frame.format.plane_samples(1, frame.width, frame.height).0 / 2
            }
            _ => 0,
        };
        let (bytes, shift) = frame.format.sample();
        Self {
            frame: *frame,
            coef: Coefficients::new(&frame.colorimetry),
            bytes,
            shift,
            cu: vec![0; cw],
            cv: vec![0; cw],
            luma: Vec::new(),
        }
    }

    /// Sample `i` of a row, as 8 bits (high bit depths are truncated as `videoconvert`
    /// does).
    #[inline(always)]
    fn at(&self, row: &[u8], i: usize) -> u8 {
        if self.bytes == 1 {
            row[i]
        } else {
            let v = u16::from_le_bytes([row[2 * i], row[2 * i + 1]]);
            (v >> self.shift).min(255) as u8
        }
    }

    /// Row `y` of plane `p` in the frame's own rows (field applied); `len` samples.
    #[inline]
    fn plane_row(&self, p: usize, y: usize, len: usize) -> &'a [u8] {
        let len = len * self.bytes;
        let plane = self.frame.planes[p];
        let (stride, first) = match self.frame.field {
            None => (plane.stride, 0),
            Some(Field::Top) => (2 * plane.stride, 0),
            Some(Field::Bottom) => (2 * plane.stride, plane.stride),
        };
        let o = first + y * stride;
        &plane.data[o..o + len]
    }

    /// Rows of plane `p` in the frame's own rows (field applied).
    fn plane_rows(&self, p: usize) -> usize {
        let (_, rows) = self
            .frame
            .format
            .plane_size(p, self.frame.width, self.frame.height);
        match self.frame.field {
            None => rows,
            Some(Field::Top) => rows.div_ceil(2),
            Some(Field::Bottom) => rows / 2,
        }
    }

    /// Write row `y` (`0..frame.rows()`) as `width · 3` RGB bytes into `out`.
    pub fn read(&mut self, y: usize, out: &mut [u8]) {
        let w = self.frame.width;
        let out = &mut out[..w * 3];
        match self.frame.format.layout() {
            Layout::Packed { bpp, r, g, b } => {
                let src = self.plane_row(0, y, w * bpp);
                if bpp == 3 && (r, g, b) == (0, 1, 2) {
                    out.copy_from_slice(src);
                    return;
                }
                for (d, s) in out.chunks_exact_mut(3).zip(src.chunks_exact(bpp)) {
                    d[0] = s[r];
                    d[1] = s[g];
                    d[2] = s[b];
                }
            }
            Layout::Gray => {
                let src = self.plane_row(0, y, w);
                let full = self.frame.colorimetry.range == Range::Full;
                for (d, &s) in out.chunks_exact_mut(3).zip(src) {
                    let v = if full { s } else { self.coef.gray(s) };
                    d.fill(v);
                }
            }
            Layout::Planar { hsub, vsub, u, v } => {
                self.chroma_row(y, vsub, |me, cy, len| {
                    (me.plane_row(u, cy, len), me.plane_row(v, cy, len), 1, 0, 0)
                });
                self.yuv_row(y, hsub, out);
            }
            Layout::SemiPlanar { u, v } => {
                self.chroma_row(y, 1, |me, cy, len| {
                    let row = me.plane_row(1, cy, 2 * len);
                    (row, row, 2, u, v)
                });
                self.yuv_row(y, 1, out);
            }
        }
    }

    /// Fill `cu`, `cv` (in 1/4 levels) with the chroma of luma row `y`, interpolated
    /// vertically at the siting. `rows(me, chroma_row, len)` gives the U and V rows with
    /// their step and first byte.
    fn chroma_row(
        &mut self,
        y: usize,
        vsub: u32,
        rows: impl Fn(&Self, usize, usize) -> (&'a [u8], &'a [u8], usize, usize, usize),
    ) {
        let len = self.cu.len();
        let n = self.plane_rows(1);
        let (j0, j1, w0, w1) = if vsub == 0 {
            (y.min(n - 1), y.min(n - 1), 4u16, 0u16)
        } else {
            let j = (y >> 1).min(n - 1);
            if self.frame.colorimetry.chroma_v_cosited {
                if y & 1 == 0 {
                    (j, j, 4, 0)
                } else {
                    (j, (j + 1).min(n - 1), 2, 2)
                }
            } else if y & 1 == 0 {
                (j, j.saturating_sub(1), 3, 1)
            } else {
                (j, (j + 1).min(n - 1), 3, 1)
            }
        };
        let (u0, v0, step, uo, vo) = rows(self, j0, len);
        let (u1, v1, _, _, _) = rows(self, j1, len);
        for i in 0..len {
            let k = i * step;
            self.cu[i] = w0 * self.at(u0, k + uo) as u16 + w1 * self.at(u1, k + uo) as u16;
            self.cv[i] = w0 * self.at(v0, k + vo) as u16 + w1 * self.at(v1, k + vo) as u16;
        }
    }

    /// Convert luma row `y` with the chroma in `cu`, `cv`, interpolated horizontally.
    fn yuv_row(&mut self, y: usize, hsub: u32, out: &mut [u8]) {
        let w = self.frame.width;
        let row = self.plane_row(0, y, w);
        if self.bytes != 1 {
            let mut narrowed = std::mem::take(&mut self.luma);
            narrowed.clear();
            narrowed.extend((0..w).map(|x| self.at(row, x)));
            self.luma = narrowed;
        }
        let luma: &[u8] = if self.bytes == 1 { row } else { &self.luma };
        let (cu, cv, c) = (&self.cu[..], &self.cv[..], &self.coef);
        if hsub == 0 {
            for (((d, &l), &u), &v) in out.chunks_exact_mut(3).zip(luma).zip(cu).zip(cv) {
                d.copy_from_slice(&c.rgb(l, 4 * u as i32, 4 * v as i32));
            }
            return;
        }
        // pixel pairs 2i, 2i + 1 share chroma sample i; weights in quarters:
        // cosited: 2i = C[i], 2i + 1 = (C[i] + C[i+1]) / 2;
        // centred: 2i = (3 C[i] + C[i−1]) / 4, 2i + 1 = (3 C[i] + C[i+1]) / 4
        let cosited = self.frame.colorimetry.chroma_h_cosited;
        let last = cu.len() - 1;
        for (i, (px, l)) in out
            .chunks_mut(6)
            .zip(luma.chunks(2))
            .enumerate()
            .take(cu.len())
        {
            let (prev, next) = (i.saturating_sub(1), (i + 1).min(last));
            let (ui, vi) = (cu[i] as i32, cv[i] as i32);
            let (even, odd) = if cosited {
                (
                    (4 * ui, 4 * vi),
                    (2 * (ui + cu[next] as i32), 2 * (vi + cv[next] as i32)),
                )
            } else {
                (
                    (3 * ui + cu[prev] as i32, 3 * vi + cv[prev] as i32),
                    (3 * ui + cu[next] as i32, 3 * vi + cv[next] as i32),
                )
            };
            px[..3].copy_from_slice(&c.rgb(l[0], even.0, even.1));
            if l.len() > 1 {
                px[3..6].copy_from_slice(&c.rgb(l[1], odd.0, odd.1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yuv_of(c: &Colorimetry, rgb: [f64; 3]) -> [u8; 3] {
        // the forward transform in float (what an encoder does)
        let (kr, kb) = c.matrix.kr_kb();
        let kg = 1.0 - kr - kb;
        let [r, g, b] = rgb.map(|x| x / 255.0);
        let y = kr * r + kg * g + kb * b;
        let pb = (b - y) / (2.0 * (1.0 - kb));
        let pr = (r - y) / (2.0 * (1.0 - kr));
        let q = |x: f64| x.round().clamp(0.0, 255.0) as u8;
        match c.range {
            Range::Full => [q(255.0 * y), q(128.0 + 255.0 * pb), q(128.0 + 255.0 * pr)],
            Range::Limited => [
                q(16.0 + 219.0 * y),
                q(128.0 + 224.0 * pb),
                q(128.0 + 224.0 * pr),
            ],
        }
    }

    /// A uniform frame of one YUV value in `format`.
    fn uniform(format: PixelFormat, w: usize, h: usize, yuv: [u8; 3]) -> Vec<Vec<u8>> {
        (0..format.n_planes())
            .map(|p| {
                let (row, rows) = format.plane_size(p, w, h);
                let mut v = vec![0u8; row * rows];
                match (format, p) {
                    (_, 0) => v.fill(yuv[0]),
                    (PixelFormat::Nv12, 1) | (PixelFormat::Nv21, 1) => {
                        let (a, b) = if format == PixelFormat::Nv12 {
                            (yuv[1], yuv[2])
                        } else {
                            (yuv[2], yuv[1])
                        };
                        for pair in v.chunks_exact_mut(2) {
                            pair[0] = a;
                            pair[1] = b;
                        }
                    }
                    (PixelFormat::Yv12, 1) => v.fill(yuv[2]),
                    (PixelFormat::Yv12, 2) => v.fill(yuv[1]),
                    (_, 1) => v.fill(yuv[1]),
                    (_, _) => v.fill(yuv[2]),
                }
                v
            })
            .collect()
    }

    fn frame<'a>(
        format: PixelFormat,
        w: usize,
        h: usize,
        planes: &'a [Vec<u8>],
        c: Colorimetry,
    ) -> RawFrame<'a> {
        let mut p = [Plane::default(); 3];
        for (i, d) in planes.iter().enumerate() {
            p[i] = Plane {
                data: d,
                stride: format.plane_size(i, w, h).0,
            };
        }
        RawFrame {
            format,
            width: w,
            height: h,
            planes: p,
            colorimetry: c,
            field: None,
        }
    }

    /// Hand-computed pixels: BT.601 limited-range Y=81 U=90 V=240 is pure red (255, 0, 0)
    /// up to rounding; mid grey and the range ends map to themselves.
    #[test]
    fn hand_computed_pixels() {
        let c601 = Colorimetry {
            matrix: Matrix::Bt601,
            range: Range::Limited,
            ..Default::default()
        };
        let k = Coefficients::new(&c601);
        // red: R = 1.164·65 + 1.596·112 = 75.66 + 178.75 = 254.4 → 254;
        // G = 75.66 − 0.392·(−38) − 0.813·112 = 75.66 + 14.9 − 91.05 = −0.5 → 0;
        // B = 75.66 + 2.017·(−38) = −1.0 → 0
        assert_eq!(k.rgb(81, 90 * 16, 240 * 16), [254, 0, 0]);
        // limited range: 16 is black, 235 white, 128 chroma is neutral
        assert_eq!(k.rgb(16, 128 * 16, 128 * 16), [0, 0, 0]);
        assert_eq!(k.rgb(235, 128 * 16, 128 * 16), [255, 255, 255]);
        // 126 → (126 − 16)·255/219 = 128.08 → 128
        assert_eq!(k.rgb(126, 128 * 16, 128 * 16), [128, 128, 128]);
        // BT.709 limited: Y=63 U=102 V=240 → R = 1.164·47 + 1.793·112 = 54.7 + 200.8 =
        // 255.5 → 255; G = 54.7 + 0.213·26 − 0.533·112 = 54.7 + 5.5 − 59.7 = 0.5 → 0/1;
        // B = 54.7 + 2.112·(−26) = −0.2 → 0
        let k709 = Coefficients::new(&Colorimetry {
            matrix: Matrix::Bt709,
            ..c601
        });
        let px = k709.rgb(63, 102 * 16, 240 * 16);
        assert_eq!(px[0], 255);
        assert!(px[1] <= 1 && px[2] == 0, "{px:?}");
        // full range (JPEG): Y=128 U=V=128 is 128 grey; Y=255 white
        let kf = Coefficients::new(&Colorimetry {
            range: Range::Full,
            ..c601
        });
        assert_eq!(kf.rgb(128, 128 * 16, 128 * 16), [128, 128, 128]);
        assert_eq!(kf.rgb(255, 128 * 16, 128 * 16), [255, 255, 255]);
        assert_eq!(kf.gray(77), 77);
        assert_eq!(k.gray(16), 0);
        assert_eq!(k.gray(235), 255);
    }

    /// Uniform colours survive every YUV layout, matrix and range within one level of the
    /// float round trip (the forward transform rounds the YUV values).
    #[test]
    fn uniform_colours_round_trip_in_every_yuv_format() {
        let colours = [
            [255.0, 0.0, 0.0],
            [0.0, 255.0, 0.0],
            [0.0, 0.0, 255.0],
            [200.0, 120.0, 30.0],
            [17.0, 200.0, 180.0],
            [128.0, 128.0, 128.0],
        ];
        for format in PixelFormat::ALL
            .into_iter()
            .filter(|f| f.is_yuv() && f.sample().0 == 1)
        {
            for matrix in [Matrix::Bt601, Matrix::Bt709, Matrix::Bt2020] {
                for range in [Range::Full, Range::Limited] {
                    let c = Colorimetry {
                        matrix,
                        range,
                        chroma_h_cosited: true,
                        chroma_v_cosited: false,
                    };
                    for rgb in colours {
                        let (w, h) = (7, 5);
                        let planes = uniform(format, w, h, yuv_of(&c, rgb));
                        let f = frame(format, w, h, &planes, c);
                        f.validate().unwrap();
                        let out = f.to_rgb24().unwrap();
                        // limited range has fewer levels: up to 1.2 levels of quantisation
                        // per component, times the matrix gains
                        let tol = if range == Range::Full { 2.0 } else { 3.0 };
                        for px in out.chunks_exact(3) {
                            for ch in 0..3 {
                                let d = (px[ch] as f64 - rgb[ch]).abs();
                                assert!(
                                    d <= tol,
                                    "{format:?} {matrix:?} {range:?} {rgb:?}: got {px:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn packed_formats_reorder_and_drop_alpha() {
        let (w, h) = (3, 2);
        let rgb: Vec<[u8; 3]> = (0..w * h)
            .map(|i| [i as u8 * 10, i as u8 * 10 + 1, i as u8 * 10 + 2])
            .collect();
        for format in PixelFormat::ALL.into_iter().filter(|f| !f.is_yuv()) {
            if format == PixelFormat::Gray8 {
                continue;
            }
            let Layout::Packed { bpp, r, g, b } = format.layout() else {
                unreachable!()
            };
            let stride = w * bpp + 5; // padding
            let mut data = vec![0xA5u8; stride * h];
            for y in 0..h {
                for x in 0..w {
                    let o = y * stride + x * bpp;
                    let p = rgb[y * w + x];
                    data[o + r] = p[0];
                    data[o + g] = p[1];
                    data[o + b] = p[2];
                }
            }
            let f = RawFrame::packed(format, w, h, &data, stride);
            f.validate().unwrap();
            let out = f.to_rgb24().unwrap();
            assert_eq!(out, rgb.concat(), "{format:?}");
        }
        let gray = [16u8, 235, 126, 0];
        let mut f = RawFrame::packed(PixelFormat::Gray8, 2, 2, &gray, 2);
        f.colorimetry.range = Range::Full;
        assert_eq!(
            f.to_rgb24().unwrap(),
            [16, 16, 16, 235, 235, 235, 126, 126, 126, 0, 0, 0]
        );
        f.colorimetry.range = Range::Limited;
        assert_eq!(
            f.to_rgb24().unwrap(),
            [0, 0, 0, 255, 255, 255, 128, 128, 128, 0, 0, 0]
        );
    }

    /// Chroma interpolation at the siting: a chroma step between two 2×2 blocks.
    #[test]
    fn chroma_is_interpolated_at_its_siting() {
        // I420 4x2, full-range BT.601, Y = 128; U = 128 everywhere, V = 128 | 192
        let c = Colorimetry {
            matrix: Matrix::Bt601,
            range: Range::Full,
            chroma_h_cosited: true,
            chroma_v_cosited: false,
        };
        let planes = vec![vec![128u8; 8], vec![128u8, 128], vec![128u8, 192]];
        let f = frame(PixelFormat::I420, 4, 2, &planes, c);
        let out = f.to_rgb24().unwrap();
        // R = 128 + 1.402·(V − 128): cosited → x=0: V 128; x=1: 160; x=2: 192; x=3: 192
        let r: Vec<u8> = out.chunks_exact(3).take(4).map(|p| p[0]).collect();
        assert_eq!(r, [128, 173, 218, 218]);
        // centred (JPEG): x=0: 128, x=1: 144, x=2: 176, x=3: 192
        let f = frame(
            PixelFormat::I420,
            4,
            2,
            &planes,
            Colorimetry {
                chroma_h_cosited: false,
                ..c
            },
        );
        let out = f.to_rgb24().unwrap();
        let r: Vec<u8> = out.chunks_exact(3).take(4).map(|p| p[0]).collect();
        assert_eq!(r, [128, 150, 195, 218]);
    }

    /// 10-bit formats read as their 8-bit twins with the low bits dropped.
    #[test]
    fn ten_bit_formats_read_like_their_8_bit_twins() {
        let (w, h) = (6, 4);
        let c = Colorimetry {
            matrix: Matrix::Bt2020,
            ..Default::default()
        };
        let mut seed = 7u32;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect()
        };
        let i420 = vec![noise(w * h), noise(w * h / 4), noise(w * h / 4)];
        let widen = |p: &[u8], shift: u32, low: u16| -> Vec<u8> {
            p.iter()
                .flat_map(|&v| (((v as u16) << shift) | low).to_le_bytes())
                .collect()
        };
        let i420_10: Vec<Vec<u8>> = i420.iter().map(|p| widen(p, 2, 3)).collect();
        let want = frame(PixelFormat::I420, w, h, &i420, c).to_rgb24().unwrap();
        let got = frame(PixelFormat::I42010le, w, h, &i420_10, c)
            .to_rgb24()
            .unwrap();
        assert_eq!(got, want);
        // NV12 / P010: U and V interleaved
        let uv: Vec<u8> = i420[1]
            .iter()
            .zip(&i420[2])
            .flat_map(|(&u, &v)| [u, v])
            .collect();
        let nv12 = vec![i420[0].clone(), uv];
        let p010: Vec<Vec<u8>> = nv12.iter().map(|p| widen(p, 8, 0x3F)).collect();
        assert_eq!(
            frame(PixelFormat::Nv12, w, h, &nv12, c).to_rgb24().unwrap(),
            want
        );
        assert_eq!(
            frame(PixelFormat::P01010le, w, h, &p010, c)
                .to_rgb24()
                .unwrap(),
            want
        );
        assert_eq!(PixelFormat::I42010le.plane_size(1, w, h), (6, 2));
    }

    #[test]
    fn fields_and_validation() {
        // 2x4 GRAY8 rows 10, 20, 30, 40
        let data = [10u8, 10, 20, 20, 30, 30, 40, 40];
        let mut f = RawFrame::packed(PixelFormat::Gray8, 2, 4, &data, 2);
        f.colorimetry.range = Range::Full;
        f.field = Some(Field::Bottom);
        assert_eq!(f.rows(), 2);
        let mut r = RowReader::new(&f);
        let mut row = [0u8; 6];
        r.read(1, &mut row);
        assert_eq!(row, [40; 6]);
        f.field = Some(Field::Top);
        let mut r = RowReader::new(&f);
        r.read(1, &mut row);
        assert_eq!(row, [30; 6]);
        // short planes are named
        let planes = vec![vec![0u8; 16], vec![0u8; 4], vec![0u8; 3]];
        let e = frame(PixelFormat::I420, 4, 4, &planes, Colorimetry::default())
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("plane 2 must have 4 bytes, got 3"), "{e}");
        let e = RawFrame::rgb(0, 4, &[]).validate().unwrap_err().to_string();
        assert!(e.contains("empty size"), "{e}");
    }
}
