// Element-wise ops, FP32.

// Unary: op 0 Relu, 1 Sigmoid, 2 Tanh, 3 Clip(lo, hi), 4 copy. Global size: n.
__kernel void unary(__global const float* x, __global float* y, int n, int op,
                    float lo, float hi)
{
    int i = get_global_id(0);
    if (i >= n) return;
    float v = x[i];
    switch (op) {
    case 0: v = v < 0.0f ? 0.0f : v; break;  /* NaN stays NaN, unlike fmax */
    case 1: v = 1.0f / (1.0f + exp(-v)); break;
    case 2: v = tanh(v); break;
    case 3: v = v < lo ? lo : v; v = v > hi ? hi : v; break;  /* min(max(v, lo), hi): hi wins when lo > hi, as ONNX says; NaN stays */
    default: break;
    }
    y[i] = v;
}

inline float binop(int op, float a, float b)
{
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    default: return a / b;
    }
}

// Binary with the operands' shapes equal to the output's: op 0 Add, 1 Sub, 2 Mul, 3 Div;
// act = 1 fuses a ReLU. Global size: n.
__kernel void binary_same(__global const float* a, __global const float* b,
                          __global float* y, int n, int op, int act)
{
    int i = get_global_id(0);
    if (i >= n) return;
    float v = binop(op, a[i], b[i]);
    if (act == 1) v = v < 0.0f ? 0.0f : v;
    y[i] = v;
}

// Binary with NumPy broadcasting. meta holds, for rank r <= 8: dims[r], a_strides[r],
// b_strides[r] (element strides, 0 along broadcast axes). Global size: n.
__kernel void binary_bcast(__global const float* a, __global const float* b,
                           __global float* y, __global const int* meta, int rank,
                           int n, int op, int act)
{
    int i = get_global_id(0);
    if (i >= n) return;
    int rem = i;
    int ai = 0, bi = 0;
    for (int d = rank - 1; d >= 0; --d) {
        int dim = meta[d];
        int idx = rem % dim;
        rem /= dim;
        ai += idx * meta[rank + d];
        bi += idx * meta[2 * rank + d];
    }
    float v = binop(op, a[ai], b[bi]);
    if (act == 1) v = v < 0.0f ? 0.0f : v;
    y[i] = v;
}

// BatchNormalization (inference) over NC...: y = (x - mean) / sqrt(var + eps) * s + b.
// `inner` is the product of the spatial dims. Global size: n.
__kernel void batchnorm(__global const float* x, __global const float* s,
                        __global const float* bb, __global const float* mean,
                        __global const float* var, __global float* y,
                        int n, int C, int inner, float eps, int act)
{
    int i = get_global_id(0);
    if (i >= n) return;
    int c = (i / inner) % C;
    float v = (x[i] - mean[c]) / sqrt(var[c] + eps) * s[c] + bb[c];
    if (act == 1) v = v < 0.0f ? 0.0f : v;
    y[i] = v;
}

// Copies a block of `rows` rows of `len` elements from x (row pitch src_pitch, starting at
// src_off) into y (row pitch dst_pitch, starting at dst_off): Concat's building block.
// Global size: rows * len.
__kernel void copy_rows(__global const float* x, __global float* y, int rows, int len,
                        int src_pitch, int src_off, int dst_pitch, int dst_off)
{
    int i = get_global_id(0);
    if (i >= rows * len) return;
    int r = i / len;
    int k = i % len;
    y[dst_off + r * dst_pitch + k] = x[src_off + r * src_pitch + k];
}
