//! Conv and the 2-D pools: window geometry checked on the host; Conv as a tiled GEMM (group
//! 1) or a direct kernel (groups).

use super::buffers::DevTensor;
use super::exec::{int, Arg, Ctx};
use super::matmul::Tile;
use super::ops::{Act, AutoPad, Window};
use super::shapes::dims4;

impl Ctx<'_> {
    /// Conv: as a tiled GEMM (group 1: im2col, or the input itself for 1x1 stride-1 windows
    /// without padding, times the weights, with bias, residual and activation in the
    /// epilogue), else the direct kernels (groups).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv<'a>(
        &mut self,
        x: &DevTensor<'a>,
        w: &DevTensor<'a>,
        b: Option<&DevTensor<'a>>,
        res: Option<&DevTensor<'a>>,
        win: &Window,
        group: usize,
        act: Act,
        wt: Option<[usize; 4]>,
        half: bool,
    ) -> Result<DevTensor<'a>, String> {
        let [n, c, h, wd] = dims4(&x.shape)?;
        let [m, cg, kh, kw] = match wt {
            Some(s) => s,
            None => dims4(&w.shape)?,
        };
        if wt.is_some() && w.shape != [cg * kh * kw, m] {
            return Err(format!(
                "Conv: transposed weights {:?} for {m}x{cg}x{kh}x{kw} (this is a bug)",
                w.shape
            ));
        }
        if c != cg * group || m % group != 0 {
            return Err(format!(
                "Conv: input {:?}, weights {:?} and group {group} do not agree",
                x.shape,
                [m, cg, kh, kw]
            ));
        }
        if let Some(k) = win.kernel {
            if k != [kh, kw] {
                return Err(format!(
                    "Conv: kernel_shape {k:?} but weights {:?}",
                    [m, cg, kh, kw]
                ));
            }
        }
        if let Some(b) = b {
            if b.len() != m {
                return Err(format!("Conv: bias has {} elements, not {m}", b.len()));
            }
        }
        let ([oh, ow], pads) = win.output(h, wd, [kh, kw])?;
        let y = self.alloc(vec![n, m, oh, ow])?;
        if group == 1 {
            // The epilogue adds a residual of the output's shape; another (broadcast) one is
            // added after.
            let fused_res = res.filter(|r| r.shape == y.shape);
            let p = oh * ow;
            let k = cg * kh * kw;
            // Half columns always go through im2col_h (a 1x1 window converts the input).
            let half = half && wt.is_some();
            let direct = !half && kh == 1 && kw == 1 && win.strides == [1, 1] && pads == [0; 4];
            let col = if direct {
                None
            } else {
                // Half columns: two to a float of the buffer.
                let col = if half {
                    self.alloc(vec![(n * k * p).div_ceil(2)])?
                } else {
                    self.alloc(vec![n, k, p])?
                };
                let i = int;
                self.launch(
                    if half { "im2col_h" } else { "im2col" },
                    &[
                        Arg::B(x.buf.get()),
                        Arg::B(col.buf.get()),
                        Arg::I(i(c)?),
                        Arg::I(0),
                        Arg::I(i(c)?),
                        Arg::I(i(h)?),
                        Arg::I(i(wd)?),
                        Arg::I(i(oh)?),
                        Arg::I(i(ow)?),
                        Arg::I(i(kh)?),
                        Arg::I(i(kw)?),
                        Arg::I(i(win.strides[0])?),
                        Arg::I(i(win.strides[1])?),
                        Arg::I(i(pads[0])?),
                        Arg::I(i(pads[1])?),
                        Arg::I(i(win.dilations[0])?),
                        Arg::I(i(win.dilations[1])?),
                    ],
                    &[oh, k, n],
                    None,
                )?;
                // `--log scoria=trace`: the im2col's share of the node's time.
                if tracing::enabled!(tracing::Level::TRACE) {
                    let t0 = std::time::Instant::now();
                    let _ = self.queue.finish();
                    tracing::trace!(
                        "opencl: im2col {:?} {:.3} ms",
                        col.shape,
                        t0.elapsed().as_secs_f64() * 1e3
                    );
                }
                Some(col)
            };
            let bsrc = col.as_ref().unwrap_or(x);
            let (a_rs, a_cs) = if wt.is_some() { (1, m) } else { (k, 1) };
            let nan_to_zero = fused_res.is_none() && res.is_none();
            let fused_act = if res.is_some() && fused_res.is_none() {
                Act::None
            } else {
                act
            };
            self.gemm_tile_kernel(
                if half { "gemm_tile_h" } else { "gemm_tile" },
                &Tile {
                    a: w,
                    b: bsrc,
                    bias: b,
                    res: fused_res,
                    c: &y,
                    mnk: [m, p, k],
                    a_layout: [0, a_rs, a_cs, 0],
                    b_layout: [0, p, k * p],
                    c_layout: [0, m * p],
                    batch: n,
                    alpha: 1.0,
                    beta: 1.0,
                    bias_strides: [1, 0],
                    act: fused_act,
                    nan_to_zero,
                },
            )?;
            if let Some(col) = col {
                self.recycle(col);
            }
            return match res {
                Some(r) if fused_res.is_none() => self.finish(y, Some(r), act),
                _ => Ok(y),
            };
        }
        let i = int;
        let blocked = (m / group).is_multiple_of(4);
        let (kernel, items) = if blocked {
            ("conv2d_b4x4", n * (m / 4) * oh * ow.div_ceil(4))
        } else {
            ("conv2d", y.len())
        };
        // The direct kernels fuse a Relu (as fmax) only.
        let relu = act == Act::Relu && res.is_none();
        self.launch(
            kernel,
            &[
                Arg::B(x.buf.get()),
                Arg::B(w.buf.get()),
                Arg::B(b.map_or(self.dummy, |b| b.buf.get())),
                Arg::B(y.buf.get()),
                Arg::I(i(n)?),
                Arg::I(i(c)?),
                Arg::I(i(h)?),
                Arg::I(i(wd)?),
                Arg::I(i(m)?),
                Arg::I(i(oh)?),
                Arg::I(i(ow)?),
                Arg::I(i(kh)?),
                Arg::I(i(kw)?),
                Arg::I(i(win.strides[0])?),
                Arg::I(i(win.strides[1])?),
                Arg::I(i(pads[0])?),
                Arg::I(i(pads[1])?),
                Arg::I(i(win.dilations[0])?),
                Arg::I(i(win.dilations[1])?),
                Arg::I(i(group)?),
                Arg::I(i32::from(b.is_some())),
                Arg::I(i32::from(relu)),
            ],
            &[items],
            None,
        )?;
        if relu {
            return Ok(y);
        }
        self.finish(y, res, act)
    }

    pub(super) fn pool2d<'a>(
        &mut self,
        x: &DevTensor<'a>,
        win: &Window,
        max: bool,
        count_pad: bool,
    ) -> Result<DevTensor<'a>, String> {
        let [n, c, h, w] = dims4(&x.shape)?;
        let k = win.kernel.ok_or("pool without kernel_shape")?;
        let ([oh, ow], pads) = win.output(h, w, k)?;
        let y = self.alloc(vec![n, c, oh, ow])?;
        // With auto_pad the implicit padding is not counted (as ONNX Runtime does).
        let count_pad = count_pad && win.auto_pad == AutoPad::NotSet;
        let i = int;
        self.launch(
            "pool2d",
            &[
                Arg::B(x.buf.get()),
                Arg::B(y.buf.get()),
                Arg::I(i(n * c)?),
                Arg::I(i(h)?),
                Arg::I(i(w)?),
                Arg::I(i(oh)?),
                Arg::I(i(ow)?),
                Arg::I(i(k[0])?),
                Arg::I(i(k[1])?),
                Arg::I(i(win.strides[0])?),
                Arg::I(i(win.strides[1])?),
                Arg::I(i(pads[0])?),
                Arg::I(i(pads[1])?),
                Arg::I(i(win.dilations[0])?),
                Arg::I(i(win.dilations[1])?),
                Arg::I(i32::from(max)),
                Arg::I(i32::from(count_pad)),
                Arg::I(i(pads[2])?),
                Arg::I(i(pads[3])?),
            ],
            &[y.len()],
            None,
        )?;
        Ok(y)
    }
}
