// Conv 2-D, NCHW, FP32. One work-item per output element; groups, strides, pads,
// dilations; optional bias (has_bias = 0 ignores `bias`), optional fused ReLU (act = 1).
// Global size: N * M * OH * OW (1-D).
__kernel void conv2d(__global const float* x, __global const float* w,
                     __global const float* bias, __global float* y,
                     int N, int C, int H, int W, int M, int OH, int OW,
                     int KH, int KW, int SH, int SW, int PT, int PL, int DH, int DW,
                     int group, int has_bias, int act)
{
    int gid = get_global_id(0);
    int total = N * M * OH * OW;
    if (gid >= total) return;
    int ow = gid % OW;
    int t = gid / OW;
    int oh = t % OH;
    t /= OH;
    int m = t % M;
    int n = t / M;
    int cg = C / group;
    int mg = M / group;
    int g = m / mg;
    float acc = has_bias ? bias[m] : 0.0f;
    int ih0 = oh * SH - PT;
    int iw0 = ow * SW - PL;
    for (int c = 0; c < cg; ++c) {
        __global const float* xp = x + ((n * C + g * cg + c) * H) * W;
        __global const float* wp = w + ((m * cg + c) * KH) * KW;
        for (int kh = 0; kh < KH; ++kh) {
            int ih = ih0 + kh * DH;
            if (ih < 0 || ih >= H) continue;
            for (int kw = 0; kw < KW; ++kw) {
                int iw = iw0 + kw * DW;
                if (iw < 0 || iw >= W) continue;
                acc += xp[ih * W + iw] * wp[kh * KW + kw];
            }
        }
    }
    if (act == 1) acc = fmax(acc, 0.0f);
    y[gid] = acc;
}
