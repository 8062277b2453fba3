//! Gemm and MatMul: the tiled `gemm` kernel (or `gemm_rows` for few rows), one launch per
//! matrix of a MatMul batch.

use super::buffers::DevTensor;
use super::exec::{int, Arg, Ctx};
use super::shapes::{bcast_strides, bias_strides, broadcast};

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
        relu: bool,
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
        let y = self.alloc(vec![m, n])?;
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
        Ok(y)
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
        for idx in 0..count {
            let (mut rem, mut ao, mut bo) = (idx, 0, 0);
            for d in (0..batch.len()).rev() {
                let v = rem % batch[d];
                rem /= batch[d];
                ao += v * astr[d];
                bo += v * bstr[d];
            }
            self.gemm_launch(
                a,
                b,
                None,
                &y,
                [m, n, k],
                [false, false],
                [ao, bo, idx * m * n],
                1.0,
                0.0,
                [0, 0],
                false,
            )?;
        }
        Ok(y)
    }
}
