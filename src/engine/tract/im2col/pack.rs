//! How one panel of convolution patches is copied from its input: a single contiguous run
//! row by row, several runs by AVX2 gathers, and run by run where the CPU lacks AVX2.

/// `len` elements of a panel row, read from `start + t * step` (in elements, relative to
/// the row's input offset) into columns `column..column + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Run {
    pub(super) column: usize,
    pub(super) start: isize,
    pub(super) step: isize,
    pub(super) len: usize,
}

/// Appends the runs of one panel whose columns read `columns`: each run the longest
/// stretch at one step.
pub(super) fn push_runs(columns: &[isize], runs: &mut Vec<Run>) {
    let mut column = 0;
    while column < columns.len() {
        let start = columns[column];
        let step = columns.get(column + 1).map_or(1, |next| next - start);
        let mut len = 1;
        while column + len < columns.len()
            && columns[column + len] - columns[column + len - 1] == step
        {
            len += 1;
        }
        runs.push(Run {
            column,
            start,
            step: if len == 1 { 1 } else { step },
            len,
        });
        column += len;
    }
}

/// Packs the panel of `r` columns read by `runs` into `out`: row `i` from `input +
/// k_offsets[i]`.
///
/// # Safety
/// Every element the runs read at every row offset is within `input`, and `out` holds
/// `k_offsets.len() * r` elements.
pub(super) unsafe fn pack(
    r: usize,
    k_offsets: &[isize],
    runs: &[Run],
    columns: &[i32],
    input: *const f32,
    out: *mut f32,
) {
    // tract's matrix kernels leave the upper halves of the vector registers in use
    // (AVX-512 here), and legacy SSE moves then wait on them: VEX-encoded moves do
    // not, and the packing ran 4x slower between kernels than alone without them.
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2; the caller upholds the rest.
        return unsafe { pack_avx2(r, k_offsets, runs, columns, input, out) };
    }
    // SAFETY: as this function's.
    unsafe { pack_any(r, k_offsets, runs, input, out) }
}

/// As [`pack_any`], but a panel of several runs is gathered a row at a time by `columns`,
/// up to eight elements an instruction.
///
/// # Safety
/// As [`pack`], on a CPU with AVX2; `columns` holds `r` indices.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_avx2(
    r: usize,
    k_offsets: &[isize],
    runs: &[Run],
    columns: &[i32],
    input: *const f32,
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    if whole_run(runs, r).is_some() {
        // SAFETY: as this function's.
        return unsafe { pack_any(r, k_offsets, runs, input, out) };
    }
    let (eights, fours) = (r / 8, r % 8 / 4);
    // SAFETY: `columns` holds `r` indices, each within the input at every row offset, as
    // the caller guarantees; `out` holds `k_offsets.len() * r` elements.
    unsafe {
        let columns = columns.as_ptr();
        for (row, offset) in k_offsets.iter().enumerate() {
            let input = input.offset(*offset);
            let out = out.add(row * r);
            let mut j = 0;
            for _ in 0..eights {
                let at = _mm256_loadu_si256(columns.add(j) as *const __m256i);
                _mm256_storeu_ps(out.add(j), _mm256_i32gather_ps::<4>(input, at));
                j += 8;
            }
            if fours == 1 {
                let at = _mm_loadu_si128(columns.add(j) as *const __m128i);
                _mm_storeu_ps(out.add(j), _mm_i32gather_ps::<4>(input, at));
                j += 4;
            }
            while j < r {
                *out.add(j) = *input.offset(*columns.add(j) as isize);
                j += 1;
            }
        }
    }
}

/// The one run of a panel that reads `r` contiguous elements, copied row by row.
fn whole_run(runs: &[Run], r: usize) -> Option<&Run> {
    match runs {
        [run] if run.step == 1 && run.len == r => Some(run),
        _ => None,
    }
}

/// # Safety
/// As [`pack`].
#[inline(always)]
unsafe fn pack_any(r: usize, k_offsets: &[isize], runs: &[Run], input: *const f32, out: *mut f32) {
    unsafe {
        if let Some(run) = whole_run(runs, r) {
            let input = input.offset(run.start);
            match r {
                4 => rows::<4>(input, k_offsets, out),
                5 => rows::<5>(input, k_offsets, out),
                6 => rows::<6>(input, k_offsets, out),
                8 => rows::<8>(input, k_offsets, out),
                12 => rows::<12>(input, k_offsets, out),
                16 => rows::<16>(input, k_offsets, out),
                24 => rows::<24>(input, k_offsets, out),
                32 => rows::<32>(input, k_offsets, out),
                _ => pack_runs(r, k_offsets, runs, input, out),
            }
        } else {
            pack_runs(r, k_offsets, runs, input, out)
        }
    }
}

/// # Safety
/// As [`pack`].
#[inline(always)]
unsafe fn pack_runs(r: usize, k_offsets: &[isize], runs: &[Run], input: *const f32, out: *mut f32) {
    for (row, offset) in k_offsets.iter().enumerate() {
        unsafe {
            let input = input.offset(*offset);
            let out = out.add(row * r);
            for run in runs {
                let from = input.offset(run.start);
                let to = out.add(run.column);
                if run.step == 1 {
                    copy_short(from, to, run.len);
                } else {
                    for t in 0..run.len {
                        *to.add(t) = *from.offset(t as isize * run.step);
                    }
                }
            }
        }
    }
}

/// Copies `R` contiguous elements from `input + offset` for each row offset, row after row.
///
/// # Safety
/// Every `input + offset .. + R` is readable and `out` holds `offsets.len() * R` elements.
#[inline(always)]
unsafe fn rows<const R: usize>(input: *const f32, offsets: &[isize], out: *mut f32) {
    for (row, offset) in offsets.iter().enumerate() {
        unsafe {
            let values = std::ptr::read_unaligned(input.offset(*offset) as *const [f32; R]);
            std::ptr::write_unaligned(out.add(row * R) as *mut [f32; R], values);
        }
    }
}

/// Copies `len` elements, a panel's width at most, without a call to `memcpy`, whose
/// dispatch costs more than the copy at these lengths.
///
/// # Safety
/// `from .. from + len` is readable, `to .. to + len` writable, and they do not overlap.
#[inline(always)]
unsafe fn copy_short(mut from: *const f32, mut to: *mut f32, mut len: usize) {
    unsafe {
        while len >= 8 {
            std::ptr::write_unaligned(
                to as *mut [f32; 8],
                std::ptr::read_unaligned(from as *const [f32; 8]),
            );
            (from, to, len) = (from.add(8), to.add(8), len - 8);
        }
        if len >= 4 {
            std::ptr::write_unaligned(
                to as *mut [f32; 4],
                std::ptr::read_unaligned(from as *const [f32; 4]),
            );
            (from, to, len) = (from.add(4), to.add(4), len - 4);
        }
        for t in 0..len {
            *to.add(t) = *from.add(t);
        }
    }
}
