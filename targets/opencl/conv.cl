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
    /* fmax drops NaN, as tract's Conv with a fused Relu does (the device matches its CPU
       reference); a standalone Relu keeps NaN (elementwise.cl, gemm.cl). */
    if (act == 1) acc = fmax(acc, 0.0f);
    y[gid] = acc;
}

// conv2d computing a block of 4 output channels x 4 neighbouring output columns per
// work-item (same arguments): 16 multiply-adds per 4 input and 4 weight loads, in float4
// registers. The host uses it when M / group is a multiple of 4.
// Global size: N * (M / 4) * OH * ceil(OW / 4).
__kernel void conv2d_b4x4(__global const float* x, __global const float* w,
                          __global const float* bias, __global float* y,
                          int N, int C, int H, int W, int M, int OH, int OW,
                          int KH, int KW, int SH, int SW, int PT, int PL, int DH, int DW,
                          int group, int has_bias, int act)
{
    int gid = get_global_id(0);
    int M4 = M / 4;
    int OW4 = (OW + 3) / 4;
    int total = N * M4 * OH * OW4;
    if (gid >= total) return;
    int ow = (gid % OW4) * 4;
    int t = gid / OW4;
    int oh = t % OH;
    t /= OH;
    int m = (t % M4) * 4;
    int n = t / M4;
    int cg = C / group;
    int mg = M / group;
    int g = m / mg;
    float4 b4 = has_bias ? (float4)(bias[m], bias[m + 1], bias[m + 2], bias[m + 3])
                         : (float4)(0.0f);
    float4 acc0 = b4, acc1 = b4, acc2 = b4, acc3 = b4;
    int ih0 = oh * SH - PT;
    int iw0 = ow * SW - PL;
    int wstride = cg * KH * KW;
    for (int c = 0; c < cg; ++c) {
        __global const float* xp = x + ((n * C + g * cg + c) * H) * W;
        __global const float* wp = w + ((m * cg + c) * KH) * KW;
        for (int kh = 0; kh < KH; ++kh) {
            int ih = ih0 + kh * DH;
            if (ih < 0 || ih >= H) continue;
            __global const float* row = xp + ih * W;
            for (int kw = 0; kw < KW; ++kw) {
                int k = kh * KW + kw;
                float4 wv = (float4)(wp[k], wp[wstride + k], wp[2 * wstride + k],
                                     wp[3 * wstride + k]);
                int iw = iw0 + kw * DW;
                float x0 = (iw >= 0 && iw < W) ? row[iw] : 0.0f;
                int i1 = iw + SW;
                float x1 = (i1 >= 0 && i1 < W) ? row[i1] : 0.0f;
                int i2 = iw + 2 * SW;
                float x2 = (i2 >= 0 && i2 < W) ? row[i2] : 0.0f;
                int i3 = iw + 3 * SW;
                float x3 = (i3 >= 0 && i3 < W) ? row[i3] : 0.0f;
                acc0 += x0 * wv;
                acc1 += x1 * wv;
                acc2 += x2 * wv;
                acc3 += x3 * wv;
            }
        }
    }
    if (act == 1) {
        acc0 = fmax(acc0, (float4)(0.0f));
        acc1 = fmax(acc1, (float4)(0.0f));
        acc2 = fmax(acc2, (float4)(0.0f));
        acc3 = fmax(acc3, (float4)(0.0f));
    }
    int plane = OH * OW;
    int base = ((n * M + m) * OH + oh) * OW + ow;
    float4 accs[4] = {acc0, acc1, acc2, acc3};
    for (int j = 0; j < 4; ++j) {
        if (ow + j >= OW) break;
        y[base + j] = accs[j].x;
        y[base + j + plane] = accs[j].y;
        y[base + j + 2 * plane] = accs[j].z;
        y[base + j + 3 * plane] = accs[j].w;
    }
}
