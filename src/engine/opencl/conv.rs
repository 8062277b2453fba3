//! Conv and the 2-D pools: window geometry checked on the host, one kernel launch each.

use super::buffers::DevTensor;
use super::exec::{int, Arg, Ctx};
use super::ops::{AutoPad, Window};
use super::shapes::dims4;

impl Ctx<'_> {
    pub(super) fn conv<'a>(
        &mut self,
        x: &DevTensor<'a>,
        w: &DevTensor<'a>,
        b: Option<&DevTensor<'a>>,
        win: &Window,
        group: usize,
        relu: bool,
    ) -> Result<DevTensor<'a>, String> {
        let [n, c, h, wd] = dims4(&x.shape)?;
        let [m, cg, kh, kw] = dims4(&w.shape)?;
        if c != cg * group || m % group != 0 {
            return Err(format!(
                "Conv: input {:?}, weights {:?} and group {group} do not agree",
                x.shape, w.shape
            ));
        }
        if let Some(k) = win.kernel {
            if k != [kh, kw] {
                return Err(format!(
                    "Conv: kernel_shape {k:?} but weights {:?}",
                    w.shape
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
        let i = int;
        let blocked = (m / group).is_multiple_of(4);
        let (kernel, items) = if blocked {
            ("conv2d_b4x4", n * (m / 4) * oh * ow.div_ceil(4))
        } else {
            ("conv2d", y.len())
        };
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
        Ok(y)
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
