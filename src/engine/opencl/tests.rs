//! Unit tests of the device-independent parts: shape rules and window geometry.

use super::ops::{AutoPad, Window};
use super::shapes::{broadcast, reshape};

fn window(auto_pad: AutoPad, ceil: bool, pads: [usize; 4], strides: [usize; 2]) -> Window {
    Window {
        kernel: Some([3, 3]),
        strides,
        pads,
        dilations: [1, 1],
        auto_pad,
        ceil,
    }
}

#[test]
fn broadcasting_follows_numpy() {
    assert_eq!(broadcast(&[2, 3, 4], &[4]), Some(vec![2, 3, 4]));
    assert_eq!(broadcast(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
    assert_eq!(broadcast(&[], &[5]), Some(vec![5]));
    assert_eq!(broadcast(&[2, 3], &[4, 3]), None);
}

#[test]
fn reshape_copies_zeros_and_infers_one_dimension() {
    assert_eq!(reshape(&[2, 3, 4], &[0, -1], false).unwrap(), vec![2, 12]);
    assert_eq!(
        reshape(&[2, 3, 4], &[4, 0, 2], false).unwrap(),
        vec![4, 3, 2]
    );
    assert_eq!(reshape(&[0, 3], &[3, 0], true).unwrap(), vec![3, 0]);
    assert!(reshape(&[2, 3], &[4, -1], false).is_err());
    assert!(reshape(&[2, 3], &[-1, -1], false).is_err());
    assert!(reshape(&[2, 3], &[7], false).is_err());
}

#[test]
fn window_output_sizes() {
    // 5x5, 3x3 kernel, stride 2, no pads: 2x2; ceil_mode: 2x2 too (the extra window would
    // start in the right padding only).
    let w = window(AutoPad::NotSet, false, [0; 4], [2, 2]);
    assert_eq!(w.output(5, 5, [3, 3]).unwrap().0, [2, 2]);
    let w = window(AutoPad::NotSet, true, [0; 4], [2, 2]);
    assert_eq!(w.output(6, 6, [3, 3]).unwrap().0, [3, 3]);
    // SAME_UPPER puts the odd padding at the end.
    let w = window(AutoPad::SameUpper, false, [0; 4], [2, 2]);
    let (out, pads) = w.output(6, 6, [3, 3]).unwrap();
    assert_eq!(out, [3, 3]);
    assert_eq!(pads, [0, 0, 1, 1]);
    let w = window(AutoPad::SameLower, false, [0; 4], [2, 2]);
    assert_eq!(w.output(6, 6, [3, 3]).unwrap().1, [1, 1, 0, 0]);
    // A window larger than the input is an error, not a panic.
    let w = window(AutoPad::NotSet, false, [0; 4], [1, 1]);
    assert!(w.output(2, 2, [3, 3]).is_err());
}
