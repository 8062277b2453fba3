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

// conv2d computing 4 consecutive output channels per work-item (same arguments), reusing
// each input load 4 times. The host uses it when M / group is a multiple of 4.
// Global size: N * (M / 4) * OH * OW.
__kernel void conv2d_b4(__global const float* x, __global const float* w,
                        __global const float* bias, __global float* y,
                        int N, int C, int H, int W, int M, int OH, int OW,
                        int KH, int KW, int SH, int SW, int PT, int PL, int DH, int DW,
                        int group, int has_bias, int act)
{
    int gid = get_global_id(0);
    int M4 = M / 4;
    int total = N * M4 * OH * OW;
    if (gid >= total) return;
    int ow = gid % OW;
    int t = gid / OW;
    int oh = t % OH;
    t /= OH;
    int m = (t % M4) * 4;
    int n = t / M4;
    int cg = C / group;
    int mg = M / group;
    int g = m / mg;
    float4 acc = has_bias ? (float4)(bias[m], bias[m + 1], bias[m + 2], bias[m + 3])
                          : (float4)(0.0f);
    int ih0 = oh * SH - PT;
    int iw0 = ow * SW - PL;
    int wstride = cg * KH * KW;
    for (int c = 0; c < cg; ++c) {
        __global const float* xp = x + ((n * C + g * cg + c) * H) * W;
        __global const float* wp = w + ((m * cg + c) * KH) * KW;
        for (int kh = 0; kh < KH; ++kh) {
            int ih = ih0 + kh * DH;
            if (ih < 0 || ih >= H) continue;
            for (int kw = 0; kw < KW; ++kw) {
                int iw = iw0 + kw * DW;
                if (iw < 0 || iw >= W) continue;
                float v = xp[ih * W + iw];
                int k = kh * KW + kw;
                acc += v * (float4)(wp[k], wp[wstride + k], wp[2 * wstride + k],
                                    wp[3 * wstride + k]);
            }
        }
    }
    if (act == 1) acc = fmax(acc, (float4)(0.0f));
    int plane = OH * OW;
    int base = ((n * M + m) * OH + oh) * OW + ow;
    y[base] = acc.x;
    y[base + plane] = acc.y;
    y[base + 2 * plane] = acc.z;
    y[base + 3 * plane] = acc.w;
}
