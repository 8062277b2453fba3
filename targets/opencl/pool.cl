// Pooling and Softmax, NCHW, FP32.

// MaxPool (is_max = 1) / AveragePool (is_max = 0) 2-D. Pads are (top, left); the output size
// already reflects ceil_mode. count_pad = 1 divides by the full window (count_include_pad),
// else by the in-bounds elements. Global size: N * C * OH * OW.
__kernel void pool2d(__global const float* x, __global float* y,
                     int NC, int H, int W, int OH, int OW, int KH, int KW,
                     int SH, int SW, int PT, int PL, int DH, int DW,
                     int is_max, int count_pad, int PB, int PR)
{
    int gid = get_global_id(0);
    if (gid >= NC * OH * OW) return;
    int ow = gid % OW;
    int t = gid / OW;
    int oh = t % OH;
    int nc = t / OH;
    __global const float* xp = x + nc * H * W;
    float acc = is_max ? -INFINITY : 0.0f;
    int count = 0;
    int ih0 = oh * SH - PT;
    int iw0 = ow * SW - PL;
    for (int kh = 0; kh < KH; ++kh) {
        int ih = ih0 + kh * DH;
        for (int kw = 0; kw < KW; ++kw) {
            int iw = iw0 + kw * DW;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) {
                // Inside the explicit padding counts for count_include_pad.
                if (ih >= -PT && ih < H + PB && iw >= -PL && iw < W + PR) count += count_pad;
                continue;
            }
            float v = xp[ih * W + iw];
            if (is_max) acc = fmax(acc, v); else acc += v;
            ++count;
        }
    }
    if (!is_max) acc = count > 0 ? acc / (float)count : 0.0f;
    y[gid] = acc;
}

// GlobalAveragePool: the mean over `inner` elements of each of NC rows. Global size: NC.
__kernel void global_avg(__global const float* x, __global float* y, int NC, int inner)
{
    int i = get_global_id(0);
    if (i >= NC) return;
    __global const float* xp = x + i * inner;
    float acc = 0.0f;
    for (int k = 0; k < inner; ++k) acc += xp[k];
    y[i] = acc / (float)inner;
}

// Softmax along an axis of length `len`, between `outer` and `inner` blocks.
// Global size: outer * inner.
__kernel void softmax(__global const float* x, __global float* y, int outer, int len,
                      int inner)
{
    int i = get_global_id(0);
    if (i >= outer * inner) return;
    int o = i / inner;
    int in = i % inner;
    int base = o * len * inner + in;
    float mx = -INFINITY;
    for (int k = 0; k < len; ++k) mx = fmax(mx, x[base + k * inner]);
    float sum = 0.0f;
    for (int k = 0; k < len; ++k) {
        float e = exp(x[base + k * inner] - mx);
        y[base + k * inner] = e;
        sum += e;
    }
    for (int k = 0; k < len; ++k) y[base + k * inner] /= sum;
}
