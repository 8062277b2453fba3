//! Gemm and MatMul on the register-blocked `gemm_tile` kernel (also Conv's engine); a Gemm
//! whose B is a transposed run-time value takes the older `gemm` / `gemm_rows` kernels.

use super::buffers::DevTensor;
use super::exec::{int, Arg, Ctx};
use super::ops::Act;
use super::shapes::{bcast_strides, bias_strides, broadcast};

/// One `gemm_tile` launch: C = act(alpha * A' B + beta * bias + res) for `batch` matrices.
pub(super) struct Tile<'t, 'a> {
    pub a: &'t DevTensor<'a>,
    pub b: &'t DevTensor<'a>,
    pub bias: Option<&'t DevTensor<'a>>,
    pub res: Option<&'t DevTensor<'a>>,
    pub c: &'t DevTensor<'a>,
    /// M, N, K
    pub mnk: [usize; 3],
    /// A' element (m, k) at off + img * bs + m * rs + k * cs: [off, rs, cs, bs]
    pub a_layout: [usize; 4],
    /// B element (k, n) at off + img * bs + k * ldb + n: [off, ldb, bs]
    pub b_layout: [usize; 3],
    /// C element (m, n) at off + img * bs + m * N + n: [off, bs]
    pub c_layout: [usize; 2],
    pub batch: usize,
    pub alpha: f32,
    pub beta: f32,
    /// bias element (m, n) at m * rs + n * cs (cs 0 or 1)
    pub bias_strides: [usize; 2],
    pub act: Act,
    /// A Relu turns NaN into 0 (as tract's Conv with a fused Relu).
    pub nan_to_zero: bool,
}

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm<'a>(
        &mut self,
        a: &DevTensor<'a>,
        b: &DevTensor<'a>,
        c: Option<&DevTensor<'a>>,
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
        act: Act,
        half: bool,
    ) -> Result<DevTensor<'a>, String> {
        let (&[ar, ac], &[br, bc]) = (a.shape.as_slice(), b.shape.as_slice()) else {
            return Err(format!(
                "Gemm needs 2-D operands, got {:?} and {:?}",
                a.shape, b.shape
            ));
        };
        let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if trans_b { (bc, br) } else { (br, bc) };
        if k != k2 {
            return Err(format!("Gemm: inner dimensions {k} and {k2} differ"));
        }
        let (rs, cs) = match c.map(|c| c.shape.as_slice()) {
            None => (0, 0),
            Some(s) => bias_strides(s, m, n).ok_or_else(|| {
                format!("Gemm: C of shape {s:?} does not broadcast to [{m}, {n}]")
            })?,
        };
        if half && trans_b {
            return Err("Gemm: half weights must be K x N (this is a bug)".into());
        }
        let y = self.alloc(vec![m, n])?;
        if !trans_b {
            self.gemm_tile_kernel(
                if half { "gemm_tile_hb" } else { "gemm_tile" },
                &Tile {
                    a,
                    b,
                    bias: c,
                    res: None,
                    c: &y,
                    mnk: [m, n, k],
                    a_layout: if trans_a { [0, 1, m, 0] } else { [0, k, 1, 0] },
                    b_layout: [0, n, 0],
                    c_layout: [0, 0],
                    batch: 1,
                    alpha,
                    beta,
                    bias_strides: [rs, cs],
                    act,
                    nan_to_zero: false,
                },
            )?;
            return Ok(y);
        }
        let relu = act == Act::Relu;
        self.gemm_launch(
            a,
            b,
            c,
            &y,
            [m, n, k],
            [trans_a, trans_b],
            [0, 0, 0],
            alpha,
            beta,
            [rs, cs],
            relu,
        )?;
        if relu {
            return Ok(y);
        }
        self.finish(y, None, act)
    }

    /// Launches `gemm_tile` for `t` with this program's register blocks and work-group size.
    pub(super) fn gemm_tile(&self, t: &Tile) -> Result<(), String> {
        self.gemm_tile_kernel("gemm_tile", t)
    }

    /// `gemm_tile` or its half-storage twins `gemm_tile_h` (half A' and B) and `gemm_tile_hb`
    /// (half B) (same arguments).
    pub(super) fn gemm_tile_kernel(&self, kernel: &str, t: &Tile) -> Result<(), String> {
        let [m, n, k] = t.mnk;
        let tl = self.tiling;
        let i = int;
        let (lo, hi) = t.act.bounds();
        let wg = if kernel != "gemm_tile" && tl.local {
            // The half variants have no local-memory tiles: any work-group fits them.
            [tl.wg[0].min(8), tl.wg[1].min(8)]
        } else {
            tl.wg
        };
        let gx = n.div_ceil(tl.rn).div_ceil(wg[0]) * wg[0];
        let gy = m.div_ceil(tl.rm).div_ceil(wg[1]) * wg[1];
        self.launch(
            kernel,
            &[
                Arg::B(t.a.buf.get()),
                Arg::B(t.b.buf.get()),
                Arg::B(t.bias.map_or(self.dummy, |b| b.buf.get())),
                Arg::B(t.res.map_or(self.dummy, |r| r.buf.get())),
                Arg::B(t.c.buf.get()),
                Arg::I(i(m)?),
                Arg::I(i(n)?),
                Arg::I(i(k)?),
                Arg::I(i(t.a_layout[0])?),
                Arg::I(i(t.a_layout[1])?),
                Arg::I(i(t.a_layout[2])?),
                Arg::I(i(t.a_layout[3])?),
                Arg::I(i(t.b_layout[0])?),
                Arg::I(i(t.b_layout[1])?),
                Arg::I(i(t.b_layout[2])?),
                Arg::I(i(t.c_layout[0])?),
                Arg::I(i(t.c_layout[1])?),
                Arg::F(t.alpha),
                Arg::F(t.beta),
                Arg::I(i32::from(t.bias.is_some())),
                Arg::I(i(t.bias_strides[0])?),
                Arg::I(i(t.bias_strides[1])?),
                Arg::I(i32::from(t.res.is_some())),
                Arg::I(t.act.code(t.nan_to_zero)),
                Arg::F(lo),
                Arg::F(hi),
            ],
            &[gx, gy, t.batch],
            Some(&[wg[0], wg[1], 1]),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_launch(
        &self,
        a: &DevTensor,
        b: &DevTensor,
        c: Option<&DevTensor>,
        y: &DevTensor,
        [m, n, k]: [usize; 3],
        [ta, tb]: [bool; 2],
        [ao, bo, co]: [usize; 3],
        alpha: f32,
        beta: f32,
        [rs, cs]: [usize; 2],
        relu: bool,
    ) -> Result<(), String> {
        const TILE: usize = 16;
        let i = int;
        let (kernel, global, local): (&str, Vec<usize>, Option<&[usize]>) = if m < TILE {
            ("gemm_rows", vec![m * n], None)
        } else {
            (
                "gemm",
                vec![n.div_ceil(TILE) * TILE, m.div_ceil(TILE) * TILE],
                Some(&[TILE, TILE]),
            )
        };
        self.launch(
            kernel,
            &[
                Arg::B(a.buf.get()),
                Arg::B(b.buf.get()),
                Arg::B(c.map_or(self.dummy, |c| c.buf.get())),
                Arg::B(y.buf.get()),
                Arg::I(i(m)?),
                Arg::I(i(n)?),
                Arg::I(i(k)?),
                Arg::I(i32::from(ta)),
                Arg::I(i32::from(tb)),
                Arg::I(i(ao)?),
                Arg::I(i(bo)?),
                Arg::I(i(co)?),
                Arg::F(alpha),
                Arg::F(beta),
                Arg::I(i32::from(c.is_some())),
                Arg::I(i(rs)?),
                Arg::I(i(cs)?),
                Arg::I(i32::from(relu)),
            ],
            &global,
            local,
        )
    }

    pub(super) fn matmul<'a>(
        &mut self,
        a: &DevTensor<'a>,
        b: &DevTensor<'a>,
        half: bool,
    ) -> Result<DevTensor<'a>, String> {
        if a.shape.is_empty() || b.shape.is_empty() {
            return Err("MatMul of a scalar".into());
        }
        let mut ash = a.shape.clone();
        let mut bsh = b.shape.clone();
        let a1 = ash.len() == 1;
        let b1 = bsh.len() == 1;
        if a1 {
            ash.insert(0, 1);
        }
        if b1 {
            bsh.push(1);
        }
        let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
        let (k2, n) = (bsh[bsh.len() - 2], bsh[bsh.len() - 1]);
        if k != k2 {
            return Err(format!(
                "MatMul: {:?} x {:?}: inner dimensions differ",
                a.shape, b.shape
            ));
        }
        let abatch = &ash[..ash.len() - 2];
        let bbatch = &bsh[..bsh.len() - 2];
        let batch = broadcast(abatch, bbatch).ok_or_else(|| {
            format!(
                "MatMul: batch dimensions of {:?} and {:?} do not broadcast",
                a.shape, b.shape
            )
        })?;
        let mut out = batch.clone();
        if !a1 {
            out.push(m);
        }
        if !b1 {
            out.push(n);
        }
        let y = self.alloc(out)?;
        let astr = bcast_strides(abatch, &batch, m * k);
        let bstr = bcast_strides(bbatch, &batch, k * n);
        let count: usize = batch.iter().product();
        let kernel = if half { "gemm_tile_hb" } else { "gemm_tile" };
        let tile = |ao: usize, bo: usize, co: usize, abs: usize, bbs: usize, imgs: usize| Tile {
            a,
            b,
            bias: None,
            res: None,
            c: &y,
            mnk: [m, n, k],
            a_layout: [ao, k, 1, abs],
            b_layout: [bo, n, bbs],
            c_layout: [co, m * n],
            batch: imgs,
            alpha: 1.0,
            beta: 0.0,
            bias_strides: [0, 0],
            act: Act::None,
            nan_to_zero: false,
        };
        if batch.len() <= 1 {
            // One launch: the batch is the kernel's third dimension.
            let (abs, bbs) = (
                astr.first().copied().unwrap_or(0),
                bstr.first().copied().unwrap_or(0),
            );
            self.gemm_tile_kernel(kernel, &tile(0, 0, 0, abs, bbs, count))?;
            return Ok(y);
        }
        for idx in 0..count {
            let (mut rem, mut ao, mut bo) = (idx, 0, 0);
            for d in (0..batch.len()).rev() {
                let v = rem % batch[d];
                rem /= batch[d];
                ao += v * astr[d];
                bo += v * bstr[d];
            }
            self.gemm_tile_kernel(kernel, &tile(ao, bo, idx * m * n, 0, 0, 1))?;
        }
        Ok(y)
    }
}
