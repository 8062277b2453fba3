//! Shape rules shared by the device ops: NumPy broadcasting, Reshape, axes.

pub fn dims4(s: &[usize]) -> Result<[usize; 4], String> {
    <[usize; 4]>::try_from(s).map_err(|_| format!("expected a 4-D tensor, got shape {s:?}"))
}

pub fn axis_index(axis: i64, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// NumPy broadcast of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Element strides of `shape` (right-aligned) read as `out`, 0 along broadcast axes;
/// `unit` is the size of one element (a matrix for MatMul batches).
pub fn bcast_strides(shape: &[usize], out: &[usize], unit: usize) -> Vec<usize> {
    let r = out.len();
    let mut strides = vec![0; r];
    let mut s = unit;
    for i in (0..r).rev() {
        let j = i as isize - (r - shape.len()) as isize;
        if j >= 0 {
            let d = shape[j as usize];
            if d != 1 {
                strides[i] = s;
            }
            s *= d;
        }
    }
    strides
}

pub fn bias_strides(s: &[usize], m: usize, n: usize) -> Option<(usize, usize)> {
    match s {
        [] => Some((0, 0)),
        [x] if *x == n => Some((0, 1)),
        [1] => Some((0, 0)),
        [r, c] if (*r == m || *r == 1) && (*c == n || *c == 1) => {
            Some((if *r == 1 { 0 } else { *c }, usize::from(*c != 1)))
        }
        _ => None,
    }
}

/// ONNX Reshape: 0 copies the input's dimension (unless `allowzero`), -1 is inferred.
pub fn reshape(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                format!("Reshape: 0 at {i} but the input has rank {}", input.len())
            })?),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(format!("Reshape: bad shape {spec:?}")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("Reshape: {input:?} cannot become {spec:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!("Reshape: {input:?} cannot become {spec:?}"));
    }
    Ok(out)
}
